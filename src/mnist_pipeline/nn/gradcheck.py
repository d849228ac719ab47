"""Centred-difference gradient checks (CS231n style), for the tests: run them in float64."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mnist_pipeline.nn.layers import Layer


def numerical_gradient(f: Callable[[], float], a: np.ndarray, h: float = 1e-5) -> np.ndarray:
    """d f / d a by centred differences, perturbing `a` in place one entry at a time."""
    grad = np.zeros_like(a)
    for index in np.ndindex(a.shape):
        old = a[index]
        a[index] = old + h
        up = f()
        a[index] = old - h
        down = f()
        a[index] = old
        grad[index] = (up - down) / (2 * h)
    return grad


def relative_error(analytic: np.ndarray, numeric: np.ndarray, floor: float = 1e-8) -> float:
    """max |a - n| / max(|a| + |n|, floor), elementwise: scale-free, 0 for equal arrays.

    Centred differences carry round-off of about 1e-11 in float64, so a gradient that is exactly
    zero (a bias just before batch norm) needs a floor well above that to compare as equal.
    """
    return float(np.max(np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), floor)))


def check_layer(
    layer: Layer, x: np.ndarray, *, train: bool = True, seed: int = 0, before_forward: Callable[[], None] | None = None
) -> dict[str, float]:
    """Relative error of backward's gradient for x and for each parameter, against f = sum(forward(x) * dout).

    `before_forward` runs before every forward pass, e.g. to reseed a dropout mask.
    """
    prepare = before_forward or (lambda: None)
    prepare()
    out = layer.forward(x, train)
    dout = np.random.default_rng(seed).standard_normal(out.shape)

    def f() -> float:
        prepare()
        return float(np.sum(layer.forward(x, train) * dout))

    prepare()
    layer.forward(x, train)
    dx = layer.backward(dout)
    grads = {name: grad.copy() for name, grad in layer.grads.items()}
    x = x.copy()
    errors = {"x": relative_error(dx, numerical_gradient(f, x))}
    for name, param in layer.params.items():
        errors[name] = relative_error(grads[name], numerical_gradient(f, param))
    return errors
