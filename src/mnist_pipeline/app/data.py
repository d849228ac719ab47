"""What the app shows, read from the workflow's results/ tree; no Streamlit here.

Layout read (the outputs README.md's "What the stages do" lists):

    results/{dataset}/{experiment}/model.npz, metrics.json, history.json, predictions.parquet
    results/{dataset}/parsed/test-images.npy      uint8 (n, H, W), indexed by predictions' `id`

Everything is read, never computed by training: the app must answer in a blink and must show
exactly what the pipeline produced.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from mnist_pipeline.data.preprocess import OVERFLOW, as_dataset_image, framing_for, model_inputs, to_gray
from mnist_pipeline.errors import ImageInputError
from mnist_pipeline.evaluation.corruptions import FAMILIES, corrupt
from mnist_pipeline.evaluation.corruptions import MAX_SEVERITY as MAX_SEVERITY  # the control's slider ends there
from mnist_pipeline.evaluation.metrics import confusion_matrix, read_predictions, top_confusions
from mnist_pipeline.fileio import read_json
from mnist_pipeline.layout import RESULTS, RESULTS_ENV, DatasetLayout

# history.json per-epoch keys worth plotting, in the order the app offers them.
CURVE_METRICS = ("val_accuracy", "train_accuracy", "val_loss", "train_loss", "learning_rate")


def results_dir(argv: Sequence[str], environ: Mapping[str, str]) -> Path:
    """The results directory: `--results DIR` among the script's arguments, else $MNIST_PIPELINE_RESULTS, else ./results."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--results", default=None)
    known, _ = parser.parse_known_args(list(argv))
    return Path(known.results or environ.get(RESULTS_ENV) or RESULTS)


@dataclass(frozen=True)
class Experiment:
    """One trained model's folder: results/{dataset}/{name}/."""

    dataset: str
    name: str
    directory: Path

    @property
    def label(self) -> str:
        return f"{self.dataset} / {self.name}"

    def path(self, leaf: str) -> Path:
        return self.directory / leaf

    def stamp(self, leaf: str) -> int:
        """Modification time (ns) of one of its files, 0 if absent: a cache key that changes on a rerun."""
        try:
            return self.path(leaf).stat().st_mtime_ns
        except FileNotFoundError:
            return 0


def find_experiments(results: str | os.PathLike) -> list[Experiment]:
    """Every results/{dataset}/{experiment}/ that holds a model.npz, sorted by dataset then name."""
    results = Path(results)
    found = [
        Experiment(model.parent.parent.name, model.parent.name, model.parent)
        for model in results.glob("*/*/model.npz")
        if model.is_file()
    ]
    return sorted(found, key=lambda e: (e.dataset, e.name))


def read_optional_json(path: Path) -> Any:
    """The JSON at `path`, or None when the file does not exist (yet)."""
    return read_json(path) if path.is_file() else None


def summary_row(experiment: Experiment) -> dict[str, Any]:
    """One leaderboard row: experiment, test/val accuracy, epochs, parameters, seconds (None where unknown)."""
    metrics = read_optional_json(experiment.path("metrics.json")) or {}
    return {
        "experiment": experiment.name,
        "test_accuracy": metrics.get("test_accuracy"),
        "val_accuracy": metrics.get("val_accuracy"),
        "epochs_run": metrics.get("epochs_run"),
        "n_parameters": metrics.get("n_parameters"),
        "train_seconds": metrics.get("train_seconds"),
    }


def learning_curves(experiments: Sequence[Experiment], metric: str) -> dict[str, tuple[list[int], list[float]]]:
    """Experiment name -> (epochs, values of `metric`) from each history.json; those without one are left out."""
    if metric not in CURVE_METRICS:
        raise ValueError(f"metric must be one of {', '.join(CURVE_METRICS)}, got {metric!r}")
    curves = {}
    for experiment in experiments:
        history = read_optional_json(experiment.path("history.json"))
        if not history:
            continue
        epochs = [row for row in history["epochs"] if row.get(metric) is not None]
        curves[experiment.name] = ([int(row["epoch"]) for row in epochs], [float(row[metric]) for row in epochs])
    return curves


