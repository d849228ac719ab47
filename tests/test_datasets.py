"""The registry of known datasets: complete, well-formed, and read-only."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import pytest

from mnist_pipeline.data.datasets import IDX_STEMS, KNOWN_DATASETS, class_names, dataset_classes, get_dataset
from mnist_pipeline.errors import IdxFormatError

HEX = {"content_sha256": 64, "gz_sha256": 64, "gz_md5": 32}


def test_at_least_mnist_fashion_and_kmnist_are_known():
    assert {"mnist", "fashion-mnist", "kmnist"} <= set(KNOWN_DATASETS)
    for name, spec in KNOWN_DATASETS.items():
        assert spec.name == name and get_dataset(name) is spec
    assert get_dataset("my-digits") is None


@pytest.mark.parametrize("name", sorted(KNOWN_DATASETS))
def test_every_file_of_a_known_dataset_has_a_well_formed_checksum(name):
    spec = KNOWN_DATASETS[name]
    assert tuple(spec.checksums) == IDX_STEMS
    for stem, checksum in spec.checksums.items():
        digests = {field: value for field, value in dataclasses.asdict(checksum).items() if value is not None}
        # Something to verify by, and a SHA-256 at that (MD5 alone is only a last resort).
        assert digests.keys() & {"content_sha256", "gz_sha256"}, stem
        for field, value in digests.items():
            assert re.fullmatch(f"[0-9a-f]{{{HEX[field]}}}", value), (stem, field)
    all_digests = [value for checksum in spec.checksums.values() for value in dataclasses.astuple(checksum) if value]
    assert len(all_digests) == len(set(all_digests)), "a digest copied into the wrong file's slot"


@pytest.mark.parametrize("name", sorted(KNOWN_DATASETS))
def test_mirrors_are_several_http_bases_and_classes_are_ten_names(name):
    spec = KNOWN_DATASETS[name]
    assert len(spec.mirrors) >= 2 and len(set(spec.mirrors)) == len(spec.mirrors)
    assert all(re.fullmatch(r"https?://[^\s]+/", mirror) for mirror in spec.mirrors)
    assert len(spec.classes) == 10 and len(set(spec.classes)) == 10


def test_class_names_are_the_datasets_own_else_numbers():
    assert class_names("fashion-mnist", 10)[0] == "T-shirt/top"
    assert class_names("kmnist", 10)[:2] == ["o", "ki"]
    assert class_names("mnist", 10) == [str(digit) for digit in range(10)]
    assert class_names("my-letters", 3) == ["0", "1", "2"]
    # A known name whose labels do not fit its classes gets numbers rather than wrong names.
    assert class_names("fashion-mnist", 12) == [str(index) for index in range(12)]


def test_the_registry_cannot_be_changed_by_accident():
    spec = get_dataset("mnist")
    with pytest.raises(TypeError):
        KNOWN_DATASETS["mnist"] = spec  # type: ignore[index]
    with pytest.raises(TypeError):
        spec.checksums["train-images-idx3-ubyte"] = None  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.mirrors = ()  # type: ignore[misc]


def test_known_datasets_state_their_image_size_and_training_counts():
    for spec in KNOWN_DATASETS.values():
        assert spec.image_shape == (28, 28)
        assert len(spec.train_class_counts) == len(spec.classes) and sum(spec.train_class_counts) == 60000


def test_undeclared_classes_are_the_label_values_the_data_uses():
    classes = dataset_classes("my-set", None, np.array([5, 0, 5]), np.array([0, 5]))
    assert classes.names == ("0", "5") and classes.labels == (0, 5)
    assert classes.indices(np.array([5, 0, 0]), "labels").tolist() == [1, 0, 0]


def test_declared_classes_keep_every_name_and_refuse_a_label_without_one():
    classes = dataset_classes("my-set", ["zero", "one", "two"], np.array([0, 2]))
    assert classes.names == ("zero", "one", "two")
    assert dataset_classes("kmnist", None, np.array([0])).names[:2] == ("o", "ki")
    with pytest.raises(IdxFormatError, match=r"my-labels: label 3 at index 1 .*class_names lists 3 names"):
        classes.indices(np.array([0, 3]), "my-labels")
