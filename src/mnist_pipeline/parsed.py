"""The parse stage's cache: validated IDX arrays as .npy files, plus a dataset description.

Parsing once and caching the arrays means every later stage (and every experiment) loads the
images with one memory-mapped read instead of decompressing and validating IDX again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.datasets import class_names, get_dataset
from mnist_pipeline.download import locate_idx
from mnist_pipeline.errors import IdxFormatError
from mnist_pipeline.fileio import read_json, save_array, write_json
from mnist_pipeline.idx import read_split

log = logging.getLogger(__name__)

IMAGE_SHAPE = (28, 28)
# Output name -> (split, IDX stem); the keys are also the parse rule's output names.
ARRAYS = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class ParsedDataset:
    """train/test images: uint8 (n, 28, 28); labels: (n,) integers in [0, len(classes))."""

    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    info: dict[str, Any]


def parse_raw_dataset(raw_dir: str | Path, dataset: str, outputs: Mapping[str, str | Path]) -> ParsedDataset:
    """Read and check the four IDX files in `raw_dir`, write the arrays and `info` to `outputs`."""
    raw_dir = Path(raw_dir)
    spec = get_dataset(dataset)
    n_classes = len(spec.classes) if spec is not None else None
    train = read_split(locate_idx(raw_dir, ARRAYS["train_images"]), locate_idx(raw_dir, ARRAYS["train_labels"]), n_classes)
    if n_classes is None:
        # A custom dataset's classes are the ones its training labels use.
        n_classes = int(train[1].max()) + 1
    test = read_split(locate_idx(raw_dir, ARRAYS["test_images"]), locate_idx(raw_dir, ARRAYS["test_labels"]), n_classes)
    for (images, _), stem in ((train, ARRAYS["train_images"]), (test, ARRAYS["test_images"])):
        if images.shape[1:] != IMAGE_SHAPE:
            raise IdxFormatError(f"{locate_idx(raw_dir, stem)}: images are {images.shape[1:]}, expected {IMAGE_SHAPE}")
    manifest = read_json(raw_dir / "manifest.json")
    info = {
        "dataset": dataset,
        "classes": class_names(dataset, n_classes),
        "n_train": len(train[1]),
        "n_test": len(test[1]),
        "image_shape": list(IMAGE_SHAPE),
        "source": manifest.get("source"),
        "files": manifest.get("files", {}),
    }
    parsed = ParsedDataset(train[0], train[1].astype(np.int64), test[0], test[1].astype(np.int64), info)
    for name in ARRAYS:
        save_array(outputs[name], getattr(parsed, name))
    write_json(outputs["info"], info)
    log.info("parsed %s: %d training and %d test images, %d classes", dataset, info["n_train"], info["n_test"], n_classes)
    return parsed


def load_parsed(paths: Mapping[str, str | Path]) -> ParsedDataset:
    """Load what `parse_raw_dataset` wrote; `paths` has the same keys as its `outputs`."""
    arrays = {name: np.load(paths[name], mmap_mode="r", allow_pickle=False) for name in ARRAYS}
    return ParsedDataset(**arrays, info=read_json(paths["info"]))
