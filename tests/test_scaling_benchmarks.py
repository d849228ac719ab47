"""The scaled-dataset builder and the scaling table (docs/scaling.md) do what their docstrings say."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from mnist_pipeline.data.download import locate_idx
from mnist_pipeline.data.idx import read_images_and_labels

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def split(directory, images, labels):
    return read_images_and_labels(locate_idx(directory, images), locate_idx(directory, labels))


def test_a_scaled_dataset_is_the_original_then_shifted_copies(synthetic_dir, tmp_path):
    command = [sys.executable, str(BENCHMARKS / "scaled_dataset.py"), str(synthetic_dir), str(tmp_path), "--factor", "3"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    images, labels = split(synthetic_dir, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    big_images, big_labels = split(tmp_path, "train-images-idx3-ubyte", "train-labels-idx1-ubyte")
    n = len(labels)
    assert json.loads(done.stdout)["train"] == len(big_labels) == 3 * n
    assert np.array_equal(big_labels, np.tile(labels, 3))
    assert np.array_equal(big_images[:n], images)
    # Copy 1 moves every image one pixel right: column 0 is empty, the rest is the original's columns 0..w-2.
    assert not big_images[n : 2 * n, :, 0].any() and np.array_equal(big_images[n : 2 * n, :, 1:], images[:, :, :-1])
    # Copy 2 moves it one pixel left.
    assert not big_images[2 * n :, :, -1].any() and np.array_equal(big_images[2 * n :, :, :-1], images[:, :, 1:])
    test_images, _ = split(tmp_path, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")
    assert len(test_images) == 3 * len(split(synthetic_dir, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")[1])
    again = tmp_path / "again"
    subprocess.run([*command[:3], str(again), "--factor", "3"], capture_output=True, check=True)
    for name in ("train-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert (again / name).read_bytes() == (tmp_path / name).read_bytes(), "the same source and factor give the same bytes"


def write_results(dataset_dir: Path, train_rows: int, seconds: float) -> None:
    """What scaling_table.py reads of one workflow run: the stages' benchmark files (train's and
    evaluate's in the experiment's run folder), the prepared splits' row counts and the image size."""
    def tsv(path: Path, rss: float) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"s\th:m:s\tmax_rss\n{seconds}\t0:00:01\t{rss}\n")

    for stage in ("download", "parse", "prepare", "report"):
        tsv(dataset_dir / "benchmarks" / f"{stage}.tsv", 100.0)
    for stage in ("train", "evaluate"):
        tsv(dataset_dir / "runs" / "3f2a9c01d4e7" / f"{stage}.tsv", 200.0)
    (dataset_dir / "baseline").mkdir()
    (dataset_dir / "baseline" / "run.json").write_text(json.dumps({"run": "3f2a9c01d4e7"}))
    (dataset_dir / "prepared").mkdir()
    for split, rows in (("train", train_rows), ("val", train_rows // 9), ("test", train_rows // 6)):
        pq.write_table(pa.table({"label": np.zeros(rows, np.int64)}), dataset_dir / "prepared" / f"{split}.parquet")
    (dataset_dir / "parsed").mkdir()
    (dataset_dir / "parsed" / "dataset.json").write_text(json.dumps({"image_shape": [28, 28]}))


def test_the_scaling_table_reads_each_stage_where_the_workflow_writes_it(tmp_path):
    write_results(tmp_path / "results" / "small", 900, 1.0)
    write_results(tmp_path / "results" / "large", 2700, 2.5)
    command = [sys.executable, str(BENCHMARKS / "scaling_table.py"), "small", "large", "--results", str(tmp_path / "results")]
    lines = subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()
    rows = {line.split(" | ")[0].strip("| "): line for line in lines[2:]}
    assert list(rows) == ["download", "parse", "prepare", "train", "evaluate", "report"]
    # Without scaling_run.py's stage_usage.json: Snakemake's max_rss, and no CPU time.
    assert rows["train"] == "| train | 1.0 (nan) | 2.5 (nan) | 200 / 304 | 200 / 313 | 3.00x, 2.50x, nanx |"
