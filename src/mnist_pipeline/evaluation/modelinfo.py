"""What a trained model file, and the metrics and history beside it, say about the model:
shown by `mnist-pipeline info` and the app's model page."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mnist_pipeline.fileio import read_json


def describe_layer(spec: dict[str, Any]) -> str:
    """A short name for one layer spec of a model's architecture."""
    kind = spec["type"]
    if kind == "dense":
        return f"dense {spec['n_in']}->{spec['n_out']}"
    if kind == "conv2d":
        return f"conv{spec['kernel_size']}x{spec['kernel_size']} {spec['in_channels']}->{spec['out_channels']}"
    if kind == "dropout":
        return f"dropout {spec['rate']:g}"
    if kind == "reshape":
        return "reshape " + "x".join(map(str, spec["shape"]))
    return kind.replace("_", " ")


def model_info(path: str, loaded) -> dict[str, Any]:
    """What `info` reports: the model file's header, and metrics.json/history.json beside it if present."""
    directory = Path(path).parent
    found = {name: read_json(directory / f"{name}.json") for name in ("metrics", "history") if (directory / f"{name}.json").is_file()}
    history = found.get("history", {})
    return {
        "model": os.fspath(path),
        "dataset": loaded.metadata.get("dataset"),
        "experiment": loaded.metadata.get("experiment"),
        "run": loaded.metadata.get("run"),  # the workflow's models are named by run, not experiment
        "classes": list(loaded.classes),
        "image_shape": list(loaded.image_shape),
        "architecture": loaded.model.architecture,
        "n_parameters": loaded.model.n_parameters,
        "normalization": loaded.normalization,
        "settings": loaded.metadata.get("settings"),
        "epochs_run": loaded.metadata.get("epochs_run"),
        "best_epoch": loaded.metadata.get("best_epoch"),
        "threads": loaded.metadata.get("threads"),
        "train_seconds": history.get("train_seconds"),
        "metrics": found.get("metrics"),
    }
