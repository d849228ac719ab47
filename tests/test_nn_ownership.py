"""Who may write which array: a layer on its own never writes what it is given and never changes
what it returned; chained in a Model (buffers reused, activations in place) it gives the same
bytes; a Model never writes the caller's arrays; misuse of a fused pool fails loudly."""

import numpy as np
import pytest

from mnist_pipeline.nn.conv import Conv2D, MaxPool2D
from mnist_pipeline.nn.losses import softmax_cross_entropy
from mnist_pipeline.nn.model import Model, architecture, build_layer
from mnist_pipeline.nn.optim import SGD, Adam, AdamW, Momentum, Nesterov
from mnist_pipeline.nn.settings import TrainSettings

# One of every layer type with an input shape of its own (odd sizes, several blocks of images).
LAYERS = {
    "dense": ({"type": "dense", "n_in": 7, "n_out": 5}, (9, 7)),
    "batch_norm": ({"type": "batch_norm", "n_features": 6}, (9, 6)),
    "dropout": ({"type": "dropout", "rate": 0.4}, (9, 6)),
    "relu": ({"type": "relu"}, (9, 6)),
    "leaky_relu": ({"type": "leaky_relu", "alpha": 0.1}, (9, 6)),
    "tanh": ({"type": "tanh"}, (9, 6)),
    "sigmoid": ({"type": "sigmoid"}, (9, 6)),
    "conv2d": ({"type": "conv2d", "in_channels": 2, "out_channels": 3, "kernel_size": 3}, (11, 5, 6, 2)),
    "max_pool": ({"type": "max_pool"}, (11, 5, 6, 3)),
    "reshape": ({"type": "reshape", "shape": [3, 2]}, (9, 6)),
}


def made(kind: str, chained: bool, seed: int = 0):
    spec, shape = LAYERS[kind]
    layer = build_layer(spec)
    rng = np.random.default_rng(seed)
    for param in layer.params.values():
        param[...] = rng.standard_normal(param.shape)
    if hasattr(layer, "rng"):
        layer.rng = np.random.default_rng(seed)
    layer.chained = chained
    return layer, shape


