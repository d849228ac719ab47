"""The model file's checks: every crafted or damaged file is refused in one line naming it, before
anything it declares is allocated; and the schema the checks use is the layers' own."""

from __future__ import annotations

import inspect
import json
import re
import tracemalloc
import zipfile

import numpy as np
import pytest

from hostile import CRAFTED_MODELS, crafted_model, write_npz
from mnist_pipeline.errors import ModelFormatError
from mnist_pipeline.nn import TrainSettings
from mnist_pipeline.nn.model import LAYER_TYPES, Model, architecture, load_model, save_model
from mnist_pipeline.nn.modelfile import _REQUIRED, DECLARES, LAYER_KEYS, MAX_VALUES, ZIP_MAGIC, check_header

MB = 1 << 20
NORMALIZATION = {"mean": 0.25, "std": 0.5, "scale": 255.0}


def saved(path, settings: TrainSettings, n_inputs: int = 784, n_classes: int = 10, image_shape=None):
    """A model file of `settings`, its weights random but plausible, as the workflow would write it."""
    model = Model(architecture(settings, n_inputs, n_classes, image_shape))
    model.initialize("he", np.random.default_rng(0))
    model.flat_buffers[...] = np.random.default_rng(1).uniform(0.5, 1.5, model.flat_buffers.size)
    save_model(path, model, normalization=NORMALIZATION, classes=[f"class {i}" for i in range(n_classes)],
               metadata={"dataset": "fashion-mnist", "run": "0123456789ab", "settings": settings.as_dict(), "epochs_run": 2,
                         "best_epoch": 2, "threads": 1})
    return path


@pytest.fixture
def source(tmp_path):
    """A small real model file (784 inputs, batch norm), 26 kB."""
    return saved(tmp_path / "model.npz", TrainSettings(hidden=[8], dropout=0.0))


