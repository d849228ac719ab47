"""Softmax cross-entropy: values against a direct formula, gradients by centred differences."""

import numpy as np
import pytest

from mnist_pipeline.nn.gradcheck import numerical_gradient, relative_error
from mnist_pipeline.nn.losses import softmax, softmax_cross_entropy


def reference_loss(logits, labels, smoothing):
    """Mean of -sum(target * log softmax), written out the textbook way in float64."""
    n, k = logits.shape
    log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    target = np.full((n, k), smoothing / k)
    target[np.arange(n), labels] += 1 - smoothing
    return float(-(target * log_p).sum(axis=1).mean())


@pytest.mark.parametrize("smoothing", [0.0, 0.1, 0.5])
def test_value_and_gradient(smoothing):
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((5, 4)) * 3
    labels = rng.integers(0, 4, 5)
    grad = logits.copy()
    loss = softmax_cross_entropy(grad, labels, smoothing)
    assert loss == pytest.approx(reference_loss(logits, labels, smoothing), rel=1e-12)

    def f():
        return softmax_cross_entropy(logits.copy(), labels, smoothing)

    assert relative_error(grad, numerical_gradient(f, logits)) < 1e-6


def test_huge_logits_stay_finite():
    # exp(1000) overflows float32; with the row maximum taken out first nothing does.
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 3000.0]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss = softmax_cross_entropy(logits, np.array([0, 0]))
    assert loss == pytest.approx(3000.0 / 2)
    assert np.isfinite(logits).all()


def test_float32_stays_float32():
    logits = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    softmax_cross_entropy(logits, np.array([1, 2, 3]), 0.1)
    assert logits.dtype == np.float32


def test_without_gradient_leaves_the_probabilities():
    logits = np.array([[0.0, np.log(3.0)]])
    loss = softmax_cross_entropy(logits, np.array([1]), gradient=False)
    np.testing.assert_allclose(logits, [[0.25, 0.75]])
    assert loss == pytest.approx(-np.log(0.75))


def test_nan_logits_give_a_nan_loss():
    assert np.isnan(softmax_cross_entropy(np.array([[np.nan, 0.0]]), np.array([0])))


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[1.0, 2.0, 3.0], [-500.0, 0.0, 500.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
