"""The prepared splits as Parquet: one documented schema, written atomically, read fast.

Schema of every split file (train, val, test):

    id      int64                       row index of the sample in its source IDX file
    label   int64                       class index, 0 <= label < n_classes
    pixels  fixed_size_list<float32>[H*W]   the H x W image, row-major, normalized (784 for 28x28)

The file's key-value metadata holds, under ``mnist_pipeline``, a JSON object with the schema
version, the split name, the image size ``image_shape`` [H, W], the normalization (mean, std of pixel/255 over the training split),
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

# One row group for a whole split: the splits are at most 60k rows (~190 MB of float32
# decoded), and a single group lets the reader hand back one contiguous buffer.
_WRITE_OPTIONS = dict(compression="zstd", compression_level=1, use_dictionary=True, row_group_size=1 << 20)


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
        rows, cols = self.metadata.get("image_shape", (28, 28))
        return int(rows), int(cols)

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
    rows, cols = metadata.get("image_shape", (28, 28))
    n_pixels = int(rows) * int(cols)
    if not len(ids) == len(labels) == len(pixels):
        raise TableSchemaError(f"{path}: ids, labels and pixels differ in length ({len(ids)}, {len(labels)}, {len(pixels)})")
    pixels = np.ascontiguousarray(pixels, dtype=np.float32)
    if pixels.size != len(labels) * n_pixels or n_pixels == 0:
        raise TableSchemaError(f"{path}: expected {len(labels)} images of {rows}x{cols} pixels, got an array of shape {pixels.shape}")
    column = pa.FixedSizeListArray.from_arrays(pa.array(pixels.reshape(-1), type=pa.float32()), n_pixels)
    table = pa.Table.from_arrays(
        [pa.array(np.asarray(ids, dtype=np.int64)), pa.array(np.asarray(labels, dtype=np.int64)), column],
        schema=split_schema(n_pixels),
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
    metadata = read_metadata(path, schema)
    rows, cols = metadata.get("image_shape", (28, 28))
    n_pixels = int(rows) * int(cols)
    stored = schema.field("pixels").type.list_size
    if stored != n_pixels:
        raise TableSchemaError(f"{path}: rows hold {stored} pixels, but the metadata says {rows}x{cols} images; rerun prepare")
    table = pq.read_table(path)
    pixels_col = table.column("pixels").combine_chunks()
    n = len(table)
    # The child buffer of a null-free fixed-size list is the whole image block in row order.
    flat = pixels_col.values.to_numpy(zero_copy_only=False)
    pixels = np.ascontiguousarray(flat[pixels_col.offset * n_pixels : (pixels_col.offset + n) * n_pixels]).reshape(n, n_pixels)
    return Split(
        ids=table.column("id").to_numpy(),
        labels=table.column("label").to_numpy(),
        pixels=pixels,
        metadata=metadata,
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
    pixels = actual.field("pixels").type if "pixels" in schema.names else None
    # Any image size is allowed; read_split compares it with the metadata's image_shape.
    expected_schema = split_schema(pixels.list_size if isinstance(pixels, pa.FixedSizeListType) else 28 * 28)
    for expected in expected_schema:
        if expected.name not in schema.names:
            raise TableSchemaError(f"{path}: missing column {expected.name!r} (expected columns: {', '.join(expected_schema.names)})")
        field = actual.field(expected.name)
        if not field.type.equals(expected.type):
            raise TableSchemaError(f"{path}: column {expected.name!r} has type {field.type}, expected {expected.type}")