def refusal(path) -> str:
    """The message load_model refuses `path` with, checked to be one line that starts with the file."""
    with pytest.raises(ModelFormatError) as caught:
        load_model(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def peak_while(function) -> int:
    """Bytes allocated at the peak while `function()` runs (NumPy's arrays included)."""
    tracemalloc.start()
    try:
        function()
    except ModelFormatError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


# --- the schema is the layers' own -------------------------------------------------------


def test_every_layer_kind_has_its_constructors_keys_and_defaults():
    assert set(LAYER_KEYS) == set(LAYER_TYPES) == set(DECLARES)
    for kind, cls in LAYER_TYPES.items():
        parameters = {name: p.default for name, p in inspect.signature(cls).parameters.items() if name != "dtype"}
        assert set(LAYER_KEYS[kind]) == set(parameters), kind
        for name, key in LAYER_KEYS[kind].items():
            expected = _REQUIRED if parameters[name] is inspect.Parameter.empty else parameters[name]
            assert key.default == expected, f"{kind}.{name}"


ARCHITECTURES = {
    "mlp": (TrainSettings(hidden=[7, 5], activation="leaky_relu"), 64, 4, None),
    "mlp-plain": (TrainSettings(hidden=[], batch_norm=False, dropout=0.0, activation="tanh"), 30, 3, None),
    "cnn": (TrainSettings(model="cnn", conv_channels=[3, 4], hidden=[6]), 784, 10, None),
    "cnn-odd-sizes": (TrainSettings(model="cnn", conv_channels=[2], hidden=[], batch_norm=False, activation="sigmoid"), 21 * 15, 5,
                      (21, 15)),
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_arrays_a_header_declares_are_those_the_model_builds(name):
    settings, n_inputs, n_classes, image_shape = ARCHITECTURES[name]
    arch = architecture(settings, n_inputs, n_classes, image_shape)
    header = {"format": "mnist-pipeline-model", "format_version": 1, "architecture": arch, "normalization": NORMALIZATION,
              "classes": list("abcdefghij")[:n_classes], "metadata": {}}
    model = Model(arch)
    built = {name: array.shape for name, array in model.named_arrays().items()}
    assert check_header(json.loads(json.dumps(header))).arrays == built
    # The specs the layers write of themselves, every key filled in, pass too.
    header["architecture"] = {**arch, "layers": [layer.spec() for layer in model.layers]}
    assert check_header(json.loads(json.dumps(header))).arrays == built


# --- crafted files -----------------------------------------------------------------------


@pytest.mark.parametrize("case", list(CRAFTED_MODELS))
def test_crafted_model_files_are_refused_in_one_line_before_anything_is_allocated(tmp_path, source, case):
    header, arrays, expected = CRAFTED_MODELS[case]
    path = crafted_model(source, tmp_path / "crafted.npz", header, arrays)
    assert path.stat().st_size < 40_000
    assert re.search(expected, refusal(path))
    # 784 x 400000 float32 weights, their gradients and the flat copies were 2.6 GB before.
    assert peak_while(lambda: load_model(path)) < 10 * MB


def image_through_pools(side: int, conv: bool):
    """Header and array changes for a side x side input, an optional one-channel 3x3 conv, then max
    pools down to one pixel, then the dense output: a few parameters, whatever the image size."""
    pools = side.bit_length() - 1
    head = [{"type": "reshape", "shape": [side, side, 1]}]
    if conv:
        head.append({"type": "conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 3})
    dense = len(head) + pools + 1

    def header(h):
        h["architecture"].update(model="cnn", n_inputs=side * side, image_shape=[side, side], layers=[
            *head, *[{"type": "max_pool"}] * pools, {"type": "flatten"}, {"type": "dense", "n_in": 1, "n_out": 10}])

    def arrays(a):
        a.clear()
        a.update({f"layer{dense}.W": np.ones((1, 10), np.float32), f"layer{dense}.b": np.zeros(10, np.float32)})
        if conv:
            a.update({"layer1.W": np.ones((3, 3, 1, 1), np.float32), "layer1.b": np.zeros(1, np.float32)})

    return header, arrays


def test_an_image_size_no_array_backs_is_bounded(tmp_path, source):
    """Images of 8192x8192 pixels, or 4096x4096 through a convolution (9 values of patch per
    pixel), declared by files of a few kilobytes: 67 and 151 million values per image."""
    large = crafted_model(source, tmp_path / "large.npz", *image_through_pools(8192, conv=False))
    assert large.stat().st_size < 10_000
    assert refusal(large).endswith(f"the input holds {8192 * 8192:,} values per image, more than the {MAX_VALUES:,} a model "
                                   "may (see mnist_pipeline.nn.modelfile.MAX_VALUES)")
    patches = crafted_model(source, tmp_path / "patches.npz", *image_through_pools(4096, conv=True))
    assert f"architecture.layers[1] (conv2d) holds {4096 * 4096 * 9:,} values per image" in refusal(patches)
    # At the limit, they load: 4096x4096 pixels, and 1024x1024 through the convolution.
    for side, conv in ((4096, False), (1024, True)):
        assert load_model(crafted_model(source, tmp_path / "fits.npz", *image_through_pools(side, conv))).image_shape == (side, side)


class Trap:
    """Unpickling this creates the file it names: the proof that a pickle was loaded."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_pickles_in_a_model_file_are_never_loaded(tmp_path, source):
    marker = tmp_path / "unpickled"
    trap = np.empty(1, object)
    trap[0] = Trap(marker)
    path = crafted_model(source, tmp_path / "pickle.npz", arrays=lambda a: a.update({"layer0.W": trap}))
    assert refusal(path).endswith("layer0.W.npy holds pickled Python objects, which are never loaded from a model file")
    assert not marker.exists()


def layers(header):
    return header["architecture"]["layers"]


HEADER_CASES = {
    "unknown layer type": (lambda h: layers(h)[0].update(type="dense2"),
                           "architecture.layers[0].type is 'dense2'; expected one of dense, dropout, batch_norm"),
    "layer not an object": (lambda h: layers(h).__setitem__(0, 5), "architecture.layers[0] is 5; expected a JSON object with a type"),
    "unknown key": (lambda h: layers(h)[0].update(bias=True),
                    "architecture.layers[0] (dense) has the key 'bias', which mnist-pipeline does not write; expected only type, "
                    "n_in, n_out"),
    "missing key": (lambda h: layers(h)[0].pop("n_in"), "architecture.layers[0] (dense) has no n_in; expected a whole number"),
    "size a string": (lambda h: layers(h)[0].update(n_out="8"), "architecture.layers[0].n_out is '8'; expected a whole number"),
    "size true": (lambda h: layers(h)[0].update(n_out=True), "architecture.layers[0].n_out is True; expected a whole number"),
    "size zero": (lambda h: layers(h)[0].update(n_out=0), "architecture.layers[0].n_out is 0; expected a whole number of at least 1"),
    "shapes that do not chain": (lambda h: layers(h)[3].update(n_in=9),
                                 "architecture.layers[3] (dense) takes 9 values, but the layer before gives 8"),
    "batch norm of another width": (lambda h: layers(h)[1].update(n_features=9),
                                    "architecture.layers[1] (batch_norm) normalises 9 features, but the layer before gives 8 values"),
    "eps zero": (lambda h: layers(h)[1].update(eps=0), "architecture.layers[1].eps is 0; expected a number above 0"),
    "rate NaN": (lambda h: layers(h).insert(3, {"type": "dropout", "rate": float("nan")}),
                 "architecture.layers[3].rate is nan; expected a number from 0 to below 1"),
    "a huge int": (lambda h: layers(h)[1].update(momentum=10**400), "architecture.layers[1].momentum is 1000000"),
    "wrong class count": (lambda h: h["architecture"].update(n_classes=11),
                          "the layers end in 10 values, but architecture.n_classes is 11"),
    "image of other size": (lambda h: h["architecture"].update(image_shape=[27, 28]),
                            "architecture.image_shape is [27, 28]; expected [rows, cols] of 784 pixels"),
    "classes not strings": (lambda h: h.update(classes=list(range(10))), "classes is [0, 1, 2"),
    "std zero": (lambda h: h["normalization"].update(std=0), "normalization.std is 0; expected a number above 0"),
    "no normalization": (lambda h: h.pop("normalization"), "normalization is None; expected a JSON object with mean and std"),
    "dataset a number": (lambda h: h["metadata"].update(dataset=5), "metadata.dataset is 5; expected a name"),
    "unknown header key": (lambda h: h.update(code="import os"),
                           "the header has the key 'code', which mnist-pipeline does not write"),
    "another format": (lambda h: h.update(format="keras"), "not a model file (its header does not say format 'mnist-pipeline-model')"),
    "a long value": (lambda h: layers(h)[0].update(type="x" * 10_000), "architecture.layers[0].type is 'xxxxxxxx"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_each_part_of_the_header_is_checked(tmp_path, source, case):
    change, expected = HEADER_CASES[case]
    message = refusal(crafted_model(source, tmp_path / "crafted.npz", change))
    assert expected in message
    assert len(message) < 400, "a value from the file is quoted whole"


def members(path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def rezip(path, entries: dict[str, bytes], compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return path


def test_the_archive_is_checked(tmp_path, source):
    entries = members(source)
    assert "is compressed; mnist-pipeline stores arrays uncompressed" in refusal(
        rezip(tmp_path / "deflated.npz", entries, zipfile.ZIP_DEFLATED))
    twice = tmp_path / "twice.npz"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(twice, "w") as archive:
        for name, data in [*entries.items(), ("layer0.W.npy", entries["layer0.W.npy"])]:
            archive.writestr(name, data)
    assert refusal(twice).endswith("holds 'layer0.W.npy' twice")
    assert refusal(rezip(tmp_path / "notes.npz", {**entries, "notes.txt": b"hi"})).endswith("holds 'notes.txt', which is not an array (.npy)")
    missing = {name: data for name, data in entries.items() if name != "layer3.b.npy"}
    assert "has no array layer3.b, which the architecture needs (1 missing)" in refusal(rezip(tmp_path / "missing.npz", missing))
    extra = crafted_model(source, tmp_path / "extra.npz", arrays=lambda a: a.update({"layer9.W": np.zeros(3, np.float32)}))
    assert "holds an array 'layer9.W', which the architecture does not have" in refusal(extra)
    doubles = crafted_model(source, tmp_path / "float64.npz", arrays=lambda a: a.update({"layer0.W": a["layer0.W"].astype(np.float64)}))
    assert refusal(doubles).endswith("array layer0.W is float64[784, 8], but the architecture declares float32[784, 8]")
    negative = crafted_model(source, tmp_path / "variance.npz", arrays=lambda a: a["layer1.running_var"].__setitem__(0, -1.0))
    assert refusal(negative).endswith("array layer1.running_var holds negative variances")


def test_the_header_entry_is_checked(tmp_path):
    numbers = write_npz(tmp_path / "numbers.npz", {"header": np.zeros(3)})
    assert refusal(numbers).endswith("header.npy is float64[3]; expected one string of JSON")
    assert "not a model file (expected an .npz written by mnist-pipeline): Expecting value" in refusal(
        write_npz(tmp_path / "prose.npz", {"header": np.array("not JSON")}))
    deep = write_npz(tmp_path / "deep.npz", {"header": np.array("[" * 100_000 + "]" * 100_000)})
    assert "not a model file (expected an .npz written by mnist-pipeline)" in refusal(deep)
    assert refusal(write_npz(tmp_path / "list.npz", {"header": np.array("[1, 2]")})).endswith(
        "the header is [1, 2]; expected a JSON object")


def damaged_copies(data: bytes, n: int, seed: int = 0):
    """n copies of `data`, each with 1-3 bytes flipped, cut short, or 4 bytes overwritten, in turn."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        damaged = bytearray(data)
        if i % 3 == 0:
            for position in rng.integers(0, len(data), rng.integers(1, 4)):
                damaged[position] ^= int(rng.integers(1, 256))
        elif i % 3 == 1:
            del damaged[int(rng.integers(len(ZIP_MAGIC), len(data))):]
        else:
            position = int(rng.integers(0, len(data) - 4))
            damaged[position : position + 4] = rng.integers(0, 256, 4, dtype=np.uint8).tobytes()
        yield bytes(damaged)


def test_damaged_bytes_anywhere_are_refused_or_change_nothing(tmp_path):
    """The zip's CRC covers the header and the arrays; damage elsewhere (a timestamp) must leave the model as it was."""
    source = saved(tmp_path / "model.npz", TrainSettings(model="cnn", conv_channels=[2], hidden=[4], dropout=0.0), 64, 3)
    original = load_model(source).model.flat_params
    path, refused = tmp_path / "damaged.npz", 0
    for damaged in damaged_copies(source.read_bytes(), 900):
        path.write_bytes(damaged)
        try:
            model = load_model(path).model
        except ModelFormatError as exc:
            assert str(exc).startswith(f"{path}: ") and "\n" not in str(exc)
            refused += 1
        else:
            np.testing.assert_array_equal(model.flat_params, original)
    assert refused > 850
