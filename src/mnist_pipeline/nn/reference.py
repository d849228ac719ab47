"""The textbook maths of every layer and optimiser, plainly: the reference the fast forms are held to.

The layers in layers.py, conv.py, losses.py and optim.py are written for speed: blocked
products, per-thread scratch buffers, a convolution that pools its own output, moments kept
rescaled, results computed in place. Here is the same maths as it is written in a textbook
(CS231n's `forward(x, ...) -> out` / `backward(dout, cache) -> grads`), with no buffers, no
threads and nothing overwritten: every function returns new arrays and leaves its arguments
alone. tests/test_nn_reference.py runs each fast form against these on odd sizes and ties.

Shapes follow the package: dense batches (n, features), images NHWC (n, H, W, C), a kernel
(k, k, C, F). Everything is computed in float64, whatever comes in, so that the reference's
own rounding is far below the float32 it is compared with.
"""

from __future__ import annotations

import numpy as np

#: the corners of a 2x2 pooling window in the order ties are broken: the first maximum wins
POOL_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _f64(*arrays: np.ndarray) -> list[np.ndarray]:
    return [np.asarray(a, np.float64) for a in arrays]


# Dense -----------------------------------------------------------------------------------


def dense_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Fully connected layer.

    out = x @ W + b.  x (n, n_in), W (n_in, n_out), b (n_out,) -> out (n, n_out).
    """
    x, W, b = _f64(x, W, b)
    return x @ W + b


def dense_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of a fully connected layer: (dx, dW, db).

    dW = x.T @ dout, db = sum_rows dout, dx = dout @ W.T.
    dout (n, n_out), x (n, n_in), W (n_in, n_out) -> dx (n, n_in), dW (n_in, n_out), db (n_out,).
    """
    dout, x, W = _f64(dout, x, W)
    return dout @ W.T, x.T @ dout, dout.sum(axis=0)


# Batch normalisation -----------------------------------------------------------------------


def batch_norm_forward(
    x: np.ndarray,
    gamma: np.ndarray,
    beta: np.ndarray,
    running_mean: np.ndarray,
    running_var: np.ndarray,
    train: bool,
    momentum: float = 0.9,
    eps: float = 1e-5,
) -> tuple[np.ndarray, dict]:
    """Batch normalisation over every axis but the last: (out, cache).

    train: mu = mean(x), var = mean((x - mu)^2) over the rows (the biased variance),
      xhat = (x - mu) / sqrt(var + eps), out = gamma * xhat + beta, and the running estimates
      move towards the batch's: r = momentum * r + (1 - momentum) * batch value.
    eval: xhat = (x - running_mean) / sqrt(running_var + eps), out = gamma * xhat + beta.
    x (..., F), gamma, beta, running_mean, running_var (F,) -> out (..., F). The cache holds
    the new running estimates under "running_mean" and "running_var" (the arguments are not
    changed) and what batch_norm_backward needs.
    """
    shape = np.shape(x)
    x, gamma, beta, running_mean, running_var = _f64(x, gamma, beta, running_mean, running_var)
    x = x.reshape(-1, shape[-1])
    if train:
        mu = x.mean(axis=0)
        var = ((x - mu) ** 2).mean(axis=0)
        running_mean = momentum * running_mean + (1 - momentum) * mu
        running_var = momentum * running_var + (1 - momentum) * var
    else:
        mu, var = running_mean, running_var
    std = np.sqrt(var + eps)
    xhat = (x - mu) / std
    out = gamma * xhat + beta
    cache = {"x": x, "mu": mu, "var": var, "std": std, "xhat": xhat, "gamma": gamma, "eps": eps,
             "train": train, "shape": shape, "running_mean": running_mean, "running_var": running_var}
    return out.reshape(shape), cache


