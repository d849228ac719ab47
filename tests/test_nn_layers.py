"""Gradient checks of every layer in float64, and the float32 and buffer contracts they keep."""

import numpy as np
import pytest

from mnist_pipeline.nn import conv
from mnist_pipeline.nn.activations import ACTIVATIONS, LeakyReLU, ReLU, Sigmoid, Tanh
from mnist_pipeline.nn.conv import Conv2D, MaxPool2D
from mnist_pipeline.nn.gradcheck import check_layer
from mnist_pipeline.nn.layers import BatchNorm, Dense, Dropout, Flatten, Reshape

TOLERANCE = 1e-6


def randomised(layer, rng):
    """The layer with every parameter drawn at random, so no gradient is trivially zero."""
    for param in layer.params.values():
        param[...] = rng.standard_normal(param.shape)
    return layer


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def assert_gradients_match(errors):
    assert errors, "nothing was checked"
    worst = max(errors, key=errors.get)
    assert errors[worst] < TOLERANCE, f"gradient of {worst} is off: relative error {errors[worst]:.2e}"


def test_dense(rng):
    layer = randomised(Dense(5, 4, dtype=np.float64), rng)
    errors = check_layer(layer, rng.standard_normal((3, 5)))
    assert set(errors) == {"x", "W", "b"}
    assert_gradients_match(errors)


@pytest.mark.parametrize("cls", [ReLU, LeakyReLU, Tanh, Sigmoid])
def test_activations(cls, rng):
    assert_gradients_match(check_layer(cls(), rng.standard_normal((4, 6))))


def test_activation_values():
    x = np.array([[-2.0, -0.5, 0.5, 3.0]], np.float32)
    np.testing.assert_array_equal(ReLU().forward(x), [[0, 0, 0.5, 3]])
    np.testing.assert_allclose(LeakyReLU(0.1).forward(x), [[-0.2, -0.05, 0.5, 3]], rtol=1e-6)
    np.testing.assert_allclose(Tanh().forward(x), np.tanh(x), rtol=1e-6)
    np.testing.assert_allclose(Sigmoid().forward(x), 1 / (1 + np.exp(-x)), rtol=1e-6)
    # exp(1000) overflows; the sigmoid of -1000 is still exactly 0, with no warning raised.
    with np.errstate(all="raise"):
        assert Sigmoid().forward(np.array([[-1000.0, 1000.0]], np.float32)).tolist() == [[0.0, 1.0]]


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("shape", [(8, 4), (2, 3, 3, 4)], ids=["dense", "nhwc"])
def test_batch_norm(train, shape, rng):
    layer = randomised(BatchNorm(4, dtype=np.float64), rng)
    layer.buffers["running_mean"][...] = rng.standard_normal(4)
    layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, 4)
    assert_gradients_match(check_layer(layer, rng.standard_normal(shape) * 3 + 1, train=train))


def test_batch_norm_normalises_and_tracks_running_statistics(rng):
    layer = BatchNorm(3)
    x = (rng.standard_normal((500, 3)) * [1.0, 5.0, 0.1] + [0.0, -3.0, 10.0]).astype(np.float32)
    out = layer.forward(x, train=True)
    np.testing.assert_allclose(out.mean(axis=0), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=0), 1, rtol=1e-3)
    # One step of the exponential average from (0, 1) towards the batch statistics.
    np.testing.assert_allclose(layer.buffers["running_mean"], 0.1 * x.mean(axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(layer.buffers["running_var"], 0.9 + 0.1 * x.var(axis=0), rtol=1e-4)


def test_dropout_gradient(rng):
    layer = Dropout(0.4)

    def same_mask():
        layer.rng = np.random.default_rng(7)

    assert_gradients_match(check_layer(layer, rng.standard_normal((6, 5)), before_forward=same_mask))


def test_dropout_drops_at_its_rate_and_keeps_the_expectation(rng):
    layer = Dropout(0.25)
    x = np.ones((400, 100), np.float32)
    out = layer.forward(x, train=True)
    assert abs(np.mean(out == 0) - 0.25) < 0.01
    assert abs(out.mean() - 1.0) < 0.02
    assert out.dtype == np.float32
    assert layer.forward(x, train=False) is x


def test_dropout_rate_is_a_multiple_of_1_65536_and_the_scale_follows_it():
    layer = Dropout(0.4)
    out = layer.forward(np.ones((64, 1024), np.float32), train=True)
    threshold = round(0.4 * 65536)
    np.testing.assert_array_equal(np.unique(out), np.float32([0, 65536 / (65536 - threshold)]))
    # A rate below half a level drops nothing: training is then the identity too.
    x = np.ones((4, 8), np.float32)
    assert Dropout(1e-6).forward(x, train=True) is x


@pytest.mark.parametrize("channels", [3, 5], ids=["patches-tap-by-tap", "patches-position-by-position"])
def test_conv(channels, rng):
    assert channels < conv.TAP_MAJOR_BELOW if channels == 3 else channels >= conv.TAP_MAJOR_BELOW
    layer = randomised(Conv2D(channels, 4, dtype=np.float64), rng)
    assert_gradients_match(check_layer(layer, rng.standard_normal((2, 5, 6, channels))))


@pytest.mark.parametrize("kernel_size,shape", [(5, (2, 4, 3, 2)), (7, (1, 2, 1, 2))])
def test_conv_kernel_larger_than_image(kernel_size, shape, rng):
    layer = randomised(Conv2D(2, 3, kernel_size=kernel_size, dtype=np.float64), rng)
    assert_gradients_match(check_layer(layer, rng.standard_normal(shape)))


def test_conv_matches_a_direct_convolution(rng):
    layer = randomised(Conv2D(2, 3, dtype=np.float64), rng)
    x = rng.standard_normal((2, 5, 4, 2))
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    W, b = layer.params["W"], layer.params["b"]
    expected = np.zeros((2, 5, 4, 3))
    for r in range(5):
        for c in range(4):
            expected[:, r, c] = np.einsum("nijc,ijcf->nf", padded[:, r : r + 3, c : c + 3], W) + b
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(2, 4, 6, 3), (2, 5, 7, 3)], ids=["even", "odd"])
def test_max_pool(shape, rng):
    assert_gradients_match(check_layer(MaxPool2D(), rng.standard_normal(shape)))


