"""Shared fixtures: the real Fashion-MNIST files, a tiny synthetic IDX dataset, models trained on
real data laid out like results/. The helpers they use are in helpers.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import FASHION_DIR, FASHION_FILES, N_TEST, N_TRAIN, N_VAL, require, train_experiment, write_synthetic_dataset
from mnist_pipeline.data.idx import read_idx
from mnist_pipeline.data.splits import fit_normalization
from mnist_pipeline.fileio import save_array


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The real Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)."""
    require(all((FASHION_DIR / name).is_file() for name in FASHION_FILES),
            f"real Fashion-MNIST files missing in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    return FASHION_DIR


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic-idx"))


@pytest.fixture(scope="session")
def fashion_test(fashion_dir):
    """The first N_TEST real Fashion-MNIST test images uint8 (n, 28, 28) and labels int64 (n,)."""
    images = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")[:N_TEST]
    labels = read_idx(fashion_dir / "t10k-labels-idx1-ubyte.gz")[:N_TEST].astype(np.int64)
    return images, labels


@pytest.fixture(scope="session")
def trained_results(tmp_path_factory, fashion_dir, fashion_test) -> Path:
    """A results/ tree as the workflow writes it: two fashion-mnist experiments and the parsed test images."""
    images = read_idx(fashion_dir / "train-images-idx3-ubyte.gz")[: N_TRAIN + N_VAL]
    labels = read_idx(fashion_dir / "train-labels-idx1-ubyte.gz")[: N_TRAIN + N_VAL].astype(np.int64)
    data = {
        "x_train": images[:N_TRAIN], "y_train": labels[:N_TRAIN], "x_val": images[N_TRAIN:], "y_val": labels[N_TRAIN:],
        "x_test": fashion_test[0], "y_test": fashion_test[1], "norm": fit_normalization(images[:N_TRAIN]),
    }
    results = tmp_path_factory.mktemp("trained") / "results"
    train_experiment(results, "baseline", {}, data)
    train_experiment(results, "sgd", {"optimizer": "sgd", "learning_rate": 0.05}, data)
    save_array(results / "fashion-mnist" / "parsed" / "test-images.npy", fashion_test[0])
    return results


@pytest.fixture(scope="session")
def model_path(trained_results) -> Path:
    return trained_results / "fashion-mnist" / "baseline" / "model.npz"


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks small enough that every layer, every job and the optimiser split their work on
    tiny data, on threads and on helper processes alike."""
    from mnist_pipeline.nn import columns, conv, optim, parallel

    monkeypatch.setattr(parallel, "BLOCK", 100)
    monkeypatch.setattr(parallel, "COLUMNS", 8)
    monkeypatch.setattr(parallel, "MIN_PRODUCT", 1)
    monkeypatch.setattr(columns, "CHAINED_PRODUCT", 1)
    monkeypatch.setattr(parallel, "PARALLEL_MIN", 0)
    monkeypatch.setattr(parallel, "PROCESS_MIN", 0)
    monkeypatch.setattr(optim, "STEP_BLOCK", 100)
    monkeypatch.setattr(conv, "SAMPLES", 3)
