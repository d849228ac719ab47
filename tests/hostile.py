"""Hostile files made in the test and small on disk: a gzip bomb, a PNG of huge declared size, and
model files crafted from a real one.

The first two hold long runs of zero bytes. Deflate reset by a full flush encodes the same input
as the same bytes, so one megabyte of zeros is compressed once (about 1 kB) and repeated: a
gigabyte of content costs a megabyte on disk and a fraction of a second to make, with valid
checksums.
"""

from __future__ import annotations

import json
import struct
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np

MIB = 1 << 20
_ZERO_MIB = bytes(MIB)


def _deflate_zeros(prefix: bytes, n_zeros: int) -> bytes:
    """Raw deflate of `prefix` followed by n_zeros zero bytes."""
    n_mib, rest = divmod(n_zeros, MIB)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = packer.compress(prefix) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(_ZERO_MIB) + packer.flush(zlib.Z_FULL_FLUSH)
    return head + block * n_mib + packer.compress(bytes(rest)) + packer.flush()


def _checksum(function, start: int, prefix: bytes, n_zeros: int) -> int:
    """zlib.crc32 or zlib.adler32 of `prefix` followed by n_zeros zero bytes."""
    n_mib, rest = divmod(n_zeros, MIB)
    value = function(prefix, start)
    for _ in range(n_mib):
        value = function(_ZERO_MIB, value)
    return function(bytes(rest), value)


def gzip_bomb(prefix: bytes, n_zeros: int) -> bytes:
    """A valid .gz of `prefix` (say an IDX header) followed by n_zeros zero bytes."""
    crc = _checksum(zlib.crc32, 0, prefix, n_zeros)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, mtime 0
    trailer = struct.pack("<II", crc, (len(prefix) + n_zeros) & 0xFFFFFFFF)
    return header + _deflate_zeros(prefix, n_zeros) + trailer


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A valid black 1-bit grayscale PNG of width x height (a 20000x20000 one is about 50 kB).

    Its pixel data is rows of zeros (filter byte 0, then width/8 zero bytes): all zero bytes."""
    n_zeros = height * (1 + (width + 7) // 8)
    adler = _checksum(zlib.adler32, 1, b"", n_zeros)
    stream = b"\x78\xda" + _deflate_zeros(b"", n_zeros) + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")


def write_npz(path: Path, entries: dict[str, np.ndarray]) -> Path:
    """An .npz as NumPy and save_model write it (one stored .npy member per entry), of any arrays."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, array in entries.items():
            with archive.open(f"{name}.npy", "w") as handle:
                np.lib.format.write_array(handle, array, allow_pickle=True)
    return path


def crafted_model(source: Path, target: Path, header: Callable[[dict], None] | None = None,
                  arrays: Callable[[dict[str, np.ndarray]], None] | None = None) -> Path:
    """A copy of the model file `source` at `target`, its JSON header and its arrays changed in place
    by `header(dict)` and `arrays(dict name -> array)`: what a careless or hostile hand could write."""
    with np.load(source) as archive:
        entries = {name: archive[name] for name in archive.files}
    parsed = json.loads(str(entries["header"]))
    if header:
        header(parsed)
    if arrays:
        arrays(entries)
    entries["header"] = np.array(json.dumps(parsed))
    return write_npz(target, entries)


def declared_only(path: Path, name: str, shape: tuple[int, ...], dtype: str = "<f4") -> None:
    """Replace member `name` of the .npz at `path` by an .npy header declaring `shape` and no data."""
    with zipfile.ZipFile(path) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    with zipfile.ZipFile(path, "w") as archive:
        for member, data in members.items():
            with archive.open(member, "w") as handle:
                if member == f"{name}.npy":
                    np.lib.format.write_array_header_1_0(handle, {"descr": dtype, "fortran_order": False, "shape": shape})
                else:
                    handle.write(data)


def widen_first_layer(header: dict, width: int) -> None:
    """Declare `width` units for the first dense layer, and as inputs for the layers after it: a
    header whose shapes still chain, with the arrays left as they were."""
    layers = header["architecture"]["layers"]
    layers[0]["n_out"] = width
    for spec in layers[1:]:
        if spec["type"] == "batch_norm":
            spec["n_features"] = width
        if spec["type"] == "dense":
            spec["n_in"] = width
            break


def _fill(name: str, value: object) -> Callable[[dict[str, np.ndarray]], None]:
    def change(arrays: dict[str, np.ndarray]) -> None:
        arrays[name] = np.full(arrays[name].shape, value, arrays[name].dtype)
    return change


#: The crafted model files of issue 21, each made from a real model file by `crafted_model`:
#: name -> (change to the header, change to the arrays, a regex of what the one error line says).
CRAFTED_MODELS = {
    "a 10^12-unit layer": (lambda h: widen_first_layer(h, 10**12), None,
                           r"array layer0\.W is float32\[\d+, \d+\], but the architecture declares float32\[\d+, 1000000000000\]"),
    "n_out 400000": (lambda h: widen_first_layer(h, 400_000), None,
                     r"array layer0\.W is float32\[\d+, \d+\], but the architecture declares float32\[\d+, 400000\]"),
    "layers a string": (lambda h: h["architecture"].update(layers="abc"), None,
                        r"architecture\.layers is 'abc'; expected a non-empty list of layers"),
    "no classes": (lambda h: h.update(classes=[]), None, r"classes is \[\]; expected a list of \d+ class names, one per output"),
    "NaN weights": (None, _fill("layer0.W", np.nan), r"array layer0\.W holds [\d,]+ NaN or infinite value\(s\)"),
    "infinite bias": (None, _fill("layer0.b", -np.inf), r"array layer0\.b holds [\d,]+ NaN or infinite value\(s\)"),
    "settings a string": (lambda h: h["metadata"].update(settings="abc"), None, r"metadata\.settings is 'abc'; expected an object"),
}