def batch_norm_backward(dout: np.ndarray, cache: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of batch normalisation: (dx, dgamma, dbeta).

    dbeta = sum dout, dgamma = sum dout * xhat (sums over the rows). In eval mode the statistics
    are constants: dx = dout * gamma / sqrt(running_var + eps). In training they depend on every
    row, and the chain rule through the graph (Ioffe and Szegedy, 2015) gives, with m rows:
      dxhat = dout * gamma
      dvar  = sum dxhat * (x - mu) * -1/2 * (var + eps)^(-3/2)
      dmu   = sum dxhat * -1/sqrt(var + eps) + dvar * mean(-2 (x - mu))
      dx    = dxhat / sqrt(var + eps) + dvar * 2 (x - mu) / m + dmu / m
    dout (..., F) -> dx (..., F), dgamma (F,), dbeta (F,).
    """
    (dout,) = _f64(dout)
    dout = dout.reshape(-1, cache["shape"][-1])
    x, mu, var, eps, xhat, gamma = (cache[key] for key in ("x", "mu", "var", "eps", "xhat", "gamma"))
    dbeta = dout.sum(axis=0)
    dgamma = (dout * xhat).sum(axis=0)
    dxhat = dout * gamma
    if not cache["train"]:
        return (dxhat / cache["std"]).reshape(cache["shape"]), dgamma, dbeta
    m = x.shape[0]
    # Written out term by term rather than folded into one expression, so that each line is
    # one edge of the graph; layers.BatchNorm uses the folded form
    # gamma / (m * std) * (m * dout - sum dout - xhat * sum dout * xhat), equal to this.
    dvar = (dxhat * (x - mu) * -0.5 * (var + eps) ** -1.5).sum(axis=0)
    dmu = (dxhat * -1 / np.sqrt(var + eps)).sum(axis=0) + dvar * (-2 * (x - mu)).mean(axis=0)
    dx = dxhat / np.sqrt(var + eps) + dvar * 2 * (x - mu) / m + dmu / m
    return dx.reshape(cache["shape"]), dgamma, dbeta


# Dropout -----------------------------------------------------------------------------------


def dropout_forward(x: np.ndarray, keep: np.ndarray, rate: float) -> np.ndarray:
    """Inverted dropout with a given mask.

    out = x * keep / (1 - rate): the kept units are scaled at training time, so inference is the
    identity and each unit's expectation is unchanged. x (any shape), keep (same shape, 0/1 or
    bool: 1 where the unit is kept) -> out (same shape).
    """
    (x,) = _f64(x)
    return x * np.asarray(keep, np.float64) / (1 - rate)


def dropout_backward(dout: np.ndarray, keep: np.ndarray, rate: float) -> np.ndarray:
    """Gradient of inverted dropout: dx = dout * keep / (1 - rate), the same mask and scale."""
    return dropout_forward(dout, keep, rate)


# ReLU --------------------------------------------------------------------------------------


def relu_forward(x: np.ndarray) -> np.ndarray:
    """Rectified linear unit: out = max(x, 0). x (any shape) -> out (same shape)."""
    (x,) = _f64(x)
    return np.maximum(x, 0.0)


def relu_backward(dout: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Gradient of the ReLU: dx = dout where x > 0, else 0 (the subgradient 0 at x = 0)."""
    dout, x = _f64(dout, x)
    return np.where(x > 0, dout, 0.0)


# Convolution -------------------------------------------------------------------------------


def _pad(x: np.ndarray, k: int) -> np.ndarray:
    p = k // 2
    return np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))


def conv2d_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """k x k convolution (cross-correlation, as in every deep learning library), stride 1, zero
    'same' padding p = k // 2 (k odd), the only form conv.Conv2D has.

    out[n, y, z, f] = b[f] + sum_{i, j, c} xp[n, y + i, z + j, c] * W[i, j, c, f], xp = x padded
    with p zeros on each side of H and W.
    x (n, H, W, C), W (k, k, C, F), b (F,) -> out (n, H, W, F).
    """
    x, W, b = _f64(x, W, b)
    n, H, Wd, _ = x.shape
    k = W.shape[0]
    xp = _pad(x, k)
    out = np.zeros((n, H, Wd, W.shape[-1]))
    # One term of the sum per kernel tap: the window of xp the tap sees, times the tap's matrix.
    for i in range(k):
        for j in range(k):
            out += np.einsum("nyzc,cf->nyzf", xp[:, i : i + H, j : j + Wd], W[i, j])
    return out + b


