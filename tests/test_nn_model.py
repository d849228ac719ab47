"""The whole network: architectures, end-to-end gradient checks in float64, the model file."""

import json
import os
import stat

import numpy as np
import pytest

from hostile import crafted_model, declared_only, write_npz
from mnist_pipeline.errors import ConfigError, ModelFormatError
from mnist_pipeline.nn.gradcheck import numerical_gradient, relative_error
from mnist_pipeline.nn.losses import softmax_cross_entropy
from mnist_pipeline.nn.model import FORMAT_VERSION, LoadedModel, Model, architecture, load_model, max_conv_blocks, save_model
from mnist_pipeline.nn.settings import TrainSettings

SHAPE_KEYS = {"model": "mlp", "hidden": [256, 128], "conv_channels": [32, 64], "activation": "relu",
              "dropout": 0.0, "batch_norm": False}


def shape_settings(**overrides):
    return TrainSettings(**{**SHAPE_KEYS, **overrides})


def kinds(arch):
    return [layer["type"] for layer in arch["layers"]]


def test_mlp_architecture():
    arch = architecture(shape_settings(dropout=0.2, batch_norm=True, activation="tanh"), 784, 10)
    assert kinds(arch) == ["dense", "batch_norm", "tanh", "dropout"] * 2 + ["dense"]
    assert arch["layers"][-1] == {"type": "dense", "n_in": 128, "n_out": 10}
    assert json.loads(json.dumps(arch)) == arch
    # 784*256+256 + 256*128+128 + 128*10+10, plus gamma and beta of two batch norms
    assert Model(arch).n_parameters == 235146 + 2 * (256 + 128)


def test_cnn_architecture():
    arch = architecture(shape_settings(model="cnn", hidden=[128]), 784, 10)
    assert kinds(arch) == ["reshape"] + ["conv2d", "max_pool", "relu"] * 2 + ["flatten", "dense", "relu", "dense"]
    assert arch["layers"][-3] == {"type": "dense", "n_in": 7 * 7 * 64, "n_out": 128}


def test_cnn_takes_any_image_size_its_blocks_fit():
    arch = architecture(shape_settings(model="cnn", hidden=[8]), 20 * 12, 10, image_shape=(20, 12))
    assert arch["image_shape"] == [20, 12] and arch["layers"][0] == {"type": "reshape", "shape": [20, 12, 1]}
    assert arch["layers"][-3] == {"type": "dense", "n_in": 5 * 3 * 64, "n_out": 8}
    assert Model(arch).forward(np.zeros((2, 240), np.float32)).shape == (2, 10)
    assert max_conv_blocks((20, 20)) == 4 and max_conv_blocks((32, 32)) == 5 and max_conv_blocks((3, 40)) == 1


def test_cnn_whose_blocks_do_not_fit_is_refused_naming_the_size_and_the_fit():
    with pytest.raises(ConfigError, match=r"conv_channels: \[4, 4, 4, 4, 4\] is 5 conv-pool blocks, but a 20x20 image fits at most 4"):
        architecture(shape_settings(model="cnn", conv_channels=[4] * 5), 400, 10, image_shape=(20, 20))
    with pytest.raises(ConfigError, match="6 conv-pool blocks, but a 28x28 image fits at most 4"):
        architecture(shape_settings(model="cnn", conv_channels=[4] * 6), 784, 10)


def test_an_architecture_a_model_file_may_not_declare_is_refused_before_training():
    with pytest.raises(ConfigError, match=r"^1024x1024 images: architecture.layers\[1\] \(conv2d\) holds 33,554,432 values per "
                                          r"image, more than the 16,777,216 a model may .*; use smaller images, or fewer channels$"):
        architecture(shape_settings(model="cnn", conv_channels=[32], hidden=[]), 1024 * 1024, 3, (1024, 1024))
    assert architecture(shape_settings(model="cnn", conv_channels=[32], hidden=[]), 512 * 512, 3, (512, 512))


def test_model_files_without_an_image_size_are_28x28():
    arch = architecture(shape_settings(hidden=[4]), 784, 10)
    del arch["image_shape"]
    assert LoadedModel(Model(arch), {}, [], {}).image_shape == (28, 28)


