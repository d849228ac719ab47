"""The model file: written by save_model, and checked whole before anything it declares is built.

A model file is an `.npz`, a zip archive of `.npy` members stored uncompressed: `header.npy`,
one string of JSON (format, version, architecture, normalization, classes, metadata), and one
float32 array `layer{i}.{name}.npy` per parameter and buffer of layer i.

Reading trusts nothing in it until it has been checked, in an order that keeps memory bounded
by the file's own size: the zip directory; the header against a schema (each layer kind with its
keys and their types, positive sizes, each layer's input the shape the one before gives, the
last giving one value per class); the arrays that architecture needs against the members'
own `.npy` headers (dtype, shape, and bytes actually stored), before any array is read; then the
values (finite weights, variances not below zero). A Model is built only from a file that passed
all of it, so every parameter it allocates is backed by bytes in the file. Anything else is a
ModelFormatError naming the file and the one thing wrong, on one line.
"""

from __future__ import annotations

import io
import json
import math
import os
import struct
import tokenize
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import ModelFormatError
from mnist_pipeline.fileio import atomic_path

FORMAT = "mnist-pipeline-model"
FORMAT_VERSION = 1
HEADER = "header"
ZIP_MAGIC = b"PK\x03\x04"  # what every .npz starts with
#: The most values one example may occupy at any layer, a convolution's patch matrix included:
#: the one size a model file declares that no array in it backs (an image of 4096x4096 pixels,
#: 64 MB of float32). The pipeline's models stay far below: a 28x28 CNN's largest is its second
#: convolution's patches, 14 * 14 * 9 * 32 = 56,448 values.
MAX_VALUES = 1 << 24
#: The longest a value from the file is quoted in a message.
SHOWN_CHARS = 60

_REQUIRED = object()


@dataclass(frozen=True)
class Key:
    """One key of a layer's spec: what its value must be, and its value when the spec leaves it out
    (as the layer's constructor defaults it; tests/test_nn_modelfile.py holds the two together)."""

    expected: str
    fits: Callable[[Any], bool]
    default: Any = _REQUIRED


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    # An int of any size is finite; math.isfinite would overflow converting a huge one.
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _is_shape(value: Any) -> bool:
    return (isinstance(value, list) and 0 < len(value) <= 3 and all(_is_int(s) and (s >= 1 or s == -1) for s in value)
            and value.count(-1) <= 1)


SIZE = Key("a whole number of at least 1", lambda v: _is_int(v) and v >= 1)
LAYER_KEYS: dict[str, dict[str, Key]] = {
    "dense": {"n_in": SIZE, "n_out": SIZE},
    "dropout": {"rate": Key("a number from 0 to below 1", lambda v: _is_number(v) and 0 <= v < 1)},
    "batch_norm": {
        "n_features": SIZE,
        "momentum": Key("a number from 0 to 1", lambda v: _is_number(v) and 0 <= v <= 1, 0.9),
        "eps": Key("a number above 0", lambda v: _is_number(v) and v > 0, 1e-5),
    },
    "reshape": {"shape": Key("a list of 1 to 3 sizes of at least 1, one of them perhaps -1", _is_shape)},
    "flatten": {},
    "conv2d": {
        "in_channels": SIZE,
        "out_channels": SIZE,
        "kernel_size": Key("an odd whole number of at least 1", lambda v: _is_int(v) and v >= 1 and v % 2 == 1, 3),
    },
    "max_pool": {},
    "relu": {},
    "leaky_relu": {"alpha": Key("a finite number", _is_number, 0.01)},
    "tanh": {},
    "sigmoid": {},
}
#: Buffers that hold variances, which no training makes negative (a negative one gives NaN).
NONNEGATIVE = ("running_var",)


class _Wrong(ValueError):
    """What is wrong with the file, for load to raise as a ModelFormatError naming it."""


def shown(value: Any) -> str:
    """A value from the file, quoted for a one-line message: repr, cut to SHOWN_CHARS."""
    return _cut(repr(value), SHOWN_CHARS)


