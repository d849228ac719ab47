"""The prepared splits as Parquet: one documented schema, written atomically, read fast.

Schema of every split file (train, val, test):

    id      int64                       row index of the sample in its source IDX file
    label   int64                       class index, 0 <= label < n_classes
    pixels  fixed_size_list<float32>[784]   the 28x28 image, row-major, normalized

The file's key-value metadata holds, under ``mnist_pipeline``, a JSON object with the schema
version, the split name, the normalization (mean, std of pixel/255 over the training split),
the source checksums, and the split's seed and fraction: everything needed to trace a row
back to its IDX file and to normalize new images the same way.

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
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.fileio import atomic_path

SCHEMA_VERSION = 1
METADATA_KEY = b"mnist_pipeline"
N_PIXELS = 28 * 28

SPLIT_SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("label", pa.int64(), nullable=False),
        pa.field("pixels", pa.list_(pa.field("item", pa.float32(), nullable=False), N_PIXELS), nullable=False),
    ]
)

# Reading a group takes about 14 kB of Arrow buffers a row (the values, the list's two int16
# levels a value, the compressed pages): measured on 180k rows, 2048-row groups read in
# 1.4 CPU s with 35 MB of Arrow memory at most, 8192-row ones in 1.9 s with 118 MB, one group
# in 1.9 s with 460 MB; the file size is the same within 0.2%. A fixed count, so a file's
# bytes depend only on its rows.
ROW_GROUP_ROWS = 2048
_WRITE_OPTIONS = dict(compression="zstd", compression_level=1, use_dictionary=True)


@dataclass(frozen=True)
class Split:
    """One prepared split in memory. pixels: float32 (n, 784) C-contiguous; ids, labels: int64 (n,)."""

    ids: np.ndarray
    labels: np.ndarray
    pixels: np.ndarray
    metadata: dict[str, Any]

    def __len__(self) -> int:
        return len(self.labels)

    def require_normalization(self, expected: dict[str, float], user: str) -> None:
        """Refuse to feed these pixels to `user` (a model file) if it was trained on another normalization."""
        have = self.metadata.get("normalization", {})
        if any(have.get(key) != expected.get(key) for key in ("mean", "std")):
            raise TableSchemaError(
                f"{self.metadata.get('name', 'split')} split normalized with {have}, but {user} expects {expected}; "
                "the model was trained on other prepared data: rerun training"
            )


def write_split(path: str | Path, ids: np.ndarray, labels: np.ndarray, pixels: np.ndarray, metadata: dict) -> None:
    """Write one split. pixels: float32 (n, 784); metadata: JSON-able dict stored in the file."""
    pixels = np.asarray(pixels)
    if not len(ids) == len(labels) == len(pixels):
        raise TableSchemaError(f"{path}: ids, labels and pixels differ in length ({len(ids)}, {len(labels)}, {len(pixels)})")
    write_split_rows(path, ids, labels, pixels.__getitem__, metadata)


def write_split_rows(
    path: str | Path, ids: np.ndarray, labels: np.ndarray, pixel_rows: Callable[[slice], np.ndarray], metadata: dict
) -> None:
    """Write one split a row group at a time: pixel_rows(rows) gives the float32 (len, 784) pixels
    of the slice `rows` of the split, so that the whole split need never be in memory."""
    if len(ids) != len(labels):
        raise TableSchemaError(f"{path}: ids and labels differ in length ({len(ids)}, {len(labels)})")
    ids, labels = np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    meta = {"schema_version": SCHEMA_VERSION, **metadata}
    schema = SPLIT_SCHEMA.with_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema, **_WRITE_OPTIONS) as writer:
        # range(..., max(n, 1)) writes an empty split as one empty group, as write_table would.
        for start in range(0, max(len(labels), 1), ROW_GROUP_ROWS):
            rows = slice(start, start + ROW_GROUP_ROWS)
            pixels, n = np.ascontiguousarray(pixel_rows(rows), dtype=np.float32), len(labels[rows])
            if pixels.ndim < 2 or len(pixels) != n or math.prod(pixels.shape[1:]) != N_PIXELS:
                raise TableSchemaError(
                    f"{path}: expected {N_PIXELS} pixels per row for rows {start}..{start + n}, got shape {pixels.shape}"
                )
            column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1), type=pa.float32()), N_PIXELS)
            writer.write_table(pa.Table.from_arrays([pa.array(ids[rows]), pa.array(labels[rows]), column], schema=schema))


def read_split(path: str | Path) -> Split:
    """Read a split written by `write_split`; anything else is a TableSchemaError naming the file."""
    path = Path(path)
    try:
        parquet = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise TableSchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
    schema = parquet.schema_arrow
    _check_schema(path, schema)
    columns = parquet.read(columns=["id", "label"])
    # One float32 array filled group by group: the decoded Parquet of the whole split never
    # exists beside it, so the peak is the array plus one group.
    pixels = np.empty((parquet.metadata.num_rows, N_PIXELS), np.float32)
    start = 0
    for group in range(parquet.num_row_groups):
        column = parquet.read_row_group(group, columns=["pixels"]).column(0).combine_chunks()
        # The child buffer of a null-free fixed-size list is the group's image block in row order.
        flat = column.values.to_numpy(zero_copy_only=False)[column.offset * N_PIXELS : (column.offset + len(column)) * N_PIXELS]
        pixels[start : start + len(column)] = flat.reshape(-1, N_PIXELS)
        start += len(column)
    return Split(
        ids=columns.column("id").to_numpy(),
        labels=columns.column("label").to_numpy(),
        pixels=pixels,
        metadata=read_metadata(path, schema),
    )


def read_metadata(path: str | Path, schema: pa.Schema | None = None) -> dict[str, Any]:
    """The JSON metadata of a split, without reading its rows."""
    schema = schema if schema is not None else pq.read_schema(path)
    raw = (schema.metadata or {}).get(METADATA_KEY)
    if raw is None:
        raise TableSchemaError(f"{path}: no {METADATA_KEY.decode()!r} metadata; was it written by mnist-pipeline prepare?")
    meta = json.loads(raw)
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise TableSchemaError(
            f"{path}: schema version {meta.get('schema_version')!r}, this mnist-pipeline reads version {SCHEMA_VERSION}; rerun prepare"
        )
    return meta


def write_table(table: pa.Table, path: str | Path, **options: Any) -> None:
    """Write a Parquet file atomically: a reader never sees a half-written file at `path`."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, **{**_WRITE_OPTIONS, "row_group_size": 1 << 20, **options})


def _check_schema(path: Path, schema: pa.Schema) -> None:
    actual = pa.schema([schema.field(name) for name in schema.names])
    for expected in SPLIT_SCHEMA:
        if expected.name not in schema.names:
            raise TableSchemaError(f"{path}: missing column {expected.name!r} (expected columns: {', '.join(SPLIT_SCHEMA.names)})")
        field = actual.field(expected.name)
        if not field.type.equals(expected.type):
            raise TableSchemaError(f"{path}: column {expected.name!r} has type {field.type}, expected {expected.type}")
