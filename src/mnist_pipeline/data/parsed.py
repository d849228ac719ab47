"""The parse stage's cache: validated IDX arrays as .npy files, plus a dataset description.

Parsing once and caching the arrays means every later stage (and every experiment) loads the
images with one memory-mapped read instead of decompressing and validating IDX again.
Every file is sealed (integrity.py), so `load_parsed` refuses one that changed since.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.data.datasets import absent_classes, dataset_classes, get_dataset
from mnist_pipeline.data.download import locate_idx
from mnist_pipeline.data.idx import read_images_and_labels
from mnist_pipeline.errors import IdxFormatError
from mnist_pipeline.fileio import load_array, read_json, save_array, write_json
from mnist_pipeline.integrity import check_class_indices

log = logging.getLogger(__name__)

# Output name -> (split, IDX stem); the keys are also the parse rule's output names.
ARRAYS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ParsedDataset:
    """train/test images: uint8 (n, H, W); labels: (n,) class indices in [0, len(info["classes"]))."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    info: dict[str, Any]


def parse_raw_dataset(
    raw_dir: str | Path, dataset: str, outputs: Mapping[str, str | Path], class_names: list[str] | None = None
) -> ParsedDataset:
    """Read and check the four IDX files in `raw_dir`, write the arrays and `info` to `outputs`.

    `class_names`: a custom dataset's declared classes (label i is class_names[i]); None takes
    the classes from the labels (see datasets.dataset_classes). Images may be of any size
    H x W, the same for both splits.
    """
    raw_dir = Path(raw_dir)
    spec = get_dataset(dataset)
    declared = list(spec.classes) if spec is not None else class_names
    n_classes = len(declared) if declared is not None else None
    paths = {name: locate_idx(raw_dir, stem) for name, stem in ARRAYS.items()}
    train = read_images_and_labels(paths["train_images"], paths["train_labels"], n_classes)
    test = read_images_and_labels(paths["test_images"], paths["test_labels"], n_classes)
    image_shape = train[0].shape[1:]
    if 0 in image_shape or len(train[1]) == 0:
        raise IdxFormatError(
            f"{paths['train_images']}: holds {len(train[1])} images of {image_shape[0]}x{image_shape[1]} pixels;"
            " expected at least one image of at least one pixel"
        )
    if test[0].shape[1:] != image_shape:
        raise IdxFormatError(
            f"{paths['test_images']}: images are {test[0].shape[1]}x{test[0].shape[2]}, but the training images"
            f" in {paths['train_images']} are {image_shape[0]}x{image_shape[1]}; both splits must have one size"
        )
    if spec is not None and image_shape != spec.image_shape:
        raise IdxFormatError(f"{paths['train_images']}: images are {image_shape}, {dataset}'s are {spec.image_shape}")
    classes = dataset_classes(dataset, declared, train[1], test[1])
    if len(classes.names) < 2:
        raise IdxFormatError(
            f"{paths['train_labels']}, {paths['test_labels']}: every label is {classes.labels[0]};"
            " a classifier needs at least two classes (or declare them with class_names)"
        )
    train_labels = classes.indices(train[1], str(paths["train_labels"]))
    test_labels = classes.indices(test[1], str(paths["test_labels"]))
    manifest = read_json(raw_dir / "manifest.json")
    info = {
        "dataset": dataset,
        "classes": list(classes.names),
        # The IDX label of each class: the Parquet `label` column holds class indices.
        "class_labels": list(classes.labels),
        "train_class_counts": np.bincount(train_labels, minlength=len(classes.names)).tolist(),
        "test_class_counts": np.bincount(test_labels, minlength=len(classes.names)).tolist(),
        "n_train": len(train_labels),
        "n_test": len(test_labels),
        "image_shape": list(image_shape),
        "source": manifest.get("source"),
        "files": manifest.get("files", {}),
    }
    parsed = ParsedDataset(train[0], train_labels, test[0], test_labels, info)
    for name in ARRAYS:
        save_array(outputs[name], getattr(parsed, name), seal=True)
    write_json(outputs["info"], info, seal=True)
    log.info(
        "parsed %s: %d training and %d test images of %dx%d pixels, %d classes", dataset, info["n_train"],
        info["n_test"], *image_shape, len(classes.names),
    )
    absent = absent_classes(info)
    if absent:
        log.warning("classes with no training or no test images: %s", ", ".join(absent))
    return parsed


def load_parsed(paths: Mapping[str, str | Path]) -> ParsedDataset:
    """Load what `parse_raw_dataset` wrote; `paths` has the same keys as its `outputs`. Each file
    is checked against its digest (a ChecksumError naming it when it changed since it was
    written) and the labels against the classes (an IdxFormatError naming the file)."""
    info = read_json(paths["info"], verify=True)
    arrays = {name: load_array(paths[name]) for name in ARRAYS}
    for name in ("train_labels", "test_labels"):
        check_class_indices(arrays[name], len(info["classes"]), paths[name], IdxFormatError)
    return ParsedDataset(**arrays, info=info)