def conv2d_backward(dout: np.ndarray, x: np.ndarray, W: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of conv2d_forward: (dx, dW, db).

    db[f] = sum_{n, y, z} dout[n, y, z, f]
    dW[i, j, c, f] = sum_{n, y, z} xp[n, y + i, z + j, c] * dout[n, y, z, f]
    dxp[n, y + i, z + j, c] += sum_f dout[n, y, z, f] * W[i, j, c, f] for every tap (i, j), and
    dx is dxp without its padding (the padded zeros are not inputs).
    dout (n, H, W, F), x (n, H, W, C), W (k, k, C, F) -> dx like x, dW like W, db (F,).
    """
    dout, x, W = _f64(dout, x, W)
    n, H, Wd, _ = x.shape
    k, p = W.shape[0], W.shape[0] // 2
    xp = _pad(x, k)
    dW = np.zeros_like(W)
    dxp = np.zeros_like(xp)
    # Each tap's share, scattered back to the inputs it read: col2im, not the flipped-kernel
    # convolution conv.Conv2D uses, so that the two are not the same derivation twice.
    for i in range(k):
        for j in range(k):
            dW[i, j] = np.einsum("nyzc,nyzf->cf", xp[:, i : i + H, j : j + Wd], dout)
            dxp[:, i : i + H, j : j + Wd] += np.einsum("nyzf,cf->nyzc", dout, W[i, j])
    return dxp[:, p : p + H, p : p + Wd], dW, dout.sum(axis=(0, 1, 2))


# Max pooling -------------------------------------------------------------------------------


def _pool_windows(x: np.ndarray) -> np.ndarray:
    """(n, H, W, C) -> (n, H // 2, W // 2, C, 4): each window's four values in POOL_CORNERS order."""
    n, H, Wd, C = x.shape
    h, w = H // 2, Wd // 2
    windows = x[:, : 2 * h, : 2 * w].reshape(n, h, 2, w, 2, C)
    return windows.transpose(0, 1, 3, 5, 2, 4).reshape(n, h, w, C, 4)


def max_pool_forward(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """2 x 2 max pooling, stride 2, an odd last row or column dropped: (out, winner).

    out[n, y, z, c] = max over a, e in {0, 1} of x[n, 2y + a, 2z + e, c]; winner is the index into
    POOL_CORNERS of the corner that gave it, the first one in that order on ties, so that exactly
    one input of a window gets its gradient (what conv.MaxPool2D records).
    x (n, H, W, C) -> out (n, H // 2, W // 2, C), winner (same shape, int).
    """
    (x,) = _f64(x)
    windows = _pool_windows(x)
    # argmax returns the first of equal maxima: the tie rule itself.
    winner = windows.argmax(axis=-1)
    return np.take_along_axis(windows, winner[..., None], axis=-1)[..., 0], winner


def max_pool_backward(dout: np.ndarray, winner: np.ndarray, in_shape: tuple[int, ...]) -> np.ndarray:
    """Gradient of 2 x 2 max pooling: each window's dout to its winning corner, zero elsewhere.

    dout, winner (n, H // 2, W // 2, C) -> dx (in_shape = (n, H, W, C)); a dropped odd edge
    row or column gets zero.
    """
    (dout,) = _f64(dout)
    dx = np.zeros(in_shape)
    h, w = dout.shape[1:3]
    for t, (a, e) in enumerate(POOL_CORNERS):
        dx[:, a : 2 * h : 2, e : 2 * w : 2] = np.where(winner == t, dout, 0.0)
    return dx


# Loss --------------------------------------------------------------------------------------


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0) -> tuple[float, np.ndarray]:
    """Mean cross-entropy of softmax(logits) against label-smoothed targets: (loss, dlogits).

    p = exp(z) / sum exp(z) per row; target t = (1 - s) * onehot(label) + s / k;
    loss = -mean_i sum_j t_ij log p_ij; dloss/dz = (p - t) / n.
    logits (n, k), labels (n,) int in [0, k) -> loss (float), dlogits (n, k).
    """
    (z,) = _f64(logits)
    n, k = z.shape
    # Shifting by the row maximum changes nothing in p and keeps exp from overflowing.
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    target = np.full((n, k), label_smoothing / k)
    target[np.arange(n), labels] += 1 - label_smoothing
    loss = float(-(target * log_p).sum() / n)
    return loss, (np.exp(log_p) - target) / n


# Optimisers --------------------------------------------------------------------------------
#
# One step each, CS231n's way: step(w, g, state, lr, ...) -> (new w, new state), state a dict
# that starts empty. Weight decay applies to the first n_decay entries (weights, not biases),
# as in the package's flat parameter vector.


def _decay_mask(w: np.ndarray, n_decay: int) -> np.ndarray:
    return (np.arange(w.size) < n_decay).reshape(w.shape)


def _l2(w: np.ndarray, g: np.ndarray, weight_decay: float, n_decay: int) -> np.ndarray:
    """g + weight_decay * w on the decayed entries: the gradient of the loss plus wd/2 |w|^2."""
    return g + weight_decay * w * _decay_mask(w, n_decay)


def sgd_step(w, g, state, lr, weight_decay=0.0, n_decay=0):
    """Plain gradient descent: w <- w - lr * (g + wd * w). w, g (N,) -> (w (N,), state)."""
    w, g = _f64(w, g)
    return w - lr * _l2(w, g, weight_decay, n_decay), dict(state)


def momentum_step(w, g, state, lr, momentum=0.9, weight_decay=0.0, n_decay=0):
    """Heavy-ball momentum (as torch.optim.SGD): v <- mu v + g', w <- w - lr v, g' = g + wd * w.

    state {"v": (N,)}, zeros at the start. w, g (N,) -> (w (N,), state).
    """
    w, g = _f64(w, g)
    v = momentum * state.get("v", np.zeros_like(w)) + _l2(w, g, weight_decay, n_decay)
    return w - lr * v, {"v": v}


def nesterov_step(w, g, state, lr, momentum=0.9, weight_decay=0.0, n_decay=0):
    """Nesterov momentum (as torch.optim.SGD with nesterov=True): v <- mu v + g',
    w <- w - lr (g' + mu v), g' = g + wd * w: the step looks ahead along the new velocity.

    state {"v": (N,)}. w, g (N,) -> (w (N,), state).
    """
    w, g = _f64(w, g)
    g = _l2(w, g, weight_decay, n_decay)
    v = momentum * state.get("v", np.zeros_like(w)) + g
    return w - lr * (g + momentum * v), {"v": v}


def adam_step(w, g, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, n_decay=0):
    """Adam (Kingma and Ba, 2015), weight decay as L2 in the gradient (g' = g + wd * w):

    t <- t + 1
    m <- b1 m + (1 - b1) g',  v <- b2 v + (1 - b2) g'^2
    m_hat = m / (1 - b1^t),   v_hat = v / (1 - b2^t)
    w <- w - lr * m_hat / (sqrt(v_hat) + eps)
    state {"t": int, "m": (N,), "v": (N,)}. w, g (N,) -> (w (N,), state).
    """
    w, g = _f64(w, g)
    return _adam(w, _l2(w, g, weight_decay, n_decay), state, lr, betas, eps)


def adamw_step(w, g, state, lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, n_decay=0):
    """AdamW (Loshchilov and Hutter, 2019): decay decoupled from the gradient's moments.

    w <- w - lr * wd * w on the decayed entries, then the Adam step of adam_step with g itself
    (the Adam step does not depend on w, so decaying first or alongside is the same).
    state as adam_step. w, g (N,) -> (w (N,), state).
    """
    w, g = _f64(w, g)
    w = w - lr * weight_decay * w * _decay_mask(w, n_decay)
    return _adam(w, g, state, lr, betas, eps)


def _adam(w, g, state, lr, betas, eps):
    b1, b2 = betas
    t = state.get("t", 0) + 1
    m = b1 * state.get("m", np.zeros_like(w)) + (1 - b1) * g
    v = b2 * state.get("v", np.zeros_like(w)) + (1 - b2) * g**2
    m_hat, v_hat = m / (1 - b1**t), v / (1 - b2**t)
    return w - lr * m_hat / (np.sqrt(v_hat) + eps), {"t": t, "m": m, "v": v}