@pytest.mark.parametrize("shape", [(7, 6, 6, 2), (5, 7, 5, 3), (4, 5, 6, 6)], ids=["even", "odd", "more-channels"])
def test_a_conv_that_pools_its_own_blocks_gives_what_conv_then_pool_gives(shape, rng, monkeypatch):
    monkeypatch.setattr(conv, "SAMPLES", 3)  # several blocks, the last one short
    x = rng.standard_normal(shape).astype(np.float32)
    x[:, :2] = 0.25  # ties, which the recorded winners must route the same way
    apart = randomised(Conv2D(shape[-1], 4), rng), MaxPool2D()
    fused = Conv2D(shape[-1], 4), MaxPool2D()
    fused[0].params["W"][...], fused[0].params["b"][...] = apart[0].params["W"], apart[0].params["b"]
    fused[0].fuse(fused[1])
    outputs = [pool.forward(conv_.forward(x, train=True), train=True).copy() for conv_, pool in (apart, fused)]
    np.testing.assert_array_equal(outputs[0], outputs[1])
    dout = rng.standard_normal(outputs[0].shape).astype(np.float32)
    dxs = [conv_.backward(pool.backward(dout.copy())).copy() for conv_, pool in (apart, fused)]
    np.testing.assert_array_equal(dxs[0], dxs[1])
    # The fused layer sums the weight gradient over the patches in pooling-corner order and the
    # bias gradient over the pooled values: the same sums in another order, so equal to rounding.
    for name in ("W", "b"):
        np.testing.assert_allclose(fused[0].grads[name], apart[0].grads[name], rtol=1e-5, atol=1e-5)


def test_max_pool_routes_a_tie_to_one_input_only():
    layer = MaxPool2D()
    x = np.zeros((1, 2, 2, 1), np.float32)
    layer.forward(x, train=True)
    dx = layer.backward(np.ones((1, 1, 1, 1), np.float32))
    assert dx.sum() == 1.0 and dx[0, 0, 0, 0] == 1.0
    assert layer.forward(np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1)).ravel().tolist() == [5, 7, 13, 15]


@pytest.mark.parametrize("layer", [Flatten(), Reshape((6, 4))], ids=["flatten", "reshape"])
def test_reshapes(layer, rng):
    assert_gradients_match(check_layer(layer, rng.standard_normal((2, 4, 6, 1))))


@pytest.mark.parametrize(
    "layer,shape",
    [
        (Dense(6, 3), (4, 6)),
        (BatchNorm(6), (4, 6)),
        (Conv2D(2, 3), (2, 4, 4, 2)),
        (MaxPool2D(), (2, 4, 4, 2)),
        *[(cls(), (4, 6)) for cls in ACTIVATIONS.values()],
        (Dropout(0.5), (4, 6)),
    ],
    ids=lambda v: getattr(v, "kind", None),
)
def test_float32_in_float32_out(layer, shape, rng):
    x = rng.standard_normal(shape).astype(np.float32)
    out = layer.forward(x, train=True)
    dx = layer.backward(np.ones_like(out))
    assert out.dtype == np.float32 and dx.dtype == np.float32
    assert all(grad.dtype == np.float32 for grad in layer.grads.values())
