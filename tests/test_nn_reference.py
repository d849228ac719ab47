"""The fast layers and optimisers held to the textbook maths of nn.reference, on odd sizes and ties.

The fast forms run in float32, as in a network; the reference runs in float64 on the same
float32 values. Values are compared relative to their scale: the largest difference may be
RTOL times the largest reference value (float32 carries about 6e-8, and a sum of a few hundred
terms rounds to a few times that). The layers here run on their own, as plain functions;
tests/test_nn_ownership.py holds each layer chained as a Model runs it (buffers reused, work in
place) to the same bytes.
"""

import numpy as np
import pytest

from mnist_pipeline.nn import conv, parallel, reference
from mnist_pipeline.nn.activations import ReLU
from mnist_pipeline.nn.conv import Conv2D, MaxPool2D
from mnist_pipeline.nn.layers import BatchNorm, Dense, Dropout
from mnist_pipeline.nn.losses import softmax_cross_entropy
from mnist_pipeline.nn.model import Model, architecture
from mnist_pipeline.nn.optim import SGD, Adam, AdamW, Momentum, Nesterov
from mnist_pipeline.nn.parallel import SERIAL, Workers
from mnist_pipeline.nn.settings import TrainSettings

RTOL = 1e-5


def assert_close(actual, expected, rtol=RTOL, what="", scale=None):
    """max |actual - expected| <= rtol * scale: float32 rounding, relative to the scale.

    The scale is max |expected| unless given: a gradient that is zero in exact arithmetic (a
    bias just before batch norm) is compared on the scale of its layer's other gradients.
    """
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape}, expected {expected.shape}"
    if scale is None:
        scale = max(float(np.abs(expected).max(initial=0.0)), 1e-30)
    error = float(np.abs(actual - expected).max(initial=0.0))
    assert error <= rtol * scale, f"{what}: off by {error:.3g}, {error / scale:.2e} of the scale {scale:.3g}"


@pytest.fixture
def rng():
    return np.random.default_rng(2024)