def model_gradient_errors(settings, n_inputs, *, seed=0):
    """Relative error of backprop against centred differences of the mean loss, every parameter."""
    rng = np.random.default_rng(seed)
    model = Model(architecture(settings, n_inputs, 3), dtype=np.float64)
    model.initialize("glorot", rng)
    # Random, not initial, scales and shifts, so batch norm's gradients are not trivially simple.
    model.flat_params[model.n_decay:] = rng.standard_normal(model.n_parameters - model.n_decay)
    x = rng.standard_normal((5, n_inputs))
    y = rng.integers(0, 3, 5)

    def loss():
        model.set_dropout_rng(np.random.default_rng(99))
        return softmax_cross_entropy(model.forward(x, train=True), y, 0.1)[0]

    model.set_dropout_rng(np.random.default_rng(99))
    _, dlogits = softmax_cross_entropy(model.forward(x, train=True), y, 0.1)
    model.backward(dlogits)
    analytic = model.flat_grads.copy()
    # A dense bias right before batch norm has an exact zero gradient: hence the floor.
    return relative_error(analytic, numerical_gradient(loss, model.flat_params), floor=1e-4)


@pytest.mark.parametrize("activation", ["relu", "leaky_relu", "tanh", "sigmoid"])
def test_mlp_gradients(activation):
    settings = shape_settings(hidden=[7, 6], activation=activation, batch_norm=True, dropout=0.3)
    assert model_gradient_errors(settings, 8) < 1e-6


@pytest.mark.parametrize("batch_norm", [False, True])
def test_cnn_gradients(batch_norm):
    settings = shape_settings(model="cnn", conv_channels=[2, 3], hidden=[4], batch_norm=batch_norm)
    assert model_gradient_errors(settings, 64) < 1e-6


def test_parameters_live_in_one_flat_vector_decayed_weights_first():
    model = Model(architecture(shape_settings(hidden=[4], batch_norm=True), 6, 3))
    dense0, bn, dense1 = (layer for layer in model.layers if layer.params)
    assert model.n_decay == 6 * 4 + 4 * 3
    assert np.shares_memory(dense0.params["W"], model.flat_params[:24])
    assert np.shares_memory(dense1.params["W"], model.flat_params[24:36])
    assert np.shares_memory(bn.grads["gamma"], model.flat_grads)
    assert np.shares_memory(bn.buffers["running_var"], model.flat_buffers)


def test_predict_proba_is_float32_and_sums_to_one():
    model = Model(architecture(shape_settings(hidden=[5]), 6, 3))
    model.initialize("he", np.random.default_rng(0))
    x = np.random.default_rng(1).standard_normal((2500, 6)).astype(np.float32)
    p = model.predict_proba(x, batch_size=1000)
    assert p.shape == (2500, 3) and p.dtype == np.float32
    np.testing.assert_allclose(p.sum(axis=1), 1, rtol=1e-5)
    np.testing.assert_array_equal(p, model.predict_proba(x))


def trained_looking_model(model_kind="mlp"):
    settings = shape_settings(model=model_kind, hidden=[5], conv_channels=[2], batch_norm=True)
    model = Model(architecture(settings, 16, 3))
    rng = np.random.default_rng(3)
    model.flat_params[...] = rng.standard_normal(model.n_parameters)
    model.flat_buffers[...] = rng.uniform(0.5, 1.5, model.flat_buffers.size)
    return model


@pytest.mark.parametrize("model_kind", ["mlp", "cnn"])
def test_save_load_round_trip(tmp_path, model_kind):
    model = trained_looking_model(model_kind)
    path = tmp_path / "model.npz"
    save_model(path, model, normalization={"mean": 0.25, "std": 0.5}, classes=["a", "b", "c"],
               metadata={"experiment": "baseline", "seed": 0})
    loaded = load_model(path)
    assert loaded.normalization == {"mean": 0.25, "std": 0.5}
    assert loaded.classes == ["a", "b", "c"]
    assert loaded.metadata == {"experiment": "baseline", "seed": 0}
    assert loaded.model.architecture == model.architecture
    np.testing.assert_array_equal(loaded.model.flat_params, model.flat_params)
    np.testing.assert_array_equal(loaded.model.flat_buffers, model.flat_buffers)
    x = np.random.default_rng(0).standard_normal((7, 16)).astype(np.float32)
    np.testing.assert_array_equal(loaded.model.predict_proba(x), model.predict_proba(x))
    # An ordinary .npz: NumPy alone can read it, without pickles.
    with np.load(path, allow_pickle=False) as archive:
        assert json.loads(str(archive["header"]))["format_version"] == FORMAT_VERSION
    assert [p.name for p in tmp_path.iterdir()] == ["model.npz"], "a temporary file was left behind"