def inputs(shape, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_a_layer_on_its_own_leaves_its_arguments_alone_and_its_results_stay_as_returned(kind):
    layer, shape = made(kind, chained=False)
    x1, x2 = inputs(shape, 1), inputs(shape, 2)
    x1_was = x1.copy()
    out1 = layer.forward(x1, train=True)
    out1_was = out1.copy()
    dout1 = inputs(out1.shape, 3)
    dout1_was = dout1.copy()
    dx1 = layer.backward(dout1)
    dx1_was = dx1.copy()
    np.testing.assert_array_equal(x1, x1_was, err_msg="forward wrote its input")
    np.testing.assert_array_equal(dout1, dout1_was, err_msg="backward wrote dout")
    if kind == "reshape":
        # The one exception, as documented: a reshape's output is a view of its input, as NumPy's is.
        assert np.shares_memory(out1, x1)
        return
    # Whatever the caller now does with x1 changes nothing that backward reads.
    x1[...] = 7
    dx1_again = layer.backward(dout1_was.copy())
    np.testing.assert_array_equal(dx1_again, dx1_was, err_msg="backward read the caller's x after forward")
    # A second call, on other values, leaves the first call's results as they were.
    layer.forward(x2, train=True)
    layer.backward(inputs(out1.shape, 4))
    np.testing.assert_array_equal(out1, out1_was, err_msg="the next forward changed the last one's output")
    np.testing.assert_array_equal(dx1, dx1_was, err_msg="the next backward changed the last one's dx")


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_a_chained_layer_gives_the_bytes_of_the_same_layer_on_its_own(kind):
    results = {}
    for chained in (False, True):
        layer, shape = made(kind, chained)
        steps = []
        for step in range(2):  # twice: a chained layer's second call runs in its reused buffers
            out = layer.forward(inputs(shape, 10 + step), train=True).copy()
            dx = layer.backward(inputs(out.shape, 20 + step)).copy()
            steps.append((out, dx, *(grad.copy() for grad in layer.grads.values())))
        results[chained] = steps
    for plain, chained in zip(results[False], results[True], strict=True):
        for a, b in zip(plain, chained, strict=True):
            np.testing.assert_array_equal(a, b)


def test_chained_layers_reuse_their_buffers_and_activations_work_in_place():
    # What chaining is for, and why a chained result is valid only until the layer's next call.
    dense, shape = made("dense", chained=True)
    first = dense.forward(inputs(shape, 1), train=True)
    assert dense.forward(inputs(shape, 2), train=True) is first
    relu, shape = made("relu", chained=True)
    x = inputs(shape, 3)
    assert relu.forward(x, train=True) is x


def test_a_model_chains_every_layer_whose_arrays_are_its_own():
    settings = TrainSettings(hidden=[12], batch_norm=True, dropout=0.2)
    model = Model(architecture(settings, 20, 3))
    assert all(layer.chained for layer in model.layers)


def test_a_model_never_writes_the_callers_arrays_even_where_an_activation_comes_first_or_last():
    # An activation at the very front would get the caller's x, and one at the very end the
    # caller's dlogits: those two run on their own, the one in between chained.
    arch = {"model": "mlp", "n_inputs": 6, "image_shape": [1, 6], "n_classes": 3, "layers": [
        {"type": "relu"}, {"type": "dense", "n_in": 6, "n_out": 4}, {"type": "tanh"},
        {"type": "dense", "n_in": 4, "n_out": 3}, {"type": "sigmoid"}]}
    model = Model(arch)
    model.initialize("glorot", np.random.default_rng(0))
    assert [layer.chained for layer in model.layers] == [False, True, True, True, False]
    x = inputs((5, 6), 1)
    x_was = x.copy()
    logits = model.forward(x, train=True)
    logits_was = logits.copy()
    dlogits = inputs((5, 3), 2)
    dlogits_was = dlogits.copy()
    model.backward(dlogits)
    np.testing.assert_array_equal(x, x_was)
    np.testing.assert_array_equal(dlogits, dlogits_was)
    model.forward(inputs((5, 6), 3), train=True)
    np.testing.assert_array_equal(logits, logits_was, err_msg="the next forward changed the logits it returned")


def test_model_forward_returns_logits_that_outlive_the_next_forward_and_predictions_agree():
    settings = TrainSettings(hidden=[16], batch_norm=True)
    model = Model(architecture(settings, 10, 4))
    model.initialize("he", np.random.default_rng(0))
    x = inputs((8, 10), 1)
    first = model.forward(x)
    kept = first.copy()
    model.forward(inputs((8, 10), 2))
    np.testing.assert_array_equal(first, kept)
    e = np.exp(kept - kept.max(axis=1, keepdims=True))
    np.testing.assert_allclose(model.predict_proba(x), e / e.sum(axis=1, keepdims=True), rtol=1e-5)


def test_a_fused_pool_refuses_any_input_but_its_convolutions_output():
    conv, pool = Conv2D(1, 2), MaxPool2D()
    conv.fuse(pool)
    x = inputs((3, 4, 4, 1), 1)
    pooled = conv.forward(x, train=True)
    assert pool.forward(pooled, train=True) is pooled
    with pytest.raises(RuntimeError, match="fused with the convolution before it"):
        pool.forward(inputs((3, 4, 4, 2), 2), train=True)


@pytest.mark.parametrize("make", [
    lambda: SGD(0.1, 5), lambda: Momentum(0.9, 0.1, 5), lambda: Nesterov(0.9, 0.1, 5),
    lambda: Adam(weight_decay=0.1, n_decay=5), lambda: AdamW(weight_decay=0.1, n_decay=5)],
    ids=["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_an_optimiser_step_leaves_the_gradient_as_it_was(make):
    optimizer = make()
    w, g = inputs((9,), 1), inputs((9,), 2)
    g_was = g.copy()
    for _ in range(2):
        optimizer.step(w, g, 0.01)
    np.testing.assert_array_equal(g, g_was)


def test_the_trainers_loss_step_gives_its_gradient_in_the_logits_it_was_handed():
    # train.py hands the logits over as `out`: the one place an array is written by choice.
    logits = inputs((4, 3), 1)
    loss, grad = softmax_cross_entropy(logits, np.array([0, 1, 2, 0]), out=logits)
    assert grad is logits and np.isfinite(loss)