def f32(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def randomised(layer, rng):
    for param in layer.params.values():
        param[...] = rng.standard_normal(param.shape)
    return layer


def assert_weighted_layer_matches(layer, x, dout, ref_forward, ref_backward):
    """A layer with weights W and bias b against its reference pair: out, dx, dW and db.

    ref_forward(x, W, b) -> out; ref_backward(dout, x, W) -> (dx, dW, db).
    """
    W, b = layer.params["W"].copy(), layer.params["b"].copy()
    out = layer.forward(x, train=True)
    dx = layer.backward(dout)
    assert_close(out, ref_forward(x, W, b), what="out")
    ref_dx, ref_dW, ref_db = ref_backward(dout, x, W)
    assert_close(dx, ref_dx, what="dx")
    assert_close(layer.grads["W"], ref_dW, what="dW")
    assert_close(layer.grads["b"], ref_db, what="db")


def tied_windows(a):
    """How many 2x2 pooling windows of a (n, H, W, C) have their maximum more than once."""
    n, H, W, C = a.shape
    windows = a[:, : H // 2 * 2, : W // 2 * 2].reshape(n, H // 2, 2, W // 2, 2, C)
    top = windows.max(axis=(2, 4), keepdims=True)
    return int(((windows == top).sum(axis=(2, 4)) > 1).sum())


@pytest.fixture(params=[1, 2], ids=["serial", "two-workers"])
def workers(request):
    if request.param == 1:
        yield SERIAL
        return
    with Workers(request.param) as pool:
        yield pool


# Dense -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n,n_in,n_out", [(7, 13, 5), (1, 3, 1), (13, 257, 31)])
def test_dense_matches_the_reference(n, n_in, n_out, rng):
    layer = randomised(Dense(n_in, n_out), rng)
    assert_weighted_layer_matches(layer, f32(rng, n, n_in), f32(rng, n, n_out), reference.dense_forward,
                                  reference.dense_backward)


# Batch norm ------------------------------------------------------------------------------


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", [(7, 13), (7, 5, 7, 3)], ids=["dense", "nhwc"])
def test_batch_norm_matches_the_reference(shape, train, rng):
    F = shape[-1]
    layer = BatchNorm(F, momentum=0.8)
    layer.params["gamma"][...] = rng.uniform(0.5, 2.0, F)
    layer.params["beta"][...] = rng.standard_normal(F)
    layer.buffers["running_mean"][...] = rng.standard_normal(F)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, F)
    gamma, beta = layer.params["gamma"].copy(), layer.params["beta"].copy()
    running = {name: value.copy() for name, value in layer.buffers.items()}
    # Off-centre and unequal scales, so that the mean and variance matter.
    x = (rng.standard_normal(shape) * rng.uniform(0.1, 5.0, F) + rng.uniform(-3, 3, F)).astype(np.float32)
    dout = f32(rng, *shape)
    out = layer.forward(x, train=train)
    dx = layer.backward(dout)
    ref_out, cache = reference.batch_norm_forward(x, gamma, beta, running["running_mean"], running["running_var"],
                                                  train, momentum=0.8, eps=layer.eps)
    assert_close(out, ref_out, what="out")
    for name in ("running_mean", "running_var"):
        assert_close(layer.buffers[name], cache[name], what=name)
    ref_dx, ref_dgamma, ref_dbeta = reference.batch_norm_backward(dout, cache)
    assert_close(dx, ref_dx, what="dx")
    assert_close(layer.grads["gamma"], ref_dgamma, what="dgamma")
    assert_close(layer.grads["beta"], ref_dbeta, what="dbeta")


# Dropout -----------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0.1, 0.4])
def test_dropout_is_inverted_dropout_with_the_mask_it_drew(rate, rng):
    layer = Dropout(rate)
    layer.rng = np.random.default_rng(3)
    x = rng.uniform(0.5, 2.0, (7, 13)).astype(np.float32) * rng.choice([-1, 1], (7, 13))  # no zeros
    dout = f32(rng, 7, 13)
    out = layer.forward(x, train=True)
    dx = layer.backward(dout)
    # The mask is drawn as 16-bit integers (layers.Dropout), so the rate it keeps to, and scales
    # by, is the nearest multiple of 1/65536; which units were kept shows in the output.
    effective = round(rate * Dropout.LEVELS) / Dropout.LEVELS
    keep = out != 0
    assert 0 < keep.sum() < keep.size
    assert_close(out, reference.dropout_forward(x, keep, effective), what="out")
    assert_close(dx, reference.dropout_backward(dout, keep, effective), what="dx")
    # Inference is the identity.
    np.testing.assert_array_equal(layer.forward(x, train=False), x)


# Convolution and pooling -----------------------------------------------------------------


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("shape", [(7, 5, 7, 3), (7, 5, 7, 5), (2, 1, 3, 2)],
                         ids=["patches-tap-by-tap", "patches-position-by-position", "image-smaller-than-kernel"])
def test_conv_matches_the_reference(shape, k, rng, workers, monkeypatch):
    monkeypatch.setattr(conv, "SAMPLES", 3)  # several blocks of images, the last one short
    layer = randomised(Conv2D(shape[-1], 4, kernel_size=k), rng)
    layer.workers = workers
    assert_weighted_layer_matches(layer, f32(rng, *shape), f32(rng, *shape[:-1], 4), reference.conv2d_forward,
                                  reference.conv2d_backward)


@pytest.mark.parametrize("shape", [(7, 5, 7, 3), (7, 6, 6, 2)], ids=["odd", "even"])
def test_max_pool_matches_the_reference_on_ties(shape, rng):
    # Values from {0, 1, 2}: most windows hold equal maxima, some all four equal.
    x = rng.integers(0, 3, shape).astype(np.float32)
    ref_out, winner = reference.max_pool_forward(x)
    assert tied_windows(x) > 0, "no ties drawn"
    layer = MaxPool2D()
    out = layer.forward(x, train=True)
    dout = f32(rng, *out.shape)
    dx = layer.backward(dout)
    # Pure selection and routing: exactly equal, not just close.
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(dx, reference.max_pool_backward(dout, winner, shape))


def test_max_pool_gives_a_tied_window_s_gradient_to_its_first_corner_in_row_order():
    x = np.zeros((1, 2, 2, 1), np.float32)
    x[0, 0, 0, 0] = -1  # the (0, 1), (1, 0), (1, 1) corners tie: (0, 1) is first
    layer = MaxPool2D()
    layer.forward(x, train=True)
    dx = layer.backward(np.ones((1, 1, 1, 1), np.float32))
    expected = reference.max_pool_backward(np.ones((1, 1, 1, 1)), reference.max_pool_forward(x)[1], x.shape)
    assert expected[0, :, :, 0].tolist() == [[0, 1], [0, 0]]
    np.testing.assert_array_equal(dx, expected)


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "conv-then-pool"])
@pytest.mark.parametrize("shape", [(7, 5, 7, 3), (7, 6, 6, 4), (3, 3, 5, 1)], ids=["odd", "even", "one-channel"])
def test_conv_and_pool_as_the_model_builds_them_match_reference_conv_then_reference_pool(shape, fused, rng, workers,
                                                                                         monkeypatch):
    monkeypatch.setattr(conv, "SAMPLES", 3)
    x = f32(rng, *shape)
    # A constant band: the patches inside it are equal, so their outputs tie within a window,
    # and the tie must go to the same corner as the reference's.
    x[:, :2] = 0.25
    layer, pool = randomised(Conv2D(shape[-1], 4), rng), MaxPool2D()
    layer.workers = pool.workers = workers
    if fused:
        layer.fuse(pool)  # what Model does for a conv2d followed by a max_pool
    W, b = layer.params["W"].copy(), layer.params["b"].copy()
    out = pool.forward(layer.forward(x, train=True), train=True)
    dout = f32(rng, *out.shape)
    dx = layer.backward(pool.backward(dout))

    maps = reference.conv2d_forward(x, W, b)
    ref_out, winner = reference.max_pool_forward(maps)
    assert tied_windows(maps) > 0, "no ties"
    assert_close(out, ref_out, what="out")
    ref_dx, ref_dW, ref_db = reference.conv2d_backward(reference.max_pool_backward(dout, winner, maps.shape), x, W)
    assert_close(dx, ref_dx, what="dx")
    assert_close(layer.grads["W"], ref_dW, what="dW")
    assert_close(layer.grads["b"], ref_db, what="db")


