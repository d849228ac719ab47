"""The scaled-dataset builder (benchmarks/scaled_dataset.py) makes what its docstring says."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from mnist_pipeline.download import locate_idx
from mnist_pipeline.idx import read_images_and_labels

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
