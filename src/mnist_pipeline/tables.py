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
the size of the gzipped IDX while reading back is a zero-copy view of one float32 buffer.
"""

from __future__ import annotations

import json
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

# One row group for a whole split: the splits are at most 60k rows (~190 MB of float32
# decoded), and a single group lets the reader hand back one contiguous buffer.
_WRITE_OPTIONS = dict(compression="zstd", compression_level=1, use_dictionary=True, row_group_size=1 << 20)


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
    pixels = np.ascontiguousarray(pixels, dtype=np.float32).reshape(len(labels), -1)
    if pixels.shape[1] != N_PIXELS:
        raise TableSchemaError(f"{path}: expected {N_PIXELS} pixels per row, got {pixels.shape[1]}")
    if not len(ids) == len(labels) == len(pixels):
        raise TableSchemaError(f"{path}: ids, labels and pixels differ in length ({len(ids)}, {len(labels)}, {len(pixels)})")
    column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1), type=pa.float32()), N_PIXELS)
    table = pa.Table.from_arrays(
        [pa.array(np.asarray(ids, dtype=np.int64)), pa.array(np.asarray(labels, dtype=np.int64)), column],
        schema=SPLIT_SCHEMA,
    )
    meta = {"schema_version": SCHEMA_VERSION, **metadata}
    table = table.replace_schema_metadata({METADATA_KEY: json.dumps(meta, sort_keys=True).encode()})
    write_table(table, path)


def read_split(path: str | Path) -> Split:
    """Read a split written by `write_split`; anything else is a TableSchemaError naming the file."""
    path = Path(path)
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise TableSchemaError(f"{path}: not a readable Parquet file ({exc})") from exc
    _check_schema(path, schema)
    table = pq.read_table(path)
    pixels_col = table.column("pixels").combine_chunks()
    n = len(table)
    # The child buffer of a null-free fixed-size list is the whole image block in row order.
    flat = pixels_col.values.to_numpy(zero_copy_only=False)
    pixels = np.ascontiguousarray(flat[pixels_col.offset * N_PIXELS : (pixels_col.offset + n) * N_PIXELS]).reshape(n, N_PIXELS)
    return Split(
        ids=table.column("id").to_numpy(),
        labels=table.column("label").to_numpy(),
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
        pq.write_table(table, tmp, **{**_WRITE_OPTIONS, **options})


def _check_schema(path: Path, schema: pa.Schema) -> None:
    actual = pa.schema([schema.field(name) for name in schema.names])
    for expected in SPLIT_SCHEMA:
        if expected.name not in schema.names:
            raise TableSchemaError(f"{path}: missing column {expected.name!r} (expected columns: {', '.join(SPLIT_SCHEMA.names)})")
        field = actual.field(expected.name)
        if not field.type.equals(expected.type):
            raise TableSchemaError(f"{path}: column {expected.name!r} has type {field.type}, expected {expected.type}")
