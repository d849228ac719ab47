"""Optimiser steps against values worked out by hand, and gradient clipping."""

import numpy as np
import pytest

from mnist_pipeline.nn.optim import SGD, Adam, AdamW, Momentum, Nesterov, clip_grad_norm, make_optimizer
from mnist_pipeline.nn.settings import TrainSettings


def run(optimizer, grads, lr, w0=(1.0, -2.0)):
    w = np.array(w0, np.float32)
    for g in grads:
        optimizer.step(w, np.array(g, np.float32), lr)
    return w


def test_sgd():
    # w - lr * g: (1 - 0.1 * 0.5, -2 - 0.1 * -1)
    np.testing.assert_allclose(run(SGD(), [[0.5, -1.0]], 0.1), [0.95, -1.9], rtol=1e-6)


def test_sgd_weight_decay_only_on_the_decayed_entries():
    # n_decay = 1: g0 = 0.5 + 0.1 * 1 = 0.6 -> 1 - 0.06; g1 = -1 unchanged -> -2 + 0.1
    np.testing.assert_allclose(run(SGD(0.1, n_decay=1), [[0.5, -1.0]], 0.1), [0.94, -1.9], rtol=1e-6)


def test_momentum():
    # v1 = g1 = 1; w = 1 - 0.1 = 0.9.  v2 = 0.9 * 1 + 2 = 2.9; w = 0.9 - 0.29 = 0.61
    w = run(Momentum(0.9), [[1.0, 0.0], [2.0, 0.0]], 0.1)
    np.testing.assert_allclose(w, [0.61, -2.0], rtol=1e-6)


def test_nesterov():
    # v1 = 1; w -= 0.1 * (1 + 0.9 * 1) -> 0.81.  v2 = 0.9 + 2 = 2.9; w -= 0.1 * (2 + 2.61) -> 0.349
    w = run(Nesterov(0.9), [[1.0, 0.0], [2.0, 0.0]], 0.1)
    np.testing.assert_allclose(w, [0.349, -2.0], rtol=1e-5)


def test_adam():
    # Step 1: m_hat = g and v_hat = g^2, so the step is lr * sign(g) (up to eps).
    # Step 2 with g = 2 after g = 1: m = 0.9*0.1 + 0.2 = 0.29, m_hat = 0.29/0.19;
    # v = 0.999*0.001 + 0.004 = 0.004999, v_hat = 0.004999/0.001999; step = lr*m_hat/sqrt(v_hat).
    w = run(Adam((0.9, 0.999)), [[1.0, -3.0], [2.0, -3.0]], 0.1)
    step2 = 0.1 * (0.29 / 0.19) / np.sqrt(0.004999 / 0.001999)
    np.testing.assert_allclose(w, [1.0 - 0.1 - step2, -2.0 + 0.2], rtol=1e-5)


def test_adam_weight_decay_is_added_to_the_gradient():
    # The first step is lr * sign(g + wd * w): with g = 0 that is -lr for w > 0.
    np.testing.assert_allclose(run(Adam(weight_decay=0.5, n_decay=2), [[0.0, 0.0]], 0.1), [0.9, -1.9], rtol=1e-5)


def test_adamw_decay_is_decoupled():
    # w *= 1 - lr * wd first (1 -> 0.95), then the plain Adam step of sign(g) * lr; the second
    # entry is outside n_decay and takes only the Adam step.
    w = run(AdamW(weight_decay=0.5, n_decay=1), [[1.0, 1.0]], 0.1)
    np.testing.assert_allclose(w, [0.95 - 0.1, -2.1], rtol=1e-5)


def test_optimiser_state_stays_float32():
    opt = Adam()
    w = run(opt, [[1.0, 2.0]] * 3, 0.01)
    assert w.dtype == opt.m.dtype == opt.v.dtype == np.float32


def test_clip_grad_norm():
    g = np.array([3.0, 4.0], np.float32)
    assert clip_grad_norm(g, 1.0) == pytest.approx(5.0)
    np.testing.assert_allclose(g, [0.6, 0.8], rtol=1e-6)
    assert clip_grad_norm(g, 10.0) == pytest.approx(1.0)
    np.testing.assert_allclose(g, [0.6, 0.8], rtol=1e-6)


@pytest.mark.parametrize(
    "name,cls", [("sgd", SGD), ("momentum", Momentum), ("nesterov", Nesterov), ("adam", Adam), ("adamw", AdamW)]
)
def test_make_optimizer(name, cls):
    settings = TrainSettings(optimizer=name, weight_decay=0.01, momentum=0.8, betas=[0.5, 0.9])
    opt = make_optimizer(settings, n_decay=3)
    assert type(opt) is cls and opt.weight_decay == 0.01 and opt.n_decay == 3
    if isinstance(opt, Momentum):
        assert opt.momentum == 0.8
    if isinstance(opt, Adam):
        assert (opt.beta1, opt.beta2) == (0.5, 0.9)


@pytest.mark.parametrize("name", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_a_step_made_in_pieces_in_any_order_is_the_same_bytes_as_one_step(name):
    # The trainer updates each layer's weights as their gradients come (Model.backward).
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(1000).astype(np.float32)
    grads = [rng.standard_normal(1000).astype(np.float32) for _ in range(3)]
    settings = TrainSettings(optimizer=name, weight_decay=0.01)
    whole, pieces = make_optimizer(settings, n_decay=613), make_optimizer(settings, n_decay=613)
    w_whole, w_pieces = w0.copy(), w0.copy()
    cuts = [slice(700, 1000), slice(0, 13), slice(400, 700), slice(13, 400)]  # one crosses n_decay
    for g in grads:
        whole.step(w_whole, g.copy(), 0.01)
        pieces.begin(w_pieces, g.copy(), 0.01)
        for s in cuts:
            pieces.update(s)
    assert w_whole.tobytes() == w_pieces.tobytes()
