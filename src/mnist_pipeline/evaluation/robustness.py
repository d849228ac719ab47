"""How a trained model holds up on corrupted copies of the test split (corruptions.py): accuracy
per corruption family and severity, the mean over them, and the drop from clean accuracy.

The images are the parsed test split's raw bytes, corrupted, then normalised exactly as the
prepared splits are (preprocess.model_inputs, with the statistics stored in the model). They go
through in batches of about BATCH_PIXELS pixels, each batch corrupted with its own random stream,
so memory stays bounded and the result is the same bytes on every run and at any thread count.

Cost grows with images x families x severities: the whole Fashion-MNIST test split at 17
families x 3 severities is 510,000 corrupted images to classify, 40 s (27 s of CPU) for the default
MLP on this project's 2-core machine while shared, against 11 s (6 s) for `limit=2000`, a fixed
seeded subset; scoring examples/cnn.yaml's network costs about 6.6 times as much. One BLAS thread is
enough: a second changes no result (tested) and, on a busy machine, only slows the network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.data.preprocess import model_inputs
from mnist_pipeline.errors import ConfigError, IdxFormatError
from mnist_pipeline.evaluation.corruptions import FAMILIES, MAX_SEVERITY, check_families, corrupt
from mnist_pipeline.fileio import load_array, read_json, write_json
from mnist_pipeline.integrity import check_class_indices, verified
from mnist_pipeline.nn.model import LoadedModel, load_model

FORMAT = "mnist-pipeline-robustness"
FORMAT_VERSION = 1
BATCH_PIXELS = 1 << 20  # about 1,300 images of 28 x 28 per batch: a few MB per float32 copy


def check_severities(severities: Any, key: str = "robustness.severities") -> list[int]:
    """Severities 1..severities, for a count from 1 to MAX_SEVERITY; ConfigError naming `key` otherwise."""
    if isinstance(severities, bool) or not isinstance(severities, int | np.integer) or not 1 <= severities <= MAX_SEVERITY:
        raise ConfigError(f"config key {key!r}: {severities!r} is not a number of severities; expected 1 to {MAX_SEVERITY}")
    return list(range(1, int(severities) + 1))


def check_limit(limit: Any, key: str = "robustness.limit") -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ConfigError(f"config key {key!r}: {limit!r} is not a number of test images; expected 1 or more, or null for all")
    return int(limit)


def scored_subset(n: int, limit: int | None, seed: int) -> np.ndarray:
    """Indices of the test images scored: all n, or `limit` of them drawn with `seed`, in order."""
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=limit, replace=False))


def score_robustness(
    loaded: LoadedModel,
    images: np.ndarray,
    labels: np.ndarray,
    families: Sequence[str] | None = None,
    severities: int = MAX_SEVERITY,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """Accuracy of `loaded` on the test images, clean and under every family at severities
    1..`severities`, as a JSON-ready dict (see the keys below).

    images: uint8 (n, H, W), the parsed test split (memory-mapped is fine: only the batch being
    scored is read); labels: class indices (n,). families: names in corruptions.FAMILIES, all by
    default. limit: score a fixed subset of that many images, drawn with `seed`.
    """
    families = check_families(list(FAMILIES) if families is None else families)
    levels = check_severities(severities)
    limit = check_limit(limit)
    labels = np.asarray(labels)
    if images.ndim != 3 or tuple(images.shape[1:]) != loaded.image_shape:
        raise ValueError(f"test images are {images.shape[1:]}, the model takes {loaded.image_shape}")
    if labels.shape != (len(images),):
        raise ValueError(f"labels have shape {labels.shape}, expected ({len(images)},) to match the images")
    if seed < 0:
        raise ConfigError(f"config key 'robustness.seed': {seed!r} must be 0 or more")
    rows = scored_subset(len(images), limit, seed)
    if not len(rows):
        raise ValueError("there are no test images to score")
    correct = np.zeros((len(families), len(levels)), np.int64)
    clean = 0
    step = max(1, BATCH_PIXELS // (images.shape[1] * images.shape[2]))
    for stream, start in enumerate(range(0, len(rows), step)):
        batch = np.asarray(images[rows[start : start + step]], dtype=np.uint8)
        truth = labels[rows[start : start + step]]
        clean += _count_correct(loaded, batch, truth)
        for f, family in enumerate(families):
            for s, severity in enumerate(levels):
                correct[f, s] += _count_correct(loaded, corrupt(batch, family, severity, seed, stream), truth)
    n = len(rows)
    accuracy = correct / n
    clean_accuracy = clean / n
    mean = float(accuracy.mean())
    by_family = {family: float(accuracy[f].mean()) for f, family in enumerate(families)}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "families": families,
        "severities": levels,
        "seed": int(seed),
        "n_images": int(n),
        "n_test": int(len(images)),
        "clean_accuracy": float(clean_accuracy),
        # family -> accuracy at each of `severities`, in order
        "accuracy": {family: [float(a) for a in accuracy[f]] for f, family in enumerate(families)},
        "family_accuracy": by_family,
        "mean_corruption_accuracy": mean,
        # (clean - mean) / clean; null when nothing was right on clean images
        "relative_drop": (clean_accuracy - mean) / clean_accuracy if clean_accuracy > 0 else None,
        # lowest mean accuracy over the severities; ties go to the first listed
        "worst_family": min(families, key=lambda family: by_family[family]),
    }


def _count_correct(loaded: LoadedModel, images: np.ndarray, labels: np.ndarray) -> int:
    proba = loaded.model.predict_proba(model_inputs(images, loaded.normalization))
    return int(np.count_nonzero(proba.argmax(axis=1) == labels))


def score_robustness_files(
    model_path: str | Path,
    test_images: str | Path,
    test_labels: str | Path,
    out_json: str | Path,
    families: Sequence[str] | None = None,
    severities: int = MAX_SEVERITY,
    seed: int = 0,
    limit: int | None = None,
) -> dict[str, Any]:
    """score_robustness of the model file on the parsed test split's .npy files, written to
    `out_json` atomically and sealed (sorted keys, the same bytes for the same inputs); returns the dict.

    Every input is checked against the digest its stage wrote beside it (integrity.py): a
    changed file is a ChecksumError naming it, a label outside the model's classes an
    IdxFormatError naming the labels file.
    """
    loaded = load_model(verified(model_path))
    images = load_array(test_images)
    labels = load_array(test_labels, mmap_mode=None)
    check_class_indices(labels, len(loaded.classes), test_labels, IdxFormatError)
    result = score_robustness(loaded, images, labels, families, severities, seed, limit)
    write_json(out_json, result, seal=True)
    return result


def read_robustness(path: str | Path) -> dict[str, Any]:
    """robustness.json as score_robustness_files wrote it: checked against its digest (a
    ChecksumError naming the file when it changed), then its content (a ValueError naming the
    file and the key at fault)."""
    data = read_json(path, verify=True)

    def fail(what: str) -> ValueError:
        return ValueError(f"{path}: not a robustness result written by mnist-pipeline: {what}")

    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise fail(f"its 'format' is not {FORMAT!r}")
    if data.get("format_version") != FORMAT_VERSION:
        raise fail(f"format_version {data.get('format_version')!r}, this version reads {FORMAT_VERSION}")
    families, levels = data.get("families"), data.get("severities")
    if not isinstance(families, list) or not families or not all(isinstance(f, str) for f in families):
        raise fail("'families' is not a list of names")
    if not isinstance(levels, list) or not levels or not all(isinstance(s, int) for s in levels):
        raise fail("'severities' is not a list of integers")
    accuracy = data.get("accuracy")
    if not isinstance(accuracy, dict) or sorted(accuracy) != sorted(families):
        raise fail("'accuracy' does not hold one entry per family")
    for family, values in accuracy.items():
        if not isinstance(values, list) or len(values) != len(levels) or not all(_fraction(v) for v in values):
            raise fail(f"'accuracy.{family}' is not {len(levels)} fractions in [0, 1]")
    for key in ("clean_accuracy", "mean_corruption_accuracy"):
        if not _fraction(data.get(key)):
            raise fail(f"{key!r} is not a fraction in [0, 1]")
    if data.get("worst_family") not in families:
        raise fail("'worst_family' is not one of its families")
    return data


def _fraction(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and 0 <= value <= 1
