"""Read and write IDX files, the format of MNIST and its relatives.

The published format: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension and the values, C order, big-endian. Files may be gzipped;
gzip is recognised by its magic bytes (1f 8b), never by the file name, because mirrors and
users rename files freely.

Every fault is an IdxFormatError naming the file and what was expected: a parser that
silently returns a short or shifted array would poison every later stage.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.errors import IdxFormatError
from mnist_pipeline.fileio import atomic_path

GZIP_MAGIC = b"\x1f\x8b"

# dtype code -> big-endian NumPy dtype, as the format defines them.
DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype("u1"),
    0x09: np.dtype("i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_CODES = {(dtype.kind, dtype.itemsize): code for code, dtype in DTYPES.items()}


@dataclass(frozen=True)
class IdxHeader:
    """What an IDX header says: element type, shape, and where the values start (bytes)."""

    dtype: np.dtype
    shape: tuple[int, ...]
    offset: int

    @property
    def payload_bytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def parse_header(data: bytes | memoryview, source: str) -> IdxHeader:
    """Decode and check the header at the start of `data` (the decompressed file)."""
    view = memoryview(data)
    if len(view) < 4:
        raise IdxFormatError(f"{source}: {len(view)} bytes is too short for an IDX file (a header is at least 4 bytes)")
    zero0, zero1, code, ndim = view[:4]
    if zero0 or zero1:
        raise IdxFormatError(
            f"{source}: bad magic number 0x{bytes(view[:4]).hex()}: an IDX file starts with two zero bytes"
            " (is it an uncompressed file of another format, or a damaged download?)"
        )
    if code not in DTYPES:
        known = ", ".join(f"0x{c:02X}" for c in DTYPES)
        raise IdxFormatError(f"{source}: unknown IDX dtype code 0x{code:02X} (expected one of {known})")
    if ndim == 0:
        raise IdxFormatError(f"{source}: the IDX header declares zero dimensions (expected at least one)")
    offset = 4 + 4 * ndim
    if len(view) < offset:
        raise IdxFormatError(
            f"{source}: the header declares {ndim} dimensions, which need {offset} header bytes,"
            f" but the file has only {len(view)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", view[4:offset])
    return IdxHeader(DTYPES[code], shape, offset)


def parse_idx(data: bytes | memoryview, source: str) -> np.ndarray:
    """Array of an uncompressed IDX file's bytes, in native byte order.

    For one-byte types the result is a read-only view on `data` (no copy); wider types are
    converted to native byte order. `source` names the file in error messages.
    """
    header = parse_header(data, source)
    payload = len(data) - header.offset
    expected = header.payload_bytes
    if payload != expected:
        word = "shorter" if payload < expected else "longer"
        raise IdxFormatError(
            f"{source}: payload is {word} than the header says: shape {header.shape} of"
            f" {header.dtype.name} needs {expected} bytes after the {header.offset}-byte header,"
            f" the file has {payload}" + (" (truncated download?)" if payload < expected else "")
        )
    array = np.frombuffer(data, dtype=header.dtype, count=math.prod(header.shape), offset=header.offset)
    array = array.reshape(header.shape)
    if header.dtype.itemsize > 1:
        array = array.astype(header.dtype.newbyteorder("="))
    return array


def decompress(data: bytes, source: str) -> bytes:
    """The IDX bytes of a file's content: gunzipped when it starts with the gzip magic."""
    if not data.startswith(GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as error:
        raise IdxFormatError(f"{source}: bad gzip stream: {error}") from None


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Array stored in the IDX file at `path` (gzipped or not); see parse_idx."""
    source = os.fspath(path)
    return parse_idx(decompress(Path(path).read_bytes(), source), source)


def encode_idx(array: np.ndarray, target: str = "<array>") -> bytes:
    """The uncompressed IDX bytes of `array`; `target` names the destination in errors."""
    array = np.asarray(array)
    header = encode_header(array.dtype, array.shape, target)
    return header + np.ascontiguousarray(array, dtype=DTYPES[header[2]]).tobytes()


def encode_header(dtype: np.dtype, shape: tuple[int, ...], target: str = "<array>") -> bytes:
    """The IDX header of an array of `dtype` and `shape`, for writers that stream the values after it."""
    dtype = np.dtype(dtype)
    code = _CODES.get((dtype.kind, dtype.itemsize))
    if code is None:
        names = ", ".join(dtype.name for dtype in DTYPES.values())
        raise IdxFormatError(f"{target}: IDX cannot store dtype {dtype} (expected one of {names})")
    if not 1 <= len(shape) <= 255:
        raise IdxFormatError(f"{target}: IDX stores 1 to 255 dimensions, the array has {len(shape)}")
    if any(size >= 2**32 for size in shape):
        raise IdxFormatError(f"{target}: IDX dimensions are uint32, shape {tuple(shape)} does not fit")
    return bytes((0, 0, code, len(shape))) + struct.pack(f">{len(shape)}I", *shape)


def write_idx(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write `array` as IDX at `path`, gzipped when the name ends in .gz.

    The bytes depend only on the array: the gzip header carries mtime 0 and no file name.
    The file appears atomically (written beside it, then renamed).
    """
    path = Path(path)
    data = encode_idx(array, os.fspath(path))
    if path.name.endswith(".gz"):
        data = gzip.compress(data, compresslevel=6, mtime=0)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def read_split(
    images_path: str | os.PathLike, labels_path: str | os.PathLike, n_classes: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Images uint8 (n, rows, cols) and labels (n,) of one split, checked against each other.

    Labels keep their stored integer type (uint8 for the standard files) and must lie in
    [0, n_classes) when n_classes is given, else be non-negative.
    """
    images, labels = read_idx(images_path), read_idx(labels_path)
    images_name, labels_name = os.fspath(images_path), os.fspath(labels_path)
    if images.dtype != np.uint8 or images.ndim != 3:
        raise IdxFormatError(
            f"{images_name}: expected images of unsigned bytes with shape (n, rows, cols),"
            f" got {images.dtype.name} with shape {images.shape}"
        )
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise IdxFormatError(
            f"{labels_name}: expected integer labels with shape (n,), got {labels.dtype.name} with shape {labels.shape}"
        )
    if len(images) != len(labels):
        raise IdxFormatError(
            f"{images_name} holds {len(images)} images but {labels_name} holds {len(labels)} labels;"
            " they must be the same split of the same dataset"
        )
    bad = labels < 0
    if n_classes is not None:
        bad |= labels >= n_classes
    if bad.any():
        index = int(np.flatnonzero(bad)[0])
        allowed = f"[0, {n_classes})" if n_classes is not None else "of non-negative labels"
        raise IdxFormatError(
            f"{labels_name}: label {int(labels[index])} at index {index} is outside the class range {allowed}"
            f" ({int(bad.sum())} labels out of range)"
        )
    return images, labels
