"""The parse stage: any image size, the classes the labels use or the config declares."""

from __future__ import annotations

import json

import numpy as np
import pytest

from helpers import write_synthetic_dataset
from mnist_pipeline.errors import IdxFormatError
from mnist_pipeline.idx import write_idx
from mnist_pipeline.parsed import ARRAYS, load_parsed, parse_raw_dataset


def raw_dir(tmp_path, **options):
    directory = write_synthetic_dataset(tmp_path / "raw", n_train=60, n_test=20, **options)
    (directory / "manifest.json").write_text(json.dumps({"source": "here", "files": {}}))
    return directory


def outputs(tmp_path):
    paths = {name: tmp_path / "parsed" / f"{name}.npy" for name in ARRAYS}
    return {**paths, "info": tmp_path / "parsed" / "dataset.json"}


def test_images_of_any_size_are_parsed_and_described(tmp_path):
    parse_raw_dataset(raw_dir(tmp_path, shape=(20, 32)), "custom", outputs(tmp_path))
    parsed = load_parsed(outputs(tmp_path))
    assert parsed.train_images.shape == (60, 20, 32) and parsed.info["image_shape"] == [20, 32]
    assert parsed.info["train_class_counts"] == [6] * 10 and parsed.info["test_class_counts"] == [2] * 10


def test_labels_0_and_5_become_two_classes_indexed_0_and_1(tmp_path):
    parse_raw_dataset(raw_dir(tmp_path, label_values=[0, 5]), "custom", outputs(tmp_path))
    parsed = load_parsed(outputs(tmp_path))
    assert parsed.info["classes"] == ["0", "5"] and parsed.info["class_labels"] == [0, 5]
    assert set(np.unique(parsed.train_labels)) == {0, 1} and parsed.info["train_class_counts"] == [30, 30]


def test_declared_class_names_keep_an_absent_class_and_refuse_an_unnamed_label(tmp_path):
    directory = raw_dir(tmp_path, label_values=[0, 2])
    parse_raw_dataset(directory, "custom", outputs(tmp_path), class_names=["zero", "one", "two"])
    info = load_parsed(outputs(tmp_path)).info
    assert info["classes"] == ["zero", "one", "two"] and info["train_class_counts"] == [30, 0, 30]
    with pytest.raises(IdxFormatError, match=r"train-labels-idx1-ubyte.gz: label 2 at index \d+ is outside the class range \[0, 2\)"):
        parse_raw_dataset(directory, "custom", outputs(tmp_path), class_names=["zero", "one"])


def test_a_single_label_value_is_refused(tmp_path):
    with pytest.raises(IdxFormatError, match="every label is 3; a classifier needs at least two classes"):
        parse_raw_dataset(raw_dir(tmp_path, label_values=[3]), "custom", outputs(tmp_path))


def test_splits_of_different_image_sizes_are_refused(tmp_path):
    directory = raw_dir(tmp_path, shape=(20, 20))
    write_idx(directory / "t10k-images-idx3-ubyte.gz", np.zeros((20, 24, 24), np.uint8))
    with pytest.raises(IdxFormatError, match=r"t10k-images-idx3-ubyte.gz: images are 24x24, but the training images .* are 20x20"):
        parse_raw_dataset(directory, "custom", outputs(tmp_path))
