"""The prepared splits as Parquet: one documented schema, written atomically, read fast.

Schema of every split file (train, val, test):

    id      int64                       row index of the sample in its source IDX file
    label   int64                       class index, 0 <= label < n_classes
    pixels  fixed_size_list<float32>[H*W]   the H x W image, row-major, normalized (784 for 28x28)

The file's key-value metadata holds, under ``mnist_pipeline``, a JSON object with the schema
version, the split name, the image size ``image_shape`` [H, W], the normalization (mean, std
of pixel/255 over the training split),
the source checksums, and the split's seed and fraction: everything needed to trace a row
back to its IDX file and to normalize new images the same way.

Each file is sealed (fileio, integrity.py): `read_split` refuses one whose bytes changed since
prepare wrote them, one Parquet cannot decode and one with a label outside the classes, each
naming the file and how to rebuild it.

Encoding (chosen by measurement, see benchmarks/parquet_speed.py): the normalized pixels take
at most 256 distinct float32 values because they come from bytes, so dictionary encoding
stores each one in 8 bits and zstd then squeezes the many zeros; the file comes out close to
the size of the gzipped IDX.

Memory: a split is written and read one row group of ROW_GROUP_ROWS rows at a time, so
writing never holds more than one group of pixels, and reading holds the split's one float32
array plus one group's Parquet buffers, whatever the split's size (README, "Cost as the data
grows", has the measurements).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.fileio import atomic_path
from mnist_pipeline.integrity import check_class_indices, rebuild_hint, verified

SCHEMA_VERSION = 1
METADATA_KEY = b"mnist_pipeline"


def split_schema(n_pixels: int) -> pa.Schema:
    """The columns of a split whose images have `n_pixels` (H*W) pixels each."""
    return pa.schema(
        [
            pa.field("id", pa.int64(), nullable=False),
            pa.field("label", pa.int64(), nullable=False),
            pa.field("pixels", pa.list_(pa.field("item", pa.float32(), nullable=False), n_pixels), nullable=False),
        ]
    )


SPLIT_SCHEMA = split_schema(28 * 28)

# Reading a group takes about 14 kB of Arrow buffers a row (the values, the list's two int16
# levels a value, the compressed pages): measured on 180k rows, 2048-row groups read in
# 1.4 CPU s with 35 MB of Arrow memory at most, 8192-row ones in 1.9 s with 118 MB, one group
# in 1.9 s with 460 MB; the file size is the same within 0.2%. A fixed count, so a file's
# bytes depend only on its rows.
ROW_GROUP_ROWS = 2048
_WRITE_OPTIONS = dict(compression="zstd", compression_level=1, use_dictionary=True)


@dataclass(frozen=True)
class Split:
    """One prepared split in memory. pixels: float32 (n, H*W) C-contiguous; ids, labels: int64 (n,)."""

    ids: np.ndarray
    labels: np.ndarray
    pixels: np.ndarray
    metadata: dict[str, Any]

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def image_shape(self) -> tuple[int, int]:
        """(H, W) of the images the rows hold; splits from before it was recorded are 28x28."""
        return _image_shape(self.metadata)

    def require_normalization(self, expected: dict[str, float], user: str) -> None:
        """Refuse to feed these pixels to `user` (a model file) if it was trained on another normalization."""
        have = self.metadata.get("normalization", {})
        if any(have.get(key) != expected.get(key) for key in ("mean", "std")):
            raise TableSchemaError(
                f"{self.metadata.get('name', 'split')} split normalized with {have}, but {user} expects {expected}; "
                "the model was trained on other prepared data: rerun training"
            )


def write_split(path: str | Path, ids: np.ndarray, labels: np.ndarray, pixels: np.ndarray, metadata: dict) -> None:
    """Write one split. pixels: float32 (n, H*W) or (n, H, W); metadata: JSON-able dict stored
    in the file, whose `image_shape` [H, W] (28x28 when absent) the pixels must fit."""
    pixels = np.asarray(pixels)
    if not len(ids) == len(labels) == len(pixels):
        raise TableSchemaError(f"{path}: ids, labels and pixels differ in length ({len(ids)}, {len(labels)}, {len(pixels)})")
    write_split_rows(path, ids, labels, pixels.__getitem__, metadata)


def write_split_rows(
    path: str | Path, ids: np.ndarray, labels: np.ndarray, pixel_rows: Callable[[slice], np.ndarray], metadata: dict
) -> None:
    """Write one split a row group at a time: pixel_rows(rows) gives the float32 (len, H*W) pixels
    of the slice `rows` of the split, so that the whole split need never be in memory."""
    image_rows, image_cols = _image_shape(metadata)
    n_pixels = image_rows * image_cols
    if n_pixels == 0:
        raise TableSchemaError(f"{path}: image_shape {image_rows}x{image_cols} holds no pixel")
    if len(ids) != len(labels):
        raise TableSchemaError(f"{path}: ids and labels differ in length ({len(ids)}, {len(labels)})")
    ids, labels = np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    meta = {"schema_version": SCHEMA_VERSION, **metadata}
    schema = split_schema(n_pixels).with_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path, seal=True) as tmp, pq.ParquetWriter(tmp, schema, **_WRITE_OPTIONS) as writer:
        # range(..., max(n, 1)) writes an empty split as one empty group, as write_table would.
        for start in range(0, max(len(labels), 1), ROW_GROUP_ROWS):
            rows = slice(start, start + ROW_GROUP_ROWS)
            pixels, n = np.ascontiguousarray(pixel_rows(rows), dtype=np.float32), len(labels[rows])
            if pixels.ndim < 2 or len(pixels) != n or math.prod(pixels.shape[1:]) != n_pixels:
                raise TableSchemaError(
                    f"{path}: expected images of {image_rows}x{image_cols} pixels for rows {start}..{start + n}, got shape {pixels.shape}"
                )
            column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1), type=pa.float32()), n_pixels)
            writer.write_table(pa.Table.from_arrays([pa.array(ids[rows]), pa.array(labels[rows]), column], schema=schema))


def read_split(path: str | Path) -> Split:
    """Read a split written by `write_split`, checked against its digest first (a ChecksumError
    naming the file when it changed since); anything else is a TableSchemaError naming the file."""
    path = verified(path)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise TableSchemaError(f"{path}: corrupted: not a readable Parquet file ({_one_line(exc)}); {rebuild_hint(path)}") from None
    with _decoding(path):
        split = _read_split(path, parquet)
    classes = split.metadata.get("classes")
    check_class_indices(split.labels, len(classes) if isinstance(classes, list) else None, path, TableSchemaError)
    return split


def _read_split(path: Path, parquet: pq.ParquetFile) -> Split:
    schema = parquet.schema_arrow
    _check_schema(path, schema)
    metadata = read_metadata(path, schema)
    rows, cols = _image_shape(metadata)
    n_pixels = rows * cols
    stored = schema.field("pixels").type.list_size
    if stored != n_pixels:
        raise TableSchemaError(f"{path}: rows hold {stored} pixels, but the metadata says {rows}x{cols} images; rerun prepare")
    columns = parquet.read(columns=["id", "label"])
    # One float32 array filled group by group: the decoded Parquet of the whole split never
    # exists beside it, so the peak is the array plus one group.
    pixels = np.empty((parquet.metadata.num_rows, n_pixels), np.float32)
    start = 0
    for group in range(parquet.num_row_groups):
        column = parquet.read_row_group(group, columns=["pixels"]).column(0).combine_chunks()
        # The child buffer of a null-free fixed-size list is the group's image block in row order.
        flat = column.values.to_numpy(zero_copy_only=False)[column.offset * n_pixels : (column.offset + len(column)) * n_pixels]
        pixels[start : start + len(column)] = flat.reshape(-1, n_pixels)
        start += len(column)
    return Split(
        ids=columns.column("id").to_numpy(),
        labels=columns.column("label").to_numpy(),
        pixels=pixels,
        metadata=metadata,
    )


def read_metadata(path: str | Path, schema: pa.Schema | None = None) -> dict[str, Any]:
    """The JSON metadata of a split, without reading its rows."""
    schema = schema if schema is not None else pq.read_schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise TableSchemaError(f"{path}: no {METADATA_KEY.decode()!r} metadata; was it written by mnist-pipeline prepare?")
    try:
        meta = json.loads(raw)
    except ValueError as exc:
        raise TableSchemaError(f"{path}: corrupted: its {METADATA_KEY.decode()!r} metadata is not JSON ({exc}); {rebuild_hint(path)}") from None
    if not isinstance(meta, dict):
        raise TableSchemaError(f"{path}: its {METADATA_KEY.decode()!r} metadata is {type(meta).__name__}, expected a JSON object")
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise TableSchemaError(
            f"{path}: schema version {meta.get('schema_version')!r}, this mnist-pipeline reads version {SCHEMA_VERSION}; rerun prepare"
        )
    return meta


def write_table(table: pa.Table, path: str | Path, *, seal: bool = False, **options: Any) -> None:
    """Write a Parquet file atomically: a reader never sees a half-written file at `path`.
    seal: with its digest beside it, for `read_table`."""
    with atomic_path(path, seal=seal) as tmp:
        pq.write_table(table, tmp, **{**_WRITE_OPTIONS, "row_group_size": 1 << 20, **options})


def read_table(path: str | Path) -> pa.Table:
    """A table `write_table(..., seal=True)` wrote, checked against its digest; ChecksumError or
    TableSchemaError naming the file when it changed since or cannot be decoded."""
    path = verified(path)
    with _decoding(path):
        return pq.read_table(path)


@contextmanager
def _decoding(path: Path) -> Iterator[None]:
    """Name `path` in what the Parquet decoder raises (alone it says `Unexpected end of stream`)."""
    try:
        yield
    except (OSError, pa.ArrowException) as exc:
        raise TableSchemaError(f"{path}: corrupted: Parquet cannot decode it ({_one_line(exc)}); {rebuild_hint(path)}") from None


def _one_line(error: BaseException) -> str:
    """Arrow's message on one line (some span several), to end a stage log's FAILED line."""
    return " ".join(str(error).split())


def _image_shape(metadata: dict[str, Any]) -> tuple[int, int]:
    rows, cols = metadata.get("image_shape", (28, 28))
    return int(rows), int(cols)


def _check_schema(path: Path, schema: pa.Schema) -> None:
    actual = pa.schema([schema.field(name) for name in schema.names])
    pixels = actual.field("pixels").type if "pixels" in schema.names else None
    # Any image size is allowed; read_split compares it with the metadata's image_shape.
    expected_schema = split_schema(pixels.list_size if isinstance(pixels, pa.FixedSizeListType) else 28 * 28)
    for expected in expected_schema:
        if expected.name not in schema.names:
            raise TableSchemaError(f"{path}: missing column {expected.name!r} (expected columns: {', '.join(expected_schema.names)})")
        field = actual.field(expected.name)
        if not field.type.equals(expected.type):
            raise TableSchemaError(f"{path}: column {expected.name!r} has type {field.type}, expected {expected.type}")