def test_saving_is_byte_deterministic(tmp_path):
    model = trained_looking_model()
    for name in ("a.npz", "b.npz"):
        save_model(tmp_path / name, model, normalization={"mean": 0.1, "std": 0.3}, classes=list("xyz"), metadata={})
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()


@pytest.mark.parametrize("umask", [0o022, 0o027], ids=["umask-022", "umask-027"])
def test_the_model_file_is_readable_like_every_other_output(tmp_path, umask):
    old = os.umask(umask)
    try:
        save_model(tmp_path / "model.npz", trained_looking_model(), normalization={}, classes=list("abc"), metadata={})
        (tmp_path / "metrics.json").write_text("{}")
    finally:
        os.umask(old)
    mode = stat.S_IMODE((tmp_path / "model.npz").stat().st_mode)
    assert mode == stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask


def test_a_file_that_is_not_a_model_is_a_clear_error(tmp_path):
    text = tmp_path / "notes.npz"
    text.write_text("not a zip file at all")
    with pytest.raises(ModelFormatError) as caught:
        load_model(text)
    assert str(caught.value) == (
        f"{text}: not a model file: expected an .npz archive written by mnist-pipeline"
        " (a zip file, starting with b'PK\\x03\\x04'), but it starts with b'not '"
    )
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ModelFormatError, match=r"empty.npz: not a model file: .* but it is empty \(0 bytes\)"):
        load_model(tmp_path / "empty.npz")
    other = tmp_path / "other.npz"
    write_npz(other, {"weights": np.zeros(3)})
    with pytest.raises(ModelFormatError, match="other.npz: not a model file"):
        load_model(other)
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_model(tmp_path / "missing.npz")


def test_an_entry_declaring_a_huge_array_is_a_clear_error(tmp_path):
    save_model(tmp_path / "huge.npz", trained_looking_model(), normalization={"mean": 0.5, "std": 0.25}, classes=list("abc"),
               metadata={})
    declared_only(tmp_path / "huge.npz", "layer0.W", (10**11,))  # 400 GB declared, nothing stored
    with pytest.raises(ModelFormatError) as caught:
        load_model(tmp_path / "huge.npz")
    assert str(caught.value) == f"{tmp_path}/huge.npz: layer0.W.npy declares float32[100000000000], but holds 0 bytes of data"


def test_a_future_format_version_is_a_clear_error(tmp_path):
    save_model(tmp_path / "m.npz", trained_looking_model(), normalization={"mean": 0.5, "std": 0.25}, classes=list("abc"),
               metadata={})
    crafted_model(tmp_path / "m.npz", tmp_path / "future.npz", lambda h: h.update(format_version=FORMAT_VERSION + 1))
    with pytest.raises(ModelFormatError, match=rf"future.npz: model format version {FORMAT_VERSION + 1} is newer"):
        load_model(tmp_path / "future.npz")


def test_weights_that_do_not_fit_the_architecture_are_a_clear_error(tmp_path):
    save_model(tmp_path / "m.npz", trained_looking_model(), normalization={"mean": 0.5, "std": 0.25}, classes=list("abc"),
               metadata={})

    def widen(header):
        header["architecture"]["layers"][0]["n_out"] = 6
        header["architecture"]["layers"][1]["n_features"] = 6
        header["architecture"]["layers"][3]["n_in"] = 6

    crafted_model(tmp_path / "m.npz", tmp_path / "bad.npz", widen)
    with pytest.raises(ModelFormatError,
                       match=r"bad.npz: array layer0.W is float32\[16, 5\], but the architecture declares float32\[16, 6\]$"):
        load_model(tmp_path / "bad.npz")
