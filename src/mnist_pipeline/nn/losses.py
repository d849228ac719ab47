"""Softmax cross-entropy, fused with its gradient.

Every function leaves the logits it is given alone and writes its result to `out`: a new array
by default, or, passed explicitly, any array of the logits' shape, the logits themselves
included, which saves a copy when the caller has no more use for them (the trainer's case).
"""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0, *, out: np.ndarray | None = None
) -> tuple[float, np.ndarray]:
    """(mean loss, its gradient with respect to the logits) of softmax(logits) against `labels`.

    logits (n, k) float, labels (n,) int in [0, k). The target of example i puts
    1 - label_smoothing + label_smoothing / k on class labels[i] and label_smoothing / k on
    every other class. The gradient is (softmax - target) / n, in `out`. The loss is a Python
    float (nan or inf if the logits were).
    """
    n, k = logits.shape
    loss, z = _loss_and_probabilities(logits, labels, label_smoothing, out)
    z[np.arange(n), labels] -= 1 - label_smoothing
    if label_smoothing:
        z -= label_smoothing / k
    z *= 1.0 / n
    return loss, z


def training_loss(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0, *, out: np.ndarray | None = None
) -> tuple[float, np.ndarray, int]:
    """What a training step takes from its logits: (mean loss, its gradient in `out`, the
    correct predictions), softmax_cross_entropy's two and the count of rows whose largest logit
    is the label's. The count is made first, so `out` may be the logits themselves."""
    correct = int(np.count_nonzero(logits.argmax(axis=1) == labels))
    loss, gradient = softmax_cross_entropy(logits, labels, label_smoothing, out=out)
    return loss, gradient, correct


def cross_entropy(logits: np.ndarray, labels: np.ndarray, *, out: np.ndarray | None = None) -> float:
    """The mean loss alone (no smoothing), `out` holding the softmax probabilities afterwards."""
    return _loss_and_probabilities(logits, labels, 0.0, out)[0]


def softmax(logits: np.ndarray, *, out: np.ndarray | None = None) -> np.ndarray:
    """Softmax over the last axis of (n, k) logits, in `out`; returns it."""
    z = _shifted(logits, out)
    _exp_normalize(z)
    return z


def _loss_and_probabilities(logits, labels, label_smoothing, out) -> tuple[float, np.ndarray]:
    n, k = logits.shape
    z = _shifted(logits, out)
    per_example = -z[np.arange(n), labels]
    if label_smoothing:
        # Cross-entropy against the uniform part of the target is lse - mean(z).
        per_example *= 1 - label_smoothing
        per_example -= label_smoothing * z.mean(axis=1)
    # Both parts of the smoothed target sum to one, so lse enters with weight 1 either way.
    per_example += _exp_normalize(z)
    return float(per_example.sum(dtype=np.float64)) / n, z


def _shifted(logits: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    # Log-sum-exp with the row maximum taken out first: exp never overflows, and the largest
    # term is exactly 1, so the sum is >= 1 and its log never sees 0.
    return np.subtract(logits, logits.max(axis=1, keepdims=True), out=out)


def _exp_normalize(z: np.ndarray) -> np.ndarray:
    """Shifted logits -> probabilities, in place; returns the log of each row's sum, (n,)."""
    np.exp(z, out=z)
    total = z.sum(axis=1, keepdims=True)
    z /= total
    return np.log(total[:, 0])
