"""Shared fixtures: the real Fashion-MNIST files, a tiny synthetic IDX dataset, a workflow copy."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.idx import write_idx

REPO = Path(__file__).resolve().parents[1]
FASHION_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
FASHION_FILES = [f"{stem}.gz" for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")]


def require(condition: bool, why: str) -> None:
    """Skip a test whose real data, browser or server is missing; under CI that is a failure."""
    if condition:
        return
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why} (CI=true: a missing prerequisite fails the test instead of skipping it)")
    pytest.skip(why)


@pytest.fixture(scope="session")
def fashion_dir() -> Path:
    """The real Fashion-MNIST IDX files (Debian package dataset-fashion-mnist)."""
    require(all((FASHION_DIR / name).is_file() for name in FASHION_FILES),
            f"real Fashion-MNIST files missing in {FASHION_DIR}: apt-get install dataset-fashion-mnist")
    return FASHION_DIR


def synthetic_images(labels: np.ndarray, seed: int) -> np.ndarray:
    """uint8 (n, 28, 28) images where each class lights a different 7x7 block, plus noise:
    easy enough that a small network learns it in a few epochs, hard enough to need training."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), 28, 28), dtype=np.uint8)
    for i, label in enumerate(labels):
        row, col = divmod(int(label), 4)
        images[i, 7 * row : 7 * row + 7, 7 * col : 7 * col + 7] += rng.integers(120, 190, dtype=np.uint8)
    return images


def write_synthetic_dataset(directory: Path, n_train: int = 600, n_test: int = 200, n_classes: int = 10, seed: int = 0, gz: bool = True) -> Path:
    """The four standard IDX files of a small learnable dataset, written with our own writer."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % n_classes).astype(np.uint8)
        rng.shuffle(labels)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", synthetic_images(labels, seed + n))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return directory


@pytest.fixture(scope="session")
def synthetic_dir(tmp_path_factory) -> Path:
    return write_synthetic_dataset(tmp_path_factory.mktemp("synthetic-idx"))


def copy_workflow(destination: Path) -> Path:
    """A private copy of the workflow (Snakefile, config.yaml, workflow/) and of the package
    (src/) to run in a test: run it with `workflow_env(destination)` so that its jobs import
    the copied package, which a test may then edit without touching the repository."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", destination / "Snakefile")
    shutil.copy2(REPO / "config.yaml", destination / "config.yaml")
    for folder in ("workflow", "src"):
        shutil.copytree(REPO / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return destination


def workflow_env(workdir: Path) -> dict[str, str]:
    """Environment in which Snakemake and its jobs import the package copy in `workdir`."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(workdir / "src"), env.get("PYTHONPATH")]))
    return env
