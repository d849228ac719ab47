import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mnist_pipeline import tables
from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.tables import SPLIT_SCHEMA, read_split, write_split, write_split_rows


def sample(n=50, seed=0):
    rng = np.random.default_rng(seed)
    return np.arange(n) * 3, rng.integers(0, 10, n), rng.standard_normal((n, 784)).astype(np.float32)


def test_round_trip_is_exact_contiguous_float32(tmp_path):
    ids, labels, pixels = sample()
    write_split(tmp_path / "s.parquet", ids, labels, pixels, {"name": "train", "normalization": {"mean": 0.1, "std": 0.3}})
    split = read_split(tmp_path / "s.parquet")
    assert np.array_equal(split.pixels, pixels) and split.pixels.dtype == np.float32 and split.pixels.flags.c_contiguous
    assert np.array_equal(split.ids, ids) and np.array_equal(split.labels, labels)
    assert split.metadata["normalization"] == {"mean": 0.1, "std": 0.3} and split.metadata["schema_version"] == 1
    assert pq.read_schema(tmp_path / "s.parquet").remove_metadata().equals(SPLIT_SCHEMA)


def test_writes_are_deterministic(tmp_path):
    for name in ("a", "b"):
        write_split(tmp_path / f"{name}.parquet", *sample(), {"name": "x"})
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_a_split_is_written_one_row_group_at_a_time_and_read_back_whole(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", 16)
    ids, labels, pixels = sample(50)
    asked = []

    def pixel_rows(rows):
        asked.append((rows.start, rows.stop))
        return pixels[rows]

    write_split_rows(tmp_path / "s.parquet", ids, labels, pixel_rows, {"name": "train"})
    assert asked == [(0, 16), (16, 32), (32, 48), (48, 64)], "one group's pixels asked for at a time, in order"
    assert pq.ParquetFile(tmp_path / "s.parquet").num_row_groups == 4
    split = read_split(tmp_path / "s.parquet")
    assert np.array_equal(split.pixels, pixels) and split.pixels.flags.c_contiguous
    assert np.array_equal(split.ids, ids) and np.array_equal(split.labels, labels)
    write_split(tmp_path / "whole.parquet", ids, labels, pixels, {"name": "train"})
    assert (tmp_path / "whole.parquet").read_bytes() == (tmp_path / "s.parquet").read_bytes()


def test_reading_a_split_decodes_one_row_group_at_a_time(tmp_path, monkeypatch):
    # Arrow's allocations are its own (tracemalloc does not see them), and its pool only keeps a
    # high-water mark, so the read runs in a fresh interpreter that reports that mark.
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", 64)
    write_split(tmp_path / "s.parquet", *sample(8000), {"name": "train"})
    code = (
        "import sys, pyarrow as pa; from mnist_pipeline.tables import read_split;"
        "split = read_split(sys.argv[1]); print(pa.default_memory_pool().max_memory(), split.pixels.nbytes)"
    )
    done = subprocess.run([sys.executable, "-c", code, str(tmp_path / "s.parquet")], capture_output=True, text=True, check=True)
    arrow_peak, split_bytes = map(int, done.stdout.split())
    assert arrow_peak < split_bytes / 4, f"Arrow held {arrow_peak} bytes at once to read a {split_bytes}-byte split"


def test_pixels_of_the_wrong_width_are_refused_naming_the_file(tmp_path):
    with pytest.raises(TableSchemaError, match=r"s.parquet: expected images of 28x28 pixels for rows 0..3, got shape \(3, 100\)"):
        write_split(tmp_path / "s.parquet", np.arange(3), np.arange(3), np.zeros((3, 100), np.float32), {"name": "bad"})
    assert list(tmp_path.iterdir()) == []


def test_foreign_parquet_is_refused_with_the_file_named(tmp_path):
    path = tmp_path / "other.parquet"
    pq.write_table(pa.table({"id": [1], "label": [2]}), path)
    with pytest.raises(TableSchemaError, match="other.parquet.*missing column 'pixels'"):
        read_split(path)
    pq.write_table(pa.table({"id": [1], "label": [2.0], "pixels": [[0.0] * 784]}), path)
    with pytest.raises(TableSchemaError, match="column 'label' has type double"):
        read_split(path)
    path.write_bytes(b"not parquet at all")
    with pytest.raises(TableSchemaError, match="not a readable Parquet file"):
        read_split(path)


def test_failed_write_leaves_the_old_file(tmp_path):
    path = tmp_path / "s.parquet"
    write_split(path, *sample(), {"name": "old"})
    before = path.read_bytes()
    with pytest.raises(TableSchemaError):
        write_split(path, np.arange(3), np.arange(3), np.zeros((3, 100), np.float32), {"name": "bad"})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["s.parquet"]


def test_normalization_mismatch_is_refused(tmp_path):
    write_split(tmp_path / "s.parquet", *sample(), {"name": "test", "normalization": {"mean": 0.1, "std": 0.3}})
    split = read_split(tmp_path / "s.parquet")
    split.require_normalization({"mean": 0.1, "std": 0.3}, "m.npz")
    with pytest.raises(TableSchemaError, match="m.npz expects"):
        split.require_normalization({"mean": 0.2, "std": 0.3}, "m.npz")


def test_written_files_get_the_umask_mode_not_a_private_one(tmp_path):
    import os

    from mnist_pipeline.fileio import write_json

    old = os.umask(0o022)
    try:
        write_json(tmp_path / "a.json", {"x": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644
