"""What the config check knows of a dataset's data before any job runs, and the settings it rules out.

Some settings are wrong only in the light of the data: more conv blocks than the image size
allows, or a `val_fraction` that leaves a class without a validation image. The workflow
checks them before any job starts wherever the facts are known without downloading:

- a known dataset: its registry entry (its checksums pin the content, so the sizes are facts);
- a custom dataset with a local `source`: the header of its training images file and its
  training labels (one byte per image), read where they lie;
- otherwise (a custom dataset behind a URL): the dataset.json of an earlier parse of the same
  source, if there is one.

Where none applies, prepare and train make the same checks, with the same messages.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.data.datasets import dataset_classes, get_dataset
from mnist_pipeline.data.idx import read_header, read_idx
from mnist_pipeline.data.sources import local_source_dir, locate_idx
from mnist_pipeline.data.splits import validation_counts
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.layout import RESULTS, DatasetLayout
from mnist_pipeline.nn.model import check_conv_fits


@dataclass(frozen=True)
class DataFacts:
    """image_shape (rows, cols); train_class_counts: class name -> training images; origin:
    where the facts were read, for messages."""

    image_shape: tuple[int, int]
    train_class_counts: Mapping[str, int]
    origin: str


def data_facts(config: Mapping[str, Any], results_dir: str | Path = RESULTS) -> DataFacts | None:
    """The facts about the configured dataset that can be had cheaply now, or None."""
    dataset = config["dataset"]
    spec = get_dataset(dataset)
    if spec is not None:
        return DataFacts(spec.image_shape, dict(zip(spec.classes, spec.train_class_counts, strict=False)), f"the {dataset} dataset")
    directory = local_source_dir(dataset, config["source"])
    if directory is not None:
        return _from_source(directory, dataset, config.get("class_names"))
    return _from_parse(Path(DatasetLayout(results_dir, dataset).parsed("dataset.json")), config["source"])


def check_config_against_data(
    config: Mapping[str, Any], experiments: Mapping[str, Mapping[str, Any]], results_dir: str | Path = RESULTS
) -> None:
    """The workflow's check before any job: ConfigError (or IdxFormatError for unreadable files)
    for a setting the configured dataset's known facts rule out; nothing when none are known."""
    facts = data_facts(config, results_dir)
    if facts is not None:
        check_settings_fit_data(config, experiments, facts)


def check_settings_fit_data(config: Mapping[str, Any], experiments: Mapping[str, Mapping[str, Any]], facts: DataFacts) -> None:
    """ConfigError for the first setting the data rules out, naming the key, the experiment and the facts."""
    for name, settings in experiments.items():
        if settings["model"] == "cnn":
            try:
                check_conv_fits(settings["conv_channels"], facts.image_shape)
            except ConfigError as error:
                raise ConfigError(f"experiment {name!r}: {error} (image size from {facts.origin})") from None
    try:
        validation_counts(facts.train_class_counts, config["prepare"]["val_fraction"])
    except ConfigError as error:
        raise ConfigError(f"{error} (class counts from {facts.origin})") from None


def _from_source(directory: Path, dataset: str, declared: list[str] | None) -> DataFacts | None:
    try:
        images = locate_idx(directory, "train-images-idx3-ubyte")
        labels_path = locate_idx(directory, "train-labels-idx1-ubyte")
    except FileNotFoundError:
        return None  # the download job names what is missing
    header = read_header(images)
    labels = read_idx(labels_path)
    if len(header.shape) != 3 or labels.ndim != 1 or labels.dtype.kind not in "iu" or (labels < 0).any():
        return None  # the parse job explains what the files should hold
    classes = dataset_classes(dataset, declared, labels)
    counts = np.bincount(classes.indices(labels, str(labels_path)), minlength=len(classes.names))
    return DataFacts(tuple(header.shape[1:]), dict(zip(classes.names, counts.tolist(), strict=False)), str(directory))


def _from_parse(info_path: Path, source: str | None) -> DataFacts | None:
    if not info_path.is_file():
        return None
    info = json.loads(info_path.read_text(encoding="utf-8"))
    # A parse of another source says nothing about this one.
    if info.get("source") != source or "train_class_counts" not in info:
        return None
    return DataFacts(tuple(info["image_shape"]), dict(zip(info["classes"], info["train_class_counts"], strict=False)), str(info_path))
