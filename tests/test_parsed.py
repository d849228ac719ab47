"""The parse stage: any image size, the classes the labels use or the config declares."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from damage import flip_bytes, truncate
from helpers import write_synthetic_dataset
from mnist_pipeline.data.idx import write_idx
from mnist_pipeline.data.parsed import ARRAYS, load_parsed, parse_raw_dataset
from mnist_pipeline.errors import ChecksumError, IdxFormatError
from mnist_pipeline.fileio import save_array


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


# --- every file checked when read back (issue 21) ---------------------------------------------


def rebuild(path) -> str:
    return re.escape(f"to rebuild it, delete it and run the workflow again: rm {path} && snakemake --cores 4")


def parsed_files(tmp_path):
    parse_raw_dataset(raw_dir(tmp_path), "custom", outputs(tmp_path))
    return outputs(tmp_path)


@pytest.mark.parametrize("name", [*ARRAYS, "info"])
def test_a_parsed_file_with_flipped_bytes_is_refused_though_its_time_is_kept(tmp_path, name):
    # Flipped pixels were used silently, flipped labels gave a bare IndexError (issue 21).
    paths = parsed_files(tmp_path)
    flip_bytes(paths[name], -40)
    with pytest.raises(ChecksumError, match=rf"^{re.escape(str(paths[name]))}: corrupted: its bytes changed since it was written .*{rebuild(paths[name])}"):
        load_parsed(paths)


def test_a_truncated_parsed_array_is_refused(tmp_path):
    paths = parsed_files(tmp_path)
    truncate(paths["test_images"])
    with pytest.raises(ChecksumError, match=rf"{re.escape(str(paths['test_images']))}: corrupted: its bytes changed"):
        load_parsed(paths)


def test_parsed_labels_outside_the_dataset_classes_are_refused(tmp_path):
    paths = parsed_files(tmp_path)
    labels = np.load(paths["train_labels"])
    labels[5] = 10
    save_array(paths["train_labels"], labels, seal=True)
    with pytest.raises(IdxFormatError, match=r"train_labels.npy: corrupted: label 10 at row 5 is outside the class range \[0, 10\)"):
        load_parsed(paths)
    labels[5] = -248
    save_array(paths["train_labels"], labels, seal=True)
    with pytest.raises(IdxFormatError, match=r"train_labels.npy: corrupted: label -248 at row 5 is outside"):
        load_parsed(paths)
