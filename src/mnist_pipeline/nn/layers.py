"""Layers: each keeps its parameters and their gradients side by side, backward beside forward.

A layer maps a batch `x` of shape (n, *features) to a batch of outputs. `forward(x, train)`
remembers what `backward` needs; `backward(dout, need_dx)` writes the gradients of the
parameters into `grads` (overwriting, never accumulating) and returns the gradient with
respect to `x`, or None when the caller does not need it (the first layer of a network).

Outputs and input gradients live in buffers the layer owns and reuses from call to call, so a
returned array is only valid until the layer's next call; `backward` may overwrite `dout`.
Everything follows the dtype of the parameters (float32 in a network, float64 in gradient
checks); nothing is upcast on the way.
"""

from __future__ import annotations

import numpy as np


class Layer:
    """Base of every layer: no parameters, no state, identity spec."""

    kind = "layer"
    #: names of the parameters that weight decay applies to (weights, never biases or scales)
    decay: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        #: state that is saved with the model but not trained, e.g. batch-norm running means
        self.buffers: dict[str, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}

    def spec(self) -> dict:
        """JSON-able description; `type(**spec without 'type')` rebuilds the layer."""
        return {"type": self.kind}

    def initialize(self, initialiser, rng: np.random.Generator) -> None:
        """Fill the parameters with their starting values (no-op without parameters)."""

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output example given the shape of one input example."""
        return shape

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def _buffer(self, name: str, shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
        """A scratch array kept between calls; reallocated (and filled) only when the shape or dtype changes."""
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            buf = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
            self._scratch[name] = buf
        return buf

    def _sum_rows(self, a: np.ndarray, out: np.ndarray) -> None:
        """out (m,) = a (n, m) summed over rows, as ones (n,) @ a: BLAS does it 2-3x faster than np.sum."""
        np.matmul(self._buffer("ones", (a.shape[0],), a.dtype, fill=1), a, out=out)

    def _add_param(self, name: str, shape: tuple[int, ...], dtype) -> None:
        self.params[name] = np.zeros(shape, dtype)
        self.grads[name] = np.zeros(shape, dtype)


class Dense(Layer):
    """Fully connected: x (n, n_in) @ W (n_in, n_out) + b (n_out,)."""

    kind = "dense"
    decay = ("W",)

    def __init__(self, n_in: int, n_out: int, dtype=np.float32) -> None:
        super().__init__()
        self.n_in, self.n_out = int(n_in), int(n_out)
        self._add_param("W", (self.n_in, self.n_out), dtype)
        self._add_param("b", (self.n_out,), dtype)

    def spec(self) -> dict:
        return {"type": self.kind, "n_in": self.n_in, "n_out": self.n_out}

    def initialize(self, initialiser, rng: np.random.Generator) -> None:
        W = self.params["W"]
        W[...] = initialiser(rng, W.shape, self.n_in, self.n_out)
        self.params["b"][...] = 0

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.n_out,)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._x = x
        out = self._buffer("out", (x.shape[0], self.n_out), self.params["W"].dtype)
        np.matmul(x, self.params["W"], out=out)
        out += self.params["b"]
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        # x.T is a transposed view: BLAS reads it with its transpose flag, nothing is copied.
        np.matmul(self._x.T, dout, out=self.grads["W"])
        self._sum_rows(dout, self.grads["b"])
        if not need_dx:
            return None
        dx = self._buffer("dx", self._x.shape, dout.dtype)
        np.matmul(dout, self.params["W"].T, out=dx)
        return dx


class Dropout(Layer):
    """Inverted dropout: zero each input with probability `rate`, scale the rest by 1/(1-rate).

    Scaling at training time means inference is the identity. `rng` is set by the trainer so
    that the masks follow the run's seed.
    """

    kind = "dropout"

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate {rate!r}: expected 0 <= rate < 1")
        self.rate = float(rate)
        self.rng = np.random.default_rng(0)

    def spec(self) -> dict:
        return {"type": self.kind, "rate": self.rate}

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._train = train and self.rate > 0
        if not self._train:
            return x
        mask = self._buffer("mask", x.shape, x.dtype)
        self.rng.random(out=mask, dtype=mask.dtype)
        # A comparison into a float array gives the 0/1 mask without a boolean temporary.
        np.greater_equal(mask, self.rate, out=mask)
        mask *= mask.dtype.type(1.0 / (1.0 - self.rate))
        # Not in place: a tanh or sigmoid before us keeps its output for its own backward.
        out = self._buffer("out", x.shape, x.dtype)
        np.multiply(x, mask, out=out)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if self._train:
            dout *= self._scratch["mask"]
        return dout if need_dx else None


class BatchNorm(Layer):
    """Batch normalisation over every axis but the last (features, or channels of NHWC maps).

    Training normalises with the batch's mean and variance and updates running estimates
    (exponential average, `momentum` = weight of the old value); inference uses the estimates.
    """

    kind = "batch_norm"

    def __init__(self, n_features: int, momentum: float = 0.9, eps: float = 1e-5, dtype=np.float32) -> None:
        super().__init__()
        self.n_features, self.momentum, self.eps = int(n_features), float(momentum), float(eps)
        self._add_param("gamma", (self.n_features,), dtype)
        self._add_param("beta", (self.n_features,), dtype)
        self.params["gamma"][...] = 1
        self.buffers = {
            "running_mean": np.zeros(self.n_features, dtype),
            "running_var": np.ones(self.n_features, dtype),
        }

    def spec(self) -> dict:
        return {"type": self.kind, "n_features": self.n_features, "momentum": self.momentum, "eps": self.eps}

    def initialize(self, initialiser, rng: np.random.Generator) -> None:
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        gamma, beta = self.params["gamma"], self.params["beta"]
        x2 = x.reshape(-1, self.n_features)
        out = self._buffer("out", x2.shape, gamma.dtype)
        xhat = self._buffer("xhat", x2.shape, gamma.dtype)
        self._train, self._shape = train, x.shape
        if train:
            n = x2.shape[0]
            mean = self._buffer("mean", (self.n_features,), gamma.dtype)
            self._sum_rows(x2, mean)
            mean /= n
            np.subtract(x2, mean, out=xhat)
            var = self._buffer("var", (self.n_features,), gamma.dtype)
            self._sum_rows(np.square(xhat, out=out), var)
            var /= n
            m = gamma.dtype.type(self.momentum)
            for name, batch_value in (("running_mean", mean), ("running_var", var)):
                self.buffers[name] *= m
                self.buffers[name] += (1 - m) * batch_value
        else:
            np.subtract(x2, self.buffers["running_mean"], out=xhat)
            var = self.buffers["running_var"]
        self._inv_std = 1.0 / np.sqrt(var + gamma.dtype.type(self.eps))
        xhat *= self._inv_std
        np.multiply(xhat, gamma, out=out)
        out += beta
        return out.reshape(x.shape)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        d2 = dout.reshape(-1, self.n_features)
        xhat = self._scratch["xhat"]
        dgamma, dbeta = self.grads["gamma"], self.grads["beta"]
        self._sum_rows(d2, dbeta)
        dx = self._buffer("dx", d2.shape, d2.dtype)
        np.multiply(d2, xhat, out=dx)
        self._sum_rows(dx, dgamma)
        if not need_dx:
            return None
        if self._train:
            # The batch statistics depend on every input too:
            # dx = gamma / (n * std) * (n * dout - sum(dout) - xhat * sum(dout * xhat))
            n = d2.shape[0]
            np.multiply(xhat, dgamma / n, out=dx)
            dx += dbeta / n
            np.subtract(d2, dx, out=dx)
        else:
            dx[...] = d2
        dx *= self.params["gamma"] * self._inv_std
        return dx.reshape(self._shape)


class Reshape(Layer):
    """Give each example a new shape, e.g. flat 784 pixels to a 28x28x1 image (a view, no copy)."""

    kind = "reshape"

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def spec(self) -> dict:
        return {"type": self.kind, "shape": list(self.shape)}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        # Let NumPy resolve a -1 and check the sizes, on an empty array.
        return np.empty((1, *shape), np.int8).reshape(1, *self.shape).shape[1:]

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        return dout.reshape(self._in_shape) if need_dx else None


class Flatten(Reshape):
    """Flatten each example to one vector (between the conv blocks and the dense layers)."""

    kind = "flatten"

    def __init__(self) -> None:
        super().__init__((-1,))

    def spec(self) -> dict:
        return {"type": self.kind}