def _cut(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _shape_text(shape: tuple[int, ...]) -> str:
    return "x".join(map(str, shape))


# --- what each layer kind declares, from its checked spec and its input shape ---------------
# Each returns (output shape, {array name: shape}, the most values one example occupies in it).


def _dense(spec: dict, shape: tuple[int, ...]):
    _takes(shape, (spec["n_in"],))
    return (spec["n_out"],), {"W": (spec["n_in"], spec["n_out"]), "b": (spec["n_out"],)}, spec["n_out"]


def _batch_norm(spec: dict, shape: tuple[int, ...]):
    n = spec["n_features"]
    if shape[-1] != n:
        raise _Wrong(f"normalises {n} features, but the layer before gives {_shape_text(shape)} values")
    return shape, {"gamma": (n,), "beta": (n,), "running_mean": (n,), "running_var": (n,)}, math.prod(shape)


def _reshape(spec: dict, shape: tuple[int, ...]):
    size, target = math.prod(shape), spec["shape"]
    known = math.prod(s for s in target if s != -1)
    if -1 in target:
        if size % known:
            raise _Wrong(f"cannot reshape {_shape_text(shape)} values to {target}")
        target = [size // known if s == -1 else s for s in target]
    if math.prod(target) != size:
        raise _Wrong(f"cannot reshape {_shape_text(shape)} values to {_shape_text(tuple(target))}")
    return tuple(target), {}, size


def _flatten(spec: dict, shape: tuple[int, ...]):
    return (math.prod(shape),), {}, math.prod(shape)


def _conv2d(spec: dict, shape: tuple[int, ...]):
    C, F, k = spec["in_channels"], spec["out_channels"], spec["kernel_size"]
    if len(shape) != 3 or shape[2] != C:
        raise _Wrong(f"takes images of {C} channel(s) (rows x cols x {C}), but the layer before gives {_shape_text(shape)}")
    rows, cols, _ = shape
    # Each output position has a patch of k * k * C inputs (im2col).
    return (rows, cols, F), {"W": (k, k, C, F), "b": (F,)}, rows * cols * max(F, k * k * C)


def _max_pool(spec: dict, shape: tuple[int, ...]):
    if len(shape) != 3 or shape[0] < 2 or shape[1] < 2:
        raise _Wrong(f"pools 2x2 windows of an image (rows x cols x channels, at least 2x2), but the layer before gives "
                     f"{_shape_text(shape)}")
    return (shape[0] // 2, shape[1] // 2, shape[2]), {}, math.prod(shape)


def _elementwise(spec: dict, shape: tuple[int, ...]):
    return shape, {}, math.prod(shape)


def _takes(shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    if shape != expected:
        raise _Wrong(f"takes {_shape_text(expected)} values, but the layer before gives {_shape_text(shape)}")


DECLARES = {
    "dense": _dense, "dropout": _elementwise, "batch_norm": _batch_norm, "reshape": _reshape, "flatten": _flatten,
    "conv2d": _conv2d, "max_pool": _max_pool, "relu": _elementwise, "leaky_relu": _elementwise, "tanh": _elementwise,
    "sigmoid": _elementwise,
}


# --- the header ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Declared:
    """What a checked header declares: every array ('layer{i}.{name}' -> shape) and the most values
    one example occupies at any layer (`largest`, at `where`)."""

    arrays: dict[str, tuple[int, ...]]
    largest: int
    where: str


def _require(value: Any, where: str, expected: str, fits: bool) -> None:
    if not fits:
        raise _Wrong(f"{where} is {shown(value)}; expected {expected}")


def _only(keys: dict, allowed, where: str) -> None:
    unknown = sorted(set(keys) - set(allowed))
    if unknown:
        raise _Wrong(f"{where} has the key {shown(unknown[0])}, which mnist-pipeline does not write; "
                     f"expected only {', '.join(allowed)}")


def check_header(header: Any) -> Declared:
    """The arrays a header declares, once every part of it is as save_model writes it; _Wrong if not."""
    _require(header, "the header", "a JSON object", isinstance(header, dict))
    if header.get("format") != FORMAT:
        raise _Wrong(f"not a model file (its header does not say format {FORMAT!r})")
    version = header.get("format_version")
    _require(version, "format_version", "a version number", _is_int(version) and version >= 1)
    if version > FORMAT_VERSION:
        raise _Wrong(f"model format version {version} is newer than this mnist-pipeline reads "
                     f"(up to {FORMAT_VERSION}); upgrade mnist-pipeline to load it")
    _only(header, ("format", "format_version", "architecture", "normalization", "classes", "metadata"), "the header")
    declared = check_architecture(header.get("architecture"))
    n_classes = header["architecture"]["n_classes"]
    classes = header.get("classes")
    _require(classes, "classes", f"a list of {n_classes} class names, one per output of the network",
             isinstance(classes, list) and len(classes) == n_classes and all(isinstance(c, str) for c in classes))
    _check_normalization(header.get("normalization"))
    _check_metadata(header.get("metadata", {}))
    return declared


def check_architecture(arch: Any) -> Declared:
    """The arrays an architecture declares, once it is as architecture() writes it; _Wrong if not."""
    _require(arch, "architecture", "a JSON object", isinstance(arch, dict))
    _only(arch, ("model", "n_inputs", "image_shape", "n_classes", "layers"), "architecture")
    _require(arch.get("model"), "architecture.model", "'mlp' or 'cnn'", arch.get("model") in ("mlp", "cnn"))
    for key in ("n_inputs", "n_classes"):
        _require(arch.get(key), f"architecture.{key}", SIZE.expected, SIZE.fits(arch.get(key)))
    n_inputs, n_classes = arch["n_inputs"], arch["n_classes"]
    if "image_shape" in arch:
        image = arch["image_shape"]
        _require(image, "architecture.image_shape", f"[rows, cols] of {n_inputs} pixels",
                 isinstance(image, list) and len(image) == 2 and all(map(SIZE.fits, image)) and math.prod(image) == n_inputs)
    layers = arch.get("layers")
    _require(layers, "architecture.layers", "a non-empty list of layers", isinstance(layers, list) and layers)
    arrays: dict[str, tuple[int, ...]] = {}
    shape: tuple[int, ...] = (n_inputs,)
    largest, where = n_inputs, "the input"
    for i, spec in enumerate(layers):
        spec = _check_spec(spec, f"architecture.layers[{i}]")
        try:
            shape, declared, values = DECLARES[spec["type"]](spec, shape)
        except _Wrong as exc:
            raise _Wrong(f"architecture.layers[{i}] ({spec['type']}) {exc}") from None
        arrays.update({f"layer{i}.{name}": array for name, array in declared.items()})
        if values > largest:
            largest, where = values, f"architecture.layers[{i}] ({spec['type']})"
    if shape != (n_classes,):
        raise _Wrong(f"the layers end in {_shape_text(shape)} values, but architecture.n_classes is {n_classes}")
    return Declared(arrays, largest, where)


def too_many_values(declared: Declared) -> str:
    """What is wrong with an architecture whose examples hold more than MAX_VALUES values at some layer."""
    return (f"{declared.where} holds {declared.largest:,} values per image, more than the {MAX_VALUES:,} a model may "
            "(see mnist_pipeline.nn.modelfile.MAX_VALUES)")


def _check_spec(spec: Any, where: str) -> dict:
    """The spec with its optional keys filled in, once its type and every key are right."""
    _require(spec, where, "a JSON object with a type", isinstance(spec, dict))
    kind = spec.get("type")
    _require(kind, f"{where}.type", f"one of {', '.join(LAYER_KEYS)}", isinstance(kind, str) and kind in LAYER_KEYS)
    keys = LAYER_KEYS[kind]
    _only(spec, ("type", *keys), f"{where} ({kind})")
    filled = {"type": kind}
    for name, key in keys.items():
        if name in spec:
            _require(spec[name], f"{where}.{name}", key.expected, key.fits(spec[name]))
        elif key.default is _REQUIRED:
            raise _Wrong(f"{where} ({kind}) has no {name}; expected {key.expected}")
        filled[name] = spec.get(name, key.default)
    return filled


def _check_normalization(normalization: Any) -> None:
    _require(normalization, "normalization", "a JSON object with mean and std", isinstance(normalization, dict))
    mean, std = normalization.get("mean"), normalization.get("std")
    _require(mean, "normalization.mean", "a finite number", _is_number(mean))
    _require(std, "normalization.std", "a number above 0", _is_number(std) and std > 0)


#: Metadata the commands show, with what each must be when present (null is always allowed).
METADATA = {
    "dataset": ("a name", lambda v: isinstance(v, str)),
    "experiment": ("a name", lambda v: isinstance(v, str)),
    "run": ("a run id", lambda v: isinstance(v, str)),
    "settings": ("an object of settings, each a number, string, true/false, null or a list of them",
                 lambda v: isinstance(v, dict) and all(map(_is_setting, v.values()))),
    "epochs_run": ("a whole number of at least 0", lambda v: _is_int(v) and v >= 0),
    "best_epoch": ("a whole number of at least 0", lambda v: _is_int(v) and v >= 0),
    "threads": (SIZE.expected, SIZE.fits),
}


def _is_setting(value: Any) -> bool:
    scalar = (str, int, float, bool, type(None))
    return isinstance(value, scalar) or (isinstance(value, list) and all(isinstance(item, scalar) for item in value))


def _check_metadata(metadata: Any) -> None:
    _require(metadata, "metadata", "a JSON object", isinstance(metadata, dict))
    for key, (expected, fits) in METADATA.items():
        value = metadata.get(key)
        _require(value, f"metadata.{key}", expected, value is None or fits(value))


# --- the archive -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Member:
    """One `.npy` member of the archive, from its own header: where its data starts and what it holds."""

    info: zipfile.ZipInfo
    offset: int
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool

    @property
    def text(self) -> str:
        return f"{self.dtype}{list(self.shape)}"


def _members(archive: zipfile.ZipFile, size: int) -> dict[str, zipfile.ZipInfo]:
    """name (without .npy) -> member, once every member is an array stored whole inside the file."""
    members: dict[str, zipfile.ZipInfo] = {}
    for info in archive.infolist():
        name = info.filename.removesuffix(".npy")
        if name == info.filename:
            raise _Wrong(f"holds {shown(info.filename)}, which is not an array (.npy)")
        if name in members:
            raise _Wrong(f"holds {shown(info.filename)} twice")
        if info.flag_bits & 0x1:
            raise _Wrong(f"{shown(info.filename)} is encrypted")
        if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
            raise _Wrong(f"{shown(info.filename)} is compressed; mnist-pipeline stores arrays uncompressed")
        if info.header_offset + info.compress_size > size:
            raise _Wrong(f"{shown(info.filename)} declares {info.file_size:,} bytes, more than the file holds")
        members[name] = info
    if HEADER not in members:
        raise _Wrong("not a model file (an .npz written by mnist-pipeline has a header entry)")
    return members


def _member(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Member:
    """A member's .npy header, read without its data; _Wrong unless it declares exactly the bytes stored."""
    with archive.open(info) as stream:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, fortran_order, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise _Wrong(f"{info.filename} is .npy version {version}, which mnist-pipeline does not write")
        offset = stream.tell()
    if dtype.hasobject:
        raise _Wrong(f"{info.filename} holds pickled Python objects, which are never loaded from a model file")
    if any(s < 0 for s in shape) or math.prod(shape) * dtype.itemsize != info.file_size - offset:
        raise _Wrong(f"{info.filename} declares {dtype}{list(shape)}, but holds {info.file_size - offset:,} bytes of data")
    return Member(info, offset, dtype, tuple(shape), bool(fortran_order))


def _read(archive: zipfile.ZipFile, member: Member) -> np.ndarray:
    """A member's data, once _member has checked its header; the zip's CRC is checked on the way."""
    with archive.open(member.info) as stream:
        stream.read(member.offset)
        data = stream.read()
    array = np.frombuffer(data, member.dtype)
    return array.reshape(member.shape, order="F" if member.fortran_order else "C")


# The errors Python's zip reader, NumPy's .npy header reader (it tokenizes the header's Python
# literal) and the JSON decoder raise on bytes they cannot read.
_UNREADABLE = (zipfile.BadZipFile, NotImplementedError, EOFError, OSError, ValueError, struct.error, tokenize.TokenError,
               RecursionError)


@dataclass
class ModelFile:
    """A checked model file: its header, and each array ('layer{i}.{name}') exactly as the header declares it."""

    header: dict
    arrays: dict[str, np.ndarray]


def read_model_file(path) -> ModelFile:
    """Check the model file at `path` (see the module docstring) and return what it holds.

    FileNotFoundError when there is no such file; ModelFormatError, naming it, for anything in it
    that save_model did not write.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model file")
    with open(path, "rb") as handle:
        start = handle.read(len(ZIP_MAGIC))
        if start != ZIP_MAGIC:
            found = "it is empty (0 bytes)" if not start else f"it starts with {start!r}"
            raise ModelFormatError(
                f"{path}: not a model file: expected an .npz archive written by mnist-pipeline"
                f" (a zip file, starting with {ZIP_MAGIC!r}), but {found}"
            )
        try:
            return _read_archive(handle)
        except _Wrong as exc:
            raise ModelFormatError(f"{path}: {exc}") from None
        except _UNREADABLE as exc:
            raise ModelFormatError(f"{path}: not a model file (expected an .npz written by mnist-pipeline): "
                                   f"{_cut(str(exc) or type(exc).__name__, 200)}") from None


def _read_archive(handle: io.BufferedReader) -> ModelFile:
    with zipfile.ZipFile(handle) as archive:
        members = _members(archive, os.fstat(handle.fileno()).st_size)
        header_member = _member(archive, members.pop(HEADER))
        if header_member.dtype.kind != "U" or header_member.shape != ():
            raise _Wrong(f"{HEADER}.npy is {header_member.text}; expected one string of JSON")
        header = json.loads(str(_read(archive, header_member)[()]))
        declared = check_header(header)
        missing, extra = sorted(set(declared.arrays) - set(members)), sorted(set(members) - set(declared.arrays))
        if missing:
            raise _Wrong(f"has no array {missing[0]}, which the architecture needs ({len(missing)} missing)")
        if extra:
            raise _Wrong(f"holds an array {shown(extra[0])}, which the architecture does not have ({len(extra)} such)")
        checked = {}
        for name, shape in declared.arrays.items():
            member = checked[name] = _member(archive, members[name])
            expected = f"{np.dtype(np.float32)}{list(shape)}"
            if member.dtype != np.float32 or member.shape != shape:
                raise _Wrong(f"array {name} is {member.text}, but the architecture declares {expected}")
        if declared.largest > MAX_VALUES:
            raise _Wrong(too_many_values(declared))
        arrays = {name: _read(archive, member) for name, member in checked.items()}
    for name, array in arrays.items():
        bad = array.size - int(np.count_nonzero(np.isfinite(array)))
        if bad:
            raise _Wrong(f"array {name} holds {bad:,} NaN or infinite value(s); a trained model's are all finite")
        if name.endswith(tuple(f".{buffer}" for buffer in NONNEGATIVE)) and (array < 0).any():
            raise _Wrong(f"array {name} holds negative variances")
    return ModelFile(header, arrays)


def write_model_file(path, header: dict, arrays: dict[str, np.ndarray]) -> None:
    """Write `header` (JSON) and `arrays` as a model file at `path`.

    Byte-deterministic: entries in a fixed order with a fixed timestamp, stored uncompressed
    (np.savez would stamp the current time into every entry). Atomic: a temporary file in the
    same directory is renamed over `path` only once complete; its mode follows the umask.
    """
    entries = {HEADER: np.array(json.dumps(header, sort_keys=True)), **arrays}
    with atomic_path(Path(path)) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as archive:
        for name, array in entries.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            data = io.BytesIO()
            np.lib.format.write_array(data, array, allow_pickle=False)
            archive.writestr(info, data.getvalue())