# Loss --------------------------------------------------------------------------------------


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_softmax_cross_entropy_matches_the_reference(smoothing, rng):
    logits = (f32(rng, 7, 13) * 4).astype(np.float32)
    labels = rng.integers(0, 13, 7)
    ref_loss, ref_grad = reference.softmax_cross_entropy(logits, labels, smoothing)
    loss, dlogits = softmax_cross_entropy(logits, labels, smoothing)
    assert loss == pytest.approx(ref_loss, rel=RTOL)
    assert_close(dlogits, ref_grad, what="dlogits")


# Optimisers --------------------------------------------------------------------------------

OPTIMISERS = {
    "sgd": (lambda wd, n: SGD(wd, n), reference.sgd_step, {}),
    "momentum": (lambda wd, n: Momentum(0.8, wd, n), reference.momentum_step, {"momentum": 0.8}),
    "nesterov": (lambda wd, n: Nesterov(0.8, wd, n), reference.nesterov_step, {"momentum": 0.8}),
    "adam": (lambda wd, n: Adam((0.8, 0.95), 1e-8, wd, n), reference.adam_step, {"betas": (0.8, 0.95)}),
    "adamw": (lambda wd, n: AdamW((0.8, 0.95), 1e-8, wd, n), reference.adamw_step, {"betas": (0.8, 0.95)}),
}


