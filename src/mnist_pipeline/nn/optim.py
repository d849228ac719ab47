"""Optimisers over one flat parameter vector, and global-norm gradient clipping.

A model keeps all its parameters in one contiguous float32 vector (and their gradients in
another), with the weights that decay applies to first, so a step is a handful of whole-vector
NumPy operations whatever the number of layers. `step(w, g, lr)` updates `w` in place and may
overwrite `g`. The update rules follow PyTorch's, so a learning rate means the same there.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_pipeline.nn.settings import TrainSettings


class Optimizer:
    """Base: L2 weight decay on the first `n_decay` entries, added to the gradient."""

    def __init__(self, weight_decay: float = 0.0, n_decay: int = 0) -> None:
        self.weight_decay, self.n_decay = float(weight_decay), int(n_decay)
        self.t = 0  # steps taken
        self._tmp: np.ndarray | None = None

    def _scratch(self, w: np.ndarray) -> np.ndarray:
        if self._tmp is None or self._tmp.shape != w.shape:
            self._tmp = np.empty_like(w)
        return self._tmp

    def _add_weight_decay(self, w: np.ndarray, g: np.ndarray) -> None:
        if self.weight_decay and self.n_decay:
            d = slice(0, self.n_decay)
            tmp = self._scratch(w)[d]
            np.multiply(w[d], self.weight_decay, out=tmp)
            g[d] += tmp

    def _state(self, w: np.ndarray, name: str) -> np.ndarray:
        state = getattr(self, name, None)
        if state is None:
            state = np.zeros_like(w)
            setattr(self, name, state)
        return state

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        self.t += 1
        self._add_weight_decay(w, g)
        self._update(w, g, lr)

    def _update(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """w -= lr * g"""

    def _update(self, w, g, lr):
        g *= lr
        w -= g


class Momentum(Optimizer):
    """v = mu * v + g;  w -= lr * v  (heavy ball, as torch.optim.SGD)."""

    def __init__(self, momentum: float = 0.9, weight_decay: float = 0.0, n_decay: int = 0) -> None:
        super().__init__(weight_decay, n_decay)
        self.momentum = float(momentum)
        self.velocity: np.ndarray | None = None

    def _update(self, w, g, lr):
        v = self._state(w, "velocity")
        v *= self.momentum
        v += g
        tmp = self._scratch(w)
        np.multiply(v, lr, out=tmp)
        w -= tmp


class Nesterov(Momentum):
    """v = mu * v + g;  w -= lr * (g + mu * v)  (as torch.optim.SGD with nesterov=True)."""

    def _update(self, w, g, lr):
        v = self._state(w, "velocity")
        v *= self.momentum
        v += g
        tmp = self._scratch(w)
        np.multiply(v, self.momentum, out=tmp)
        tmp += g
        tmp *= lr
        w -= tmp


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction; weight decay as L2 added to the gradient."""

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, n_decay: int = 0) -> None:
        super().__init__(weight_decay, n_decay)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def _update(self, w, g, lr):
        m, v = self._state(w, "m"), self._state(w, "v")
        tmp = self._scratch(w)
        m *= self.beta1
        np.multiply(g, 1 - self.beta1, out=tmp)
        m += tmp
        v *= self.beta2
        np.square(g, out=g)
        g *= 1 - self.beta2
        v += g
        # w -= lr * m_hat / (sqrt(v_hat) + eps), with the corrections folded into scalars.
        np.sqrt(v, out=tmp)
        tmp *= 1.0 / math.sqrt(1 - self.beta2**self.t)
        tmp += self.eps
        np.divide(m, tmp, out=tmp)
        tmp *= lr / (1 - self.beta1**self.t)
        w -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): w *= 1 - lr * wd, then Adam."""

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        self.t += 1
        if self.weight_decay and self.n_decay:
            w[: self.n_decay] *= 1 - lr * self.weight_decay
        self._update(w, g, lr)


def clip_grad_norm(g: np.ndarray, max_norm: float) -> float:
    """Scale g in place so that its L2 norm is at most max_norm; returns the norm before clipping."""
    norm = math.sqrt(float(np.dot(g, g)))
    if norm > max_norm:
        g *= max_norm / norm
    return norm


def make_optimizer(settings: TrainSettings, n_decay: int) -> Optimizer:
    """The optimiser `settings.optimizer` names, with its keys from the settings."""
    name, wd = settings.optimizer, settings.weight_decay
    if name == "sgd":
        return SGD(wd, n_decay)
    if name == "momentum":
        return Momentum(settings.momentum, wd, n_decay)
    if name == "nesterov":
        return Nesterov(settings.momentum, wd, n_decay)
    cls = Adam if name == "adam" else AdamW
    return cls(settings.betas, weight_decay=wd, n_decay=n_decay)
