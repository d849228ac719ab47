"""Weight initialisers: draw a layer's starting weights from its fan-in and fan-out.

Both scale the variance so that activations keep their size from layer to layer: He for
ReLU-like activations (which zero half their input), Glorot for tanh and sigmoid.
"""

from __future__ import annotations

import math

import numpy as np


def he_normal(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
    """Normal with variance 2 / fan_in (He et al., 2015)."""
    return _normal(rng, shape, math.sqrt(2.0 / fan_in))


def glorot_uniform(rng: np.random.Generator, shape: tuple[int, ...], fan_in: int, fan_out: int) -> np.ndarray:
    """Uniform on +-sqrt(6 / (fan_in + fan_out)) (Glorot and Bengio, 2010)."""
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    # Drawn in float32 directly: a float64 draw cast afterwards would cost a second array.
    out = rng.random(shape, dtype=np.float32)
    out *= 2 * limit
    out -= limit
    return out


def _normal(rng: np.random.Generator, shape: tuple[int, ...], std: float) -> np.ndarray:
    out = rng.standard_normal(shape, dtype=np.float32)
    out *= std
    return out


# By the `init` setting's name.
INITIALISERS = {"he": he_normal, "glorot": glorot_uniform}