@pytest.mark.parametrize("weight_decay", [0.0, 0.3], ids=["no-decay", "decay"])
@pytest.mark.parametrize("name", list(OPTIMISERS))
def test_optimiser_steps_match_the_textbook_updates(name, weight_decay, rng):
    make, textbook, keys = OPTIMISERS[name]
    n, n_decay, lr = 13, 8, 0.05  # decay on the first 8 entries only, as on a model's weights
    optimizer = make(weight_decay, n_decay)
    w = f32(rng, n)
    ref_w, state = w.astype(np.float64), {}
    for step in range(6):
        g = f32(rng, n)
        w0 = w.copy()
        optimizer.step(w, g, lr)
        ref_w, state = textbook(ref_w, g, state, lr, weight_decay=weight_decay, n_decay=n_decay, **keys)
        assert_close(w, ref_w, what=f"w after step {step + 1}")
        # The step itself, not just where it lands (w's own rounding would hide a small error).
        assert_close(w - w0, ref_w - w0, rtol=1e-4, what=f"step {step + 1}")
    if name in ("momentum", "nesterov"):
        assert_close(optimizer.velocity, state["v"], what="velocity")
    if name in ("adam", "adamw"):
        # optim.Adam keeps its moments divided by (1 - beta): m' = m / (1 - b1), v' = v / (1 - b2).
        b1, b2 = keys["betas"]
        assert optimizer.t == state["t"]
        assert_close(optimizer.m * (1 - b1), state["m"], what="m")
        assert_close(optimizer.v * (1 - b2), state["v"], what="v")


@pytest.mark.parametrize("n_in,n_out", [(1024, 520)])
def test_dense_cut_into_column_blocks_over_two_workers_matches_the_reference(n_in, n_out, rng):
    layer = randomised(Dense(n_in, n_out), rng)
    n = 64
    # Large enough that forward and backward each cut their products into blocks (MIN_PRODUCT).
    assert len(layer.weight_blocks(n)) > 1
    with Workers(2) as pool:
        layer.workers = pool
        assert_weighted_layer_matches(layer, f32(rng, n, n_in), f32(rng, n, n_out), reference.dense_forward,
                                      reference.dense_backward)


# The whole network -------------------------------------------------------------------------


def reference_network(model, x, labels):
    """The loss and every parameter's gradient of `model`, by the reference functions alone:
    (loss, {(layer index, parameter name): gradient}). A fused conv is a plain conv here, and
    the max-pool after it a plain pool."""
    caches, a = [], np.asarray(x, np.float64)
    for layer in model.layers:
        params = {name: value.copy() for name, value in layer.params.items()}
        if isinstance(layer, Dense):
            cache, a = (a, params["W"]), reference.dense_forward(a, params["W"], params["b"])
        elif isinstance(layer, Conv2D):
            cache, a = (a, params["W"]), reference.conv2d_forward(a, params["W"], params["b"])
        elif isinstance(layer, MaxPool2D):
            shape = a.shape
            a, winner = reference.max_pool_forward(a)
            cache = (winner, shape)
        elif isinstance(layer, BatchNorm):
            a, cache = reference.batch_norm_forward(a, params["gamma"], params["beta"], layer.buffers["running_mean"],
                                                    layer.buffers["running_var"], True, layer.momentum, layer.eps)
        elif isinstance(layer, ReLU):
            cache, a = a, reference.relu_forward(a)
        else:  # reshape, flatten
            cache, a = a.shape, a.reshape(len(a), *layer.output_shape(a.shape[1:]))
        caches.append(cache)
    loss, d = reference.softmax_cross_entropy(a, labels)
    grads = {}
    for i in range(len(model.layers) - 1, -1, -1):
        layer, cache = model.layers[i], caches[i]
        if isinstance(layer, Dense | Conv2D):
            backward = reference.dense_backward if isinstance(layer, Dense) else reference.conv2d_backward
            d, grads[i, "W"], grads[i, "b"] = backward(d, *cache)
        elif isinstance(layer, MaxPool2D):
            d = reference.max_pool_backward(d, *cache)
        elif isinstance(layer, BatchNorm):
            d, grads[i, "gamma"], grads[i, "beta"] = reference.batch_norm_backward(d, cache)
        elif isinstance(layer, ReLU):
            d = reference.relu_backward(d, cache)
        else:
            d = d.reshape(cache)
    return loss, grads