def load_predictions(experiment: Experiment) -> dict[str, np.ndarray] | None:
    """predictions.parquet as arrays id, label, predicted (n,), proba (n, k); None if not evaluated yet."""
    path = experiment.path("predictions.parquet")
    if not path.is_file():
        return None
    return read_predictions(pq.read_table(path), source=os.fspath(path))


def confusion_pairs(predictions: Mapping[str, np.ndarray]) -> list[tuple[int, int, int]]:
    """Every (true, predicted, count) with count > 0 and true != predicted, most frequent first."""
    k = predictions["proba"].shape[1]
    cm = confusion_matrix(predictions["label"], predictions["predicted"], k)
    return top_confusions(cm, limit=k * k)


@dataclass(frozen=True)
class Mistake:
    """One misclassified test image: its id (row of test-images.npy) and the two probabilities."""

    id: int
    p_predicted: float
    p_true: float


def mistakes(predictions: Mapping[str, np.ndarray], true: int, predicted: int, limit: int | None = None) -> list[Mistake]:
    """Test images of class `true` predicted as `predicted`, the most confident mistakes first."""
    rows = np.flatnonzero((predictions["label"] == true) & (predictions["predicted"] == predicted))
    proba = predictions["proba"]
    rows = rows[np.argsort(-proba[rows, predicted], kind="stable")][:limit]
    return [Mistake(int(predictions["id"][r]), float(proba[r, predicted]), float(proba[r, true])) for r in rows]


def test_images(results: str | os.PathLike, dataset: str) -> np.ndarray | None:
    """The parsed test images memory-mapped, uint8 (n, H, W); None if absent."""
    path = Path(DatasetLayout(results, dataset).parsed("test-images.npy"))
    return np.load(path, mmap_mode="r", allow_pickle=False) if path.is_file() else None


def classify(loaded, image, center: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """(what the network sees: uint8 (H, W) of the model, class probabilities float32 (k,)) for one image.

    `image` is a Pillow image of any mode and size, or a grayscale uint8 array (h, w).
    Raises errors.ImageInputError when there is nothing to classify (blank, transparent).
    """
    gray = image if isinstance(image, np.ndarray) else to_gray(image)
    seen = as_dataset_image(gray, framing_for(loaded.metadata.get("dataset")), center, loaded.image_shape)
    return seen, probabilities(loaded, seen)


def probabilities(loaded, seen: np.ndarray) -> np.ndarray:
    """Class probabilities float32 (k,) of one image as the network sees it; ImageInputError when
    the model's outputs overflow (a model file with absurd weights), never a row of NaN."""
    with np.errstate(over="ignore", invalid="ignore"):
        proba = loaded.model.predict_proba(model_inputs(seen[None], loaded.normalization))[0]
    if not np.isfinite(proba).all():
        raise ImageInputError(OVERFLOW)
    return proba


def enlarge(image: np.ndarray, factor: int = 4) -> np.ndarray:
    """A small uint8 image (h, w) scaled up by pixel repetition, so the browser shows crisp pixels."""
    return np.repeat(np.repeat(np.asarray(image), factor, axis=0), factor, axis=1)


# The corruption control on the Models page: the report's families (How it holds up), applied to
# the image as the network sees it, with one fixed seed so that the same drawing gives the same result.
NO_CORRUPTION = "none"
CORRUPTION_CHOICES = (NO_CORRUPTION, *FAMILIES)
CORRUPTION_SEED = 0


def corruption_label(family: str) -> str:
    """How the control names a choice: the family and its group."""
    return "none (the image as it is)" if family == NO_CORRUPTION else f"{family} ({FAMILIES[family].group})"


def corruption_help(family: str) -> str:
    """What a choice does, in the report's words."""
    return "The image as the network sees it, unchanged." if family == NO_CORRUPTION else FAMILIES[family].description


def classify_corrupted(loaded, seen: np.ndarray, family: str, severity: int) -> tuple[np.ndarray, np.ndarray]:
    """(`seen` (what the network sees, uint8 (H, W)) corrupted by `family` at `severity`, the class
    probabilities float32 (k,) of the corrupted image). NO_CORRUPTION leaves it unchanged."""
    corrupted = seen if family == NO_CORRUPTION else corrupt(seen[None], family, severity, CORRUPTION_SEED)[0]
    return corrupted, probabilities(loaded, corrupted)
