"""Read and write IDX files, the format of MNIST and its relatives.

The published format: two zero bytes, a dtype code, the number of dimensions, then one
big-endian uint32 per dimension and the values, C order, big-endian. Files may be gzipped;
gzip is recognised by its magic bytes (1f 8b), never by the file name, because mirrors and
users rename files freely.

Every fault is an IdxFormatError naming the file and what was expected: a parser that
silently returns a short or shifted array would poison every later stage.

Files are read as streams that stop at the size the header declares (and never above
MAX_IDX_BYTES): a few megabytes of gzip can hold gigabytes of zeros, and reading such a
file whole before checking its length would exhaust the memory of whoever opened it.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from mnist_pipeline.errors import IdxFormatError
from mnist_pipeline.fileio import atomic_path

GZIP_MAGIC = b"\x1f\x8b"
# The largest decompressed IDX file we read: 20 times MNIST's largest (47 MB); EMNIST's
# largest (550 MB) fits. A header declaring more is refused before anything is allocated.
MAX_IDX_BYTES = 1 << 30
CHUNK_BYTES = 1 << 20

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

    @property
    def total_bytes(self) -> int:
        return self.offset + self.payload_bytes

    def describe(self) -> str:
        return f"shape {self.shape} of {self.dtype.name} needs {self.payload_bytes} bytes after the {self.offset}-byte header"

    def length_error(self, source: str, payload: int) -> IdxFormatError:
        """The error for a file whose payload (bytes after the header) is not the declared size."""
        word = "shorter" if payload < self.payload_bytes else "longer"
        return IdxFormatError(
            f"{source}: payload is {word} than the header says: {self.describe()}, the file has {payload}"
            + (" (truncated download?)" if payload < self.payload_bytes else "")
        )


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
    if payload != header.payload_bytes:
        raise header.length_error(source, payload)
    array = np.frombuffer(data, dtype=header.dtype, count=math.prod(header.shape), offset=header.offset)
    array = array.reshape(header.shape)
    if header.dtype.itemsize > 1:
        array = array.astype(header.dtype.newbyteorder("="))
    return array


class IdxContent:
    """The decompressed content of an IDX file, read from `fileobj` (gzipped or not) as a
    stream that never goes past the size its header declares, nor past `limit` bytes.

    Opening checks the header; `chunks` or `read_into` then give the payload, and raise
    IdxFormatError naming `source` when it is shorter or longer than declared.
    """

    def __init__(self, fileobj: BinaryIO, source: str, limit: int = MAX_IDX_BYTES):
        self.source = source
        start = fileobj.tell()
        self.stored_bytes = fileobj.seek(0, io.SEEK_END) - start
        fileobj.seek(start)
        self.gzipped = fileobj.read(2) == GZIP_MAGIC
        fileobj.seek(start)
        self._stream: BinaryIO = gzip.GzipFile(fileobj=fileobj, mode="rb") if self.gzipped else fileobj
        head = self._read(4)
        if len(head) == 4 and not head[0] and not head[1] and head[2] in DTYPES:
            head += self._read(4 * head[3])
        self.header = parse_header(head, source)
        self.header_bytes = head
        if self.header.total_bytes > limit:
            raise IdxFormatError(
                f"{source}: the IDX header declares {self.header.describe()}, {self.header.total_bytes} bytes in all,"
                f" more than the {limit} bytes this reader accepts for one file (a damaged header?)"
            )

    def _read(self, size: int) -> bytes:
        try:
            return self._stream.read(size)
        except (OSError, EOFError, zlib.error) as error:
            if not self.gzipped:
                raise
            raise IdxFormatError(f"{self.source}: bad gzip stream: {error}") from None

    def chunks(self, chunk_bytes: int = CHUNK_BYTES) -> Iterator[bytes]:
        """The payload in pieces of at most `chunk_bytes`; the length is checked at the end."""
        remaining = self.header.payload_bytes
        while remaining:
            chunk = self._read(min(chunk_bytes, remaining))
            if not chunk:
                raise self.header.length_error(self.source, self.header.payload_bytes - remaining)
            remaining -= len(chunk)
            yield chunk
        self._check_end()

    def read_into(self, view: memoryview) -> None:
        """Fill `view` (payload_bytes long) with the payload, one chunk at a time."""
        position = 0
        for chunk in self.chunks():
            view[position : position + len(chunk)] = chunk
            position += len(chunk)

    def _check_end(self) -> None:
        # One byte more is all it takes to know the file is longer than declared; reading
        # on to count them is exactly what a decompression bomb wants.
        if not self._read(1):
            return
        header = self.header
        if not self.gzipped:
            raise header.length_error(self.source, self.stored_bytes - header.offset)
        raise IdxFormatError(
            f"{self.source}: payload is longer than the header says: {header.describe()}, but the"
            f" {self.stored_bytes}-byte gzip file decompresses to more than {header.total_bytes} bytes;"
            " decompression stopped there (a damaged file, or a decompression bomb)"
        )


def read_content(fileobj: BinaryIO, source: str, limit: int = MAX_IDX_BYTES) -> memoryview:
    """The whole decompressed IDX content of `fileobj`, header included; see IdxContent."""
    content = IdxContent(fileobj, source, limit)
    # np.empty, not bytearray: pages of a declared size that never arrives are never touched.
    buffer = np.empty(content.header.total_bytes, np.uint8)
    view = memoryview(buffer).cast("B")
    offset = content.header.offset
    view[:offset] = content.header_bytes
    content.read_into(view[offset:])
    return view


def content_sha256(fileobj: BinaryIO, source: str, limit: int = MAX_IDX_BYTES) -> str:
    """SHA-256 of the decompressed IDX content of `fileobj`, checked like read_content, in constant memory."""
    content = IdxContent(fileobj, source, limit)
    digest = hashlib.sha256(content.header_bytes)
    for chunk in content.chunks():
        digest.update(chunk)
    return digest.hexdigest()


def read_idx_bytes(data: bytes, source: str, limit: int = MAX_IDX_BYTES) -> np.ndarray:
    """Array of an IDX file's bytes, gzipped or not; see parse_idx."""
    return parse_idx(read_content(io.BytesIO(data), source, limit), source)


def read_idx(path: str | os.PathLike, limit: int = MAX_IDX_BYTES) -> np.ndarray:
    """Array stored in the IDX file at `path` (gzipped or not); see parse_idx and IdxContent."""
    source = os.fspath(path)
    with open(path, "rb") as handle:
        return parse_idx(read_content(handle, source, limit), source)


def read_header(path: str | os.PathLike) -> IdxHeader:
    """The header of the IDX file at `path` (gzipped or not), reading only its first bytes:
    cheap enough to run on every workflow start, whatever the file's size."""
    source = os.fspath(path)
    with open(path, "rb") as raw:
        gzipped = raw.read(2) == GZIP_MAGIC
        raw.seek(0)
        handle = gzip.GzipFile(fileobj=raw) if gzipped else raw
        try:
            head = handle.read(4)
            if len(head) == 4 and head[3]:
                head += handle.read(4 * head[3])
        except (OSError, EOFError, zlib.error) as error:
            raise IdxFormatError(f"{source}: bad gzip stream: {error}") from None
    return parse_header(head, source)


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


def read_images_and_labels(
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