def built_model(rng, **settings):
    """A Model as training builds it from TrainSettings, with random weights and no dropout."""
    n_inputs, image_shape = settings.pop("n_inputs"), settings.pop("image_shape", None)
    arch = architecture(TrainSettings(dropout=0.0, activation="relu", batch_norm=True, **settings), n_inputs, 10,
                        image_shape)
    model = Model(arch)
    model.initialize("he", rng)
    for layer in model.layers:
        if isinstance(layer, BatchNorm):
            layer.params["gamma"][...] = rng.uniform(0.5, 2.0, layer.n_features)
            layer.params["beta"][...] = rng.standard_normal(layer.n_features)
        for name in ("b",) if "b" in layer.params else ():
            layer.params[name][...] = rng.standard_normal(layer.params[name].shape) * 0.1
    return model


def test_a_cnn_as_the_model_builds_it_matches_the_reference_network(rng, monkeypatch):
    monkeypatch.setattr(conv, "SAMPLES", 3)
    model = built_model(rng, model="cnn", conv_channels=(3, 4), hidden=(13,), n_inputs=10 * 14, image_shape=(10, 14))
    convs = [layer for layer in model.layers if isinstance(layer, Conv2D)]
    assert len(convs) == 2 and all(isinstance(layer.pool, MaxPool2D) for layer in convs), "the model fuses conv+pool"
    x = f32(rng, 7, 10 * 14)
    x[:, :28] = 0.5  # two constant image rows: tied conv outputs in the first pool's windows
    labels = rng.integers(0, 10, 7)
    ref_loss, ref_grads = reference_network(model, x, labels)
    loss, dlogits = softmax_cross_entropy(model.forward(x, train=True), labels)
    model.backward(dlogits)
    assert loss == pytest.approx(ref_loss, rel=RTOL)
    assert set(ref_grads) == {(i, name) for i, layer in enumerate(model.layers) for name in layer.grads}
    for (i, name), expected in ref_grads.items():
        # Conv and dense biases feed a batch norm, which cancels them: their gradient is 0 in
        # exact arithmetic and rounding in both; measured on the scale of the layer's weights.
        scale = max(float(np.abs(ref_grads[i, other]).max()) for other in model.layers[i].grads)
        assert_close(model.layers[i].grads[name], expected, what=f"layer {i} ({model.layers[i].kind}) d{name}",
                     scale=scale)


@pytest.mark.parametrize("threads", [1, 2])
def test_an_mlp_as_the_model_builds_it_matches_the_reference_network_in_training_and_inference(threads, rng,
                                                                                               monkeypatch):
    # Each dense layer's products cut into several blocks of columns, spread over the workers.
    monkeypatch.setattr(parallel, "MIN_PRODUCT", 1 << 20)
    model = built_model(rng, model="mlp", hidden=(520, 300), n_inputs=1024)
    assert [len(layer.weight_blocks(64)) for layer in model.layers if isinstance(layer, Dense)] == [4, 4, 1]
    x, labels = f32(rng, 64, 1024), rng.integers(0, 10, 64)
    ref_loss, ref_grads = reference_network(model, x, labels)
    with Workers(threads) as pool:
        model.set_workers(pool)
        loss, dlogits = softmax_cross_entropy(model.forward(x, train=True), labels)
        model.backward(dlogits)
        assert loss == pytest.approx(ref_loss, rel=RTOL)
        for (i, name), expected in ref_grads.items():
            scale = max(float(np.abs(ref_grads[i, other]).max()) for other in model.layers[i].grads)
            assert_close(model.layers[i].grads[name], expected, what=f"layer {i} ({model.layers[i].kind}) d{name}",
                         scale=scale)
        # Inference, with the running statistics the training pass left.
        expected_logits = x.astype(np.float64)
        for layer in model.layers:
            if isinstance(layer, Dense):
                expected_logits = reference.dense_forward(expected_logits, layer.params["W"], layer.params["b"])
            elif isinstance(layer, BatchNorm):
                expected_logits = reference.batch_norm_forward(
                    expected_logits, layer.params["gamma"], layer.params["beta"], layer.buffers["running_mean"],
                    layer.buffers["running_var"], train=False, eps=layer.eps)[0]
            else:
                expected_logits = np.maximum(expected_logits, 0)
        assert_close(model.forward(x), expected_logits, what="inference logits")


