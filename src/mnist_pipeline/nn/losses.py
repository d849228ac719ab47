"""Softmax cross-entropy, fused with its gradient and computed in place on the logits."""

from __future__ import annotations

import numpy as np


def softmax_cross_entropy(
    logits: np.ndarray, labels: np.ndarray, label_smoothing: float = 0.0, *, gradient: bool = True
) -> float:
    """Mean cross-entropy of softmax(logits) against `labels`, optionally label-smoothed.

    logits (n, k) float, labels (n,) int in [0, k). The target of example i puts
    1 - label_smoothing + label_smoothing / k on class labels[i] and label_smoothing / k on
    every other class. On return `logits` holds the gradient of the mean loss with respect to
    the logits, (softmax - target) / n, or with gradient=False the softmax probabilities.
    Returns the mean loss as a Python float (nan or inf if the logits were).
    """
    n, k = logits.shape
    rows = np.arange(n)
    z = logits
    _shift(z)
    per_example = -z[rows, labels]
    if label_smoothing:
        # Cross-entropy against the uniform part of the target is lse - mean(z).
        per_example *= 1 - label_smoothing
        per_example -= label_smoothing * z.mean(axis=1)
    # Both parts of the smoothed target sum to one, so lse enters with weight 1 either way.
    per_example += _exp_normalize(z)
    if gradient:
        z[rows, labels] -= 1 - label_smoothing
        if label_smoothing:
            z -= label_smoothing / k
        z *= 1.0 / n
    return float(per_example.sum(dtype=np.float64)) / n


def softmax(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis of (n, k) logits, in place; returns the same array."""
    _shift(logits)
    _exp_normalize(logits)
    return logits


def _shift(z: np.ndarray) -> None:
    # Log-sum-exp with the row maximum taken out first: exp never overflows, and the largest
    # term is exactly 1, so the sum is >= 1 and its log never sees 0.
    z -= z.max(axis=1, keepdims=True)


def _exp_normalize(z: np.ndarray) -> np.ndarray:
    """Shifted logits -> probabilities, in place; returns the log of each row's sum, (n,)."""
    np.exp(z, out=z)
    total = z.sum(axis=1, keepdims=True)
    z /= total
    return np.log(total[:, 0])
