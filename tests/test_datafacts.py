"""The facts the config check reads before any job, and the settings they rule out."""

from __future__ import annotations

import json

import pytest

from helpers import write_synthetic_dataset
from mnist_pipeline.errors import ConfigError, IdxFormatError
from mnist_pipeline.workflow.datafacts import DataFacts, check_settings_fit_data, data_facts

CNN = {"model": "cnn", "conv_channels": [4, 4, 4, 4, 4]}


def config(dataset="custom", source=None, val_fraction=0.1, class_names=None):
    return {"dataset": dataset, "source": source, "class_names": class_names, "prepare": {"val_fraction": val_fraction, "seed": 0}}


def test_known_datasets_facts_come_from_the_registry():
    facts = data_facts(config("fashion-mnist"))
    assert facts.image_shape == (28, 28) and facts.train_class_counts["Bag"] == 6000
    with pytest.raises(ConfigError, match=r"5e-05 gives class 'T-shirt/top' \(6000 training images, the fewest\).*the fashion-mnist dataset"):
        check_settings_fit_data(config("fashion-mnist", val_fraction=0.00005), {}, facts)
    with pytest.raises(ConfigError, match="experiment 'deep': conv_channels: .* 5 conv-pool blocks, but a 28x28 image fits at most 4"):
        check_settings_fit_data(config("fashion-mnist"), {"deep": CNN}, facts)


def test_a_local_sources_facts_come_from_its_headers_and_training_labels(tmp_path):
    source = write_synthetic_dataset(tmp_path / "idx", n_train=90, n_test=10, shape=(20, 12), label_values=[0, 5, 7])
    facts = data_facts(config(source=str(source)))
    assert facts == DataFacts((20, 12), {"0": 30, "5": 30, "7": 30}, str(source))
    declared = data_facts(config(source=str(source), class_names=[str(i) for i in range(8)]))
    assert declared.train_class_counts["5"] == 30 and declared.train_class_counts["1"] == 0
    check_settings_fit_data(config(), {"ok": {"model": "cnn", "conv_channels": [4, 4, 4]}, "mlp": {"model": "mlp"}}, facts)
    with pytest.raises(ConfigError, match="4 conv-pool blocks, but a 20x12 image fits at most 3"):
        check_settings_fit_data(config(), {"deep": {"model": "cnn", "conv_channels": [4] * 4}}, facts)
    with pytest.raises(IdxFormatError, match="label 7 at index .*class_names lists 3 names"):
        data_facts(config(source=str(source), class_names=["a", "b", "c"]))


def test_missing_files_and_unparsed_remote_sources_give_no_facts(tmp_path):
    assert data_facts(config(source=str(tmp_path)), tmp_path) is None
    assert data_facts(config(source="https://example.org/data/"), tmp_path / "results") is None


def test_an_earlier_parse_of_the_same_source_gives_the_facts(tmp_path):
    info = tmp_path / "results/custom/parsed/dataset.json"
    info.parent.mkdir(parents=True)
    info.write_text(json.dumps({"source": "https://example.org/data/", "image_shape": [32, 32], "classes": ["a", "b"],
                                "train_class_counts": [40, 3]}))
    facts = data_facts(config(source="https://example.org/data/"), tmp_path / "results")
    assert facts.image_shape == (32, 32) and facts.train_class_counts == {"a": 40, "b": 3}
    with pytest.raises(ConfigError, match=r"gives class 'b' \(3 training images, the fewest\).*dataset.json"):
        check_settings_fit_data(config(val_fraction=0.1), {}, facts)
    # A parse of another source says nothing about this one.
    assert data_facts(config(source="https://example.org/other/"), tmp_path / "results") is None
