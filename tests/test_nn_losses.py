"""Softmax cross-entropy: values against a direct formula, gradients by centred differences."""

import numpy as np
import pytest

from mnist_pipeline.nn.gradcheck import numerical_gradient, relative_error
from mnist_pipeline.nn.losses import cross_entropy, softmax, softmax_cross_entropy, training_loss


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
    loss, grad = softmax_cross_entropy(logits, labels, smoothing)
    assert loss == pytest.approx(reference_loss(logits, labels, smoothing), rel=1e-12)

    def f():
        return softmax_cross_entropy(logits, labels, smoothing)[0]

    assert relative_error(grad, numerical_gradient(f, logits)) < 1e-6


def test_the_logits_are_left_alone_unless_given_as_out_and_out_gives_the_same_bytes():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((6, 10)).astype(np.float32)
    labels = rng.integers(0, 10, 6)
    before = logits.copy()
    loss, grad = softmax_cross_entropy(logits, labels, 0.1)
    np.testing.assert_array_equal(logits, before)
    assert not np.shares_memory(grad, logits)
    assert cross_entropy(logits, labels) == pytest.approx(softmax_cross_entropy(logits, labels)[0], rel=1e-12)
    p = softmax(logits)
    np.testing.assert_array_equal(logits, before)

    loss_in_place, grad_in_place = softmax_cross_entropy(logits, labels, 0.1, out=logits)
    assert grad_in_place is logits
    assert loss_in_place == loss
    np.testing.assert_array_equal(grad_in_place, grad)
    np.testing.assert_array_equal(softmax(before.copy(), out=before), p)


def test_a_training_step_counts_the_correct_rows_before_the_gradient_overwrites_the_logits():
    logits = np.array([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0], [1.0, 4.0, 2.0], [0.5, 0.0, 0.2]], np.float32)
    labels = np.array([0, 2, 0, 1])  # the first two rows right, the others wrong
    loss, grad = softmax_cross_entropy(logits, labels, 0.1)

    counted = training_loss(logits, labels, 0.1, out=logits)
    assert counted[0] == loss and counted[2] == 2
    assert counted[1] is logits
    np.testing.assert_array_equal(counted[1], grad)


def test_huge_logits_stay_finite():
    # exp(1000) overflows float32; with the row maximum taken out first nothing does.
    logits = np.array([[1000.0, 0.0, -1000.0], [0.0, 0.0, 3000.0]], np.float32)
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        loss, grad = softmax_cross_entropy(logits, np.array([0, 0]))
    assert loss == pytest.approx(3000.0 / 2)
    assert np.isfinite(grad).all()


def test_float32_stays_float32():
    logits = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    _, grad = softmax_cross_entropy(logits, np.array([1, 2, 3]), 0.1)
    assert grad.dtype == np.float32


def test_the_loss_alone_leaves_the_probabilities_in_out():
    logits = np.array([[0.0, np.log(3.0)]])
    out = np.empty_like(logits)
    loss = cross_entropy(logits, np.array([1]), out=out)
    np.testing.assert_allclose(out, [[0.25, 0.75]])
    assert loss == pytest.approx(-np.log(0.75))


def test_nan_logits_give_a_nan_loss():
    assert np.isnan(softmax_cross_entropy(np.array([[np.nan, 0.0]]), np.array([0]))[0])
    assert np.isnan(cross_entropy(np.array([[np.nan, 0.0]]), np.array([0])))


def test_softmax_rows_sum_to_one():
    p = softmax(np.array([[1.0, 2.0, 3.0], [-500.0, 0.0, 500.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], np.exp([1, 2, 3]) / np.exp([1, 2, 3]).sum())
