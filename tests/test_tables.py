import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.tables import SPLIT_SCHEMA, read_split, write_split


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
