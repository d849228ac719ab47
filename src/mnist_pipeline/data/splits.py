"""From parsed IDX arrays to normalized train/val/test splits.

The validation rows are drawn from the training set, stratified by class, with a seeded
generator; the normalization statistics are computed on the remaining training rows only,
so nothing about the validation or test images leaks into the model's inputs.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_pipeline.data.parsed import ParsedDataset
from mnist_pipeline.data.tables import ROW_GROUP_ROWS, write_split_rows
from mnist_pipeline.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Normalization:
    """x_normalized = (pixel / 255 - mean) / std, with mean and std of the training split."""

    mean: float
    std: float

    def apply(self, images: np.ndarray) -> np.ndarray:
        """images: uint8 (n, H, W) or (n, H*W) -> float32 (n, H*W), C-contiguous."""
        # A 256-entry lookup table does the scaling once per byte value, not once per pixel,
        # and keeps every step in float32.
        table = ((np.arange(256, dtype=np.float32) / np.float32(255) - np.float32(self.mean)) / np.float32(self.std)).astype(np.float32)
        return table[np.asarray(images, dtype=np.uint8).reshape(len(images), -1)]

    def as_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "std": self.std, "scale": 255.0}


def fit_normalization(images: np.ndarray, rows: np.ndarray | None = None) -> Normalization:
    """Mean and std of pixel/255 over uint8 `images` (only `rows` of them when given), from a
    byte histogram (exact, one pass)."""
    counts = np.zeros(256, np.int64)
    # Block by block: bincount widens its input to intp, 8 bytes a pixel, and images[rows]
    # would copy the split; a block of each bounds both, and integer counts sum exactly.
    n = len(images) if rows is None else len(rows)
    for start in range(0, n, ROW_GROUP_ROWS):
        block = slice(start, start + ROW_GROUP_ROWS)
        pixels = images[block] if rows is None else images[rows[block]]
        counts += np.bincount(np.asarray(pixels, dtype=np.uint8).reshape(-1), minlength=256)
    counts = counts.astype(np.float64)
    values = np.arange(256, dtype=np.float64) / 255.0
    total = counts.sum()
    mean = float(counts @ values / total)
    std = float(np.sqrt(counts @ (values - mean) ** 2 / total))
    if std == 0.0:
        raise ConfigError("training images are all one value; cannot normalize (std = 0)")
    # Round-trip through float32 so the stored statistics are exactly the ones applied.
    return Normalization(mean=float(np.float32(mean)), std=float(np.float32(std)))


def validation_counts(class_counts: Mapping[str, int], val_fraction: float) -> dict[str, int]:
    """Class name -> validation images the stratified split takes from its `class_counts`
    training images: round(val_fraction * count). Classes without images are skipped.

    ConfigError naming prepare.val_fraction when it leaves a class with no validation image or
    no training image: the config check calls this with the known counts before any job runs.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"config key 'prepare.val_fraction': {val_fraction!r} must lie strictly between 0 and 1")
    taken = {name: int(round(val_fraction * count)) for name, count in class_counts.items() if count > 0}
    if not taken:
        return taken
    # round(f * count) grows with count, so the smallest class is the first to get no
    # validation image, and the first to give all its images to validation.
    name = min(taken, key=lambda name: class_counts[name])
    count = class_counts[name]
    if taken[name] == 0:
        raise ConfigError(
            f"config key 'prepare.val_fraction': {val_fraction} gives class {name!r} ({count} training images, the"
            f" fewest) no validation image; val_fraction must exceed 0.5/{count} = {0.5 / count:.3g}"
        )
    if taken[name] >= count:
        raise ConfigError(
            f"config key 'prepare.val_fraction': {val_fraction} leaves no training image of class {name!r}"
            f" ({count} images, the fewest); val_fraction must be below 1 - 0.5/{count} = {1 - 0.5 / count:.3g}"
        )
    return taken


def stratified_split(
    labels: np.ndarray, val_fraction: float, seed: int, class_names: list[str] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val), each sorted, with round(val_fraction * count) of each class in val.

    labels: class indices (n,); class_names name them in errors (default: the indices).
    Deterministic for a given (labels, val_fraction, seed) on every platform: numpy's PCG64
    stream is stable across versions for `permutation`.
    """
    labels = np.asarray(labels)
    classes = np.unique(labels)
    names = [class_names[c] if class_names is not None else str(c) for c in classes]
    taken = validation_counts({name: int(np.count_nonzero(labels == c)) for name, c in zip(names, classes, strict=False)}, val_fraction)
    rng = np.random.default_rng(seed)
    val_parts = [rng.permutation(np.flatnonzero(labels == c))[: taken[name]] for name, c in zip(names, classes, strict=False)]
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.empty(0, dtype=np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask), val


def prepare_splits(parsed: ParsedDataset, *, val_fraction: float, seed: int, outputs: Mapping[str, str | Path]) -> Normalization:
    """Write the train, val and test Parquet splits (keys of `outputs`) and return the normalization."""
    info = parsed.info
    train_idx, val_idx = stratified_split(parsed.train_labels, val_fraction, seed, info["classes"])
    norm = fit_normalization(parsed.train_images, train_idx)
    common = {
        "dataset": info["dataset"],
        "classes": info["classes"],
        "image_shape": info.get("image_shape", [28, 28]),
        "normalization": norm.as_dict(),
        "source": info.get("source"),
        "source_files": info.get("files", {}),
        "split": {"val_fraction": val_fraction, "seed": seed},
    }
    splits = {
        "train": (train_idx, parsed.train_images, parsed.train_labels, "train-images-idx3-ubyte"),
        "val": (val_idx, parsed.train_images, parsed.train_labels, "train-images-idx3-ubyte"),
        "test": (np.arange(len(parsed.test_labels)), parsed.test_images, parsed.test_labels, "t10k-images-idx3-ubyte"),
    }
    for name, (ids, images, labels, stem) in splits.items():
        # Each row group is gathered from the (memory-mapped) parsed images and normalized
        # as it is written, so no split is ever whole in memory, as bytes or as float32.
        metadata = {**common, "name": name, "ids_index": stem}
        write_split_rows(outputs[name], ids, np.asarray(labels)[ids], _normalized_rows(images, ids, norm), metadata)
        log.info("%s: %d rows -> %s", name, len(ids), outputs[name])
    log.info("normalization from %d training images: mean %.6f, std %.6f", len(train_idx), norm.mean, norm.std)
    return norm


def _normalized_rows(images: np.ndarray, ids: np.ndarray, norm: Normalization):
    """rows (a slice of `ids`) -> float32 (len, H*W): the normalized images[ids[rows]]."""
    return lambda rows: norm.apply(images[ids[rows]])