@pytest.mark.parametrize("name", ["momentum", "adam", "adamw"])
def test_a_step_made_during_backward_matches_the_textbook_step(name, rng):
    # A hidden layer of 1024 -> 520 on 64 rows: its weight gradient comes in blocks, and
    # Model.backward updates each block on the worker that computed it (Dense.backward_deferred).
    model = built_model(rng, model="mlp", hidden=(520,), n_inputs=1024)
    assert len(model.layers[0].weight_blocks(64)) > 1
    x, labels = f32(rng, 64, 1024), rng.integers(0, 10, 64)
    make, textbook, keys = OPTIMISERS[name]
    optimizer, lr = make(0.01, model.n_decay), 0.05
    # The gradient a plain backward gives, on a twin: first held to the reference network's,
    # laid out as the flat vector through the twin's views.
    twin = Model(model.architecture)
    twin.flat_params[...] = model.flat_params
    twin.backward(softmax_cross_entropy(twin.forward(x, train=True), labels)[1])
    fast_grads = twin.flat_grads.copy()
    _, ref_grads = reference_network(model, x, labels)
    for (i, param), grad in ref_grads.items():
        twin.layers[i].grads[param][...] = grad
    assert_close(fast_grads, twin.flat_grads, what="gradient")
    w0 = model.flat_params.copy()
    with Workers(2) as pool:
        model.set_workers(pool)
        optimizer.workers = pool
        _, dlogits = softmax_cross_entropy(model.forward(x, train=True), labels)
        optimizer.begin(model.flat_params, model.flat_grads, lr)
        model.backward(dlogits, optimizer)
    # Adam's first step is lr * g / (|g| + eps): for the entries whose gradient is rounding
    # noise (the biases before batch norm, 0 in exact arithmetic) it is +-lr whichever noise it
    # is, so the step is held to the textbook step on the fast gradient, not on the reference's.
    ref_w, _ = textbook(w0, fast_grads, {}, lr, weight_decay=0.01, n_decay=model.n_decay, **keys)
    step, ref_step = model.flat_params - w0, ref_w - w0
    if name != "momentum":
        # The same holds wherever |g'| (g + wd * w for Adam's L2) comes near eps = 1e-8: there the
        # step's slope in g' is lr * eps / (|g'| + eps)^2, some 1e6, and float32's rounding of
        # g + wd * w where the two nearly cancel moves the step by 1e-5. Those entries are only
        # held to |step| <= lr; the rest to the textbook.
        g = fast_grads.astype(np.float64)
        if name == "adam":
            g += 0.01 * w0 * (np.arange(g.size) < model.n_decay)
        conditioned = np.abs(g) >= 100 * 1e-8
        assert conditioned.mean() > 0.95
        assert np.abs(step[~conditioned]).max(initial=0.0) <= lr * (1 + RTOL)
        step, ref_step = step[conditioned], ref_step[conditioned]
    assert_close(step, ref_step, rtol=1e-4, what="step")
