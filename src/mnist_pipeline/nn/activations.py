"""Element-wise activations, computed in place.

In a network an activation's input is always the previous layer's own output buffer, so
overwriting it saves a pass over memory and a buffer per layer. Each backward pass needs only
the activation's output (kept by reference), and overwrites `dout` with the input gradient.
Callers that want to keep `x` must pass a copy.
"""

from __future__ import annotations

import numpy as np

from mnist_pipeline.nn.layers import Layer


class ReLU(Layer):
    kind = "relu"

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._y = np.maximum(x, 0, out=x)
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        # y > 0 exactly where x > 0, so the output is enough to know where the gradient passes.
        np.copyto(dout, 0, where=self._y <= 0)
        return dout


class LeakyReLU(Layer):
    """x for x > 0, alpha * x otherwise."""

    kind = "leaky_relu"

    def __init__(self, alpha: float = 0.01) -> None:
        super().__init__()
        if not alpha > 0:
            raise ValueError(f"leaky_relu alpha {alpha!r}: expected > 0 (the sign of y must tell that of x)")
        self.alpha = float(alpha)

    def spec(self) -> dict:
        return {"type": self.kind, "alpha": self.alpha}

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        np.multiply(x, self.alpha, out=x, where=x < 0)
        self._y = x
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        np.multiply(dout, self.alpha, out=dout, where=self._y < 0)
        return dout


class Tanh(Layer):
    kind = "tanh"

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._y = np.tanh(x, out=x)
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        # d tanh = 1 - y^2
        tmp = self._buffer("tmp", dout.shape, dout.dtype)
        np.square(self._y, out=tmp)
        np.subtract(1, tmp, out=tmp)
        dout *= tmp
        return dout


class Sigmoid(Layer):
    kind = "sigmoid"

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        # 1 / (1 + exp(-x)): exp overflows to inf for very negative x, and 1/inf is the right 0;
        # it underflows to 0 for very positive x, and 1/1 is the right 1.
        with np.errstate(over="ignore", under="ignore"):
            np.negative(x, out=x)
            np.exp(x, out=x)
        x += 1
        self._y = np.reciprocal(x, out=x)
        return x

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        # d sigmoid = y (1 - y)
        tmp = self._buffer("tmp", dout.shape, dout.dtype)
        np.subtract(1, self._y, out=tmp)
        tmp *= self._y
        dout *= tmp
        return dout


ACTIVATIONS = {cls.kind: cls for cls in (ReLU, LeakyReLU, Tanh, Sigmoid)}
