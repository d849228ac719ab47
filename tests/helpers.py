"""What the tests share besides fixtures: the real data's place, a tiny synthetic IDX dataset,
a workflow copy and Snakemake runs on it, and small models laid out like results/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mnist_pipeline.data.datasets import class_names
from mnist_pipeline.data.idx import write_idx
from mnist_pipeline.data.tables import write_table
from mnist_pipeline.evaluation.metrics import predictions_table, score_predictions
from mnist_pipeline.fileio import write_json
from mnist_pipeline.nn import TrainSettings, fit
from mnist_pipeline.nn.model import save_model

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


def synthetic_images(labels: np.ndarray, seed: int, shape: tuple[int, int] = (28, 28)) -> np.ndarray:
    """uint8 (n, *shape) images where each class lights a different block (7x7 in 28x28), plus
    noise: easy enough that a small network learns it in a few epochs, hard enough to need training."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 60, size=(len(labels), *shape), dtype=np.uint8)
    block = min(shape) // 4
    for i, label in enumerate(labels):
        row, col = divmod(int(label) % 12, 4)
        images[i, block * row : block * row + block, block * col : block * col + block] += rng.integers(120, 190, dtype=np.uint8)
    return images


def quadrant_images(n: int, seed: int, noise: float = 0.3, spot: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """8x8 images (flattened to 64 float32 features) with a bright 2x2 spot somewhere in the
    quadrant that is the label (0-3), on normal noise."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, n)
    x = rng.normal(0, noise, (n, 8, 8)).astype(np.float32)
    for i, label in enumerate(y):
        r, c = 4 * (label // 2) + rng.integers(0, 3), 4 * (label % 2) + rng.integers(0, 3)
        x[i, r : r + 2, c : c + 2] += spot
    return x.reshape(n, 64), y


def write_synthetic_dataset(directory: Path, n_train: int = 600, n_test: int = 200, n_classes: int = 10, seed: int = 0, gz: bool = True,
                            shape: tuple[int, int] = (28, 28), label_values: list[int] | None = None) -> Path:
    """The four standard IDX files of a small learnable dataset, written with our own writer:
    images of `shape`, labels 0..n_classes-1 or the given `label_values`, in equal numbers."""
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    suffix = ".gz" if gz else ""
    values = np.asarray(label_values if label_values is not None else range(n_classes), dtype=np.uint8)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = values[np.arange(n) % len(values)]
        rng.shuffle(labels)
        write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", synthetic_images(labels, seed + n, shape))
        write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", labels)
    return directory


def copy_workflow(destination: Path, folders: tuple[str, ...] = ("workflow", "profiles", "src")) -> Path:
    """A private copy of the workflow (Snakefile, config.yaml, workflow/, its default profile) and
    of the package (src/) to run in a test. The workflow runs the package of its own checkout,
    so its jobs import the copy, which a test may then edit without touching the repository."""
    destination.mkdir(parents=True, exist_ok=True)
    shutil.copy2(REPO / "Snakefile", destination / "Snakefile")
    shutil.copy2(REPO / "config.yaml", destination / "config.yaml")
    for folder in folders:
        shutil.copytree(REPO / folder, destination / folder, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    return destination


def workflow_env(workdir: Path) -> dict[str, str]:
    """The environment a user runs the workflow copy in `workdir` from: nothing points Python at
    the copy's src/ (the package installed for the tests is this repository's), so every
    workflow test also shows that the workflow runs the code of its own checkout."""
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.pop("MNIST_PIPELINE_SRC", None)
    return env


def snakemake_command(workdir: Path, *args: str) -> list[str]:
    """The plain `snakemake --cores 2` a user types, run on the workflow copy in `workdir`."""
    return [sys.executable, "-m", "snakemake", "--cores", "2", "--directory", str(workdir), "--snakefile", str(workdir / "Snakefile"), *args]


def snakemake(workdir: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(snakemake_command(workdir, *args), capture_output=True, text=True, cwd=workdir, env=workflow_env(workdir), timeout=600)
    if check and result.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def planned_jobs(workdir: Path, *args: str) -> dict[str, int]:
    """Rule -> job count of a dry run, read from Snakemake's 'Job stats' table."""
    out = snakemake(workdir, "--dry-run", *args)
    text = out.stdout + out.stderr
    if "Nothing to be done" in text:
        return {}
    table = text.split("Job stats:", 1)[1]
    jobs = {}
    for line in table.splitlines()[3:]:
        match = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if match is None:
            break
        jobs[match.group(1)] = int(match.group(2))
    jobs.pop("total", None)
    return jobs


N_TRAIN, N_VAL, N_TEST = 5000, 1000, 2000


def train_experiment(results: Path, name: str, overrides: dict, data: dict) -> Path:
    """results/fashion-mnist/{name}/ with model.npz, history.json, metrics.json, predictions.parquet."""
    settings = TrainSettings(**{"hidden": [64], "batch_norm": False, "dropout": 0.0, "epochs": 2, **overrides})
    norm, classes = data["norm"], class_names("fashion-mnist", 10)
    result = fit(settings, norm.apply(data["x_train"]), data["y_train"], norm.apply(data["x_val"]), data["y_val"], n_classes=10, threads=2)
    directory = results / "fashion-mnist" / name
    directory.mkdir(parents=True)
    save_model(directory / "model.npz", result.model, normalization=norm.as_dict(), classes=classes,
               metadata={"dataset": "fashion-mnist", "experiment": name, "settings": settings.as_dict(),
                         "epochs_run": result.epochs_run, "best_epoch": result.best_epoch, "threads": 2})
    write_json(directory / "history.json", {"epochs": result.history, "epochs_run": result.epochs_run,
                                            "best_epoch": result.best_epoch, "train_seconds": result.train_seconds})
    proba = result.model.predict_proba(norm.apply(data["x_test"]))
    metrics = score_predictions(data["y_test"], proba, classes=classes, n_bootstrap=100)
    metrics.update(val_accuracy=result.history[-1]["val_accuracy"], epochs_run=result.epochs_run,
                   train_seconds=result.train_seconds, n_parameters=result.model.n_parameters)
    write_json(directory / "metrics.json", metrics)
    write_table(predictions_table(np.arange(len(data["y_test"])), data["y_test"], proba), directory / "predictions.parquet")
    return directory


def leaderboard_rows(report_md: str) -> list[str]:
    """The rows of report.md's first table, the leaderboard (later tables, such as the robustness
    summary, name the experiments too)."""
    lines = report_md.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = next((i for i in range(first, len(lines)) if not lines[i].startswith("|")), len(lines))
    return lines[first:end]
