"""Shared by the network's benchmarks: the data, FLOP counts, GEMM rate.

Not a benchmark itself; the scripts beside it import it (`python benchmarks/<script>.py`
puts this folder on sys.path).
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import yaml

from mnist_pipeline.data.download import locate_idx
from mnist_pipeline.data.idx import read_idx
from mnist_pipeline.data.splits import fit_normalization, stratified_split
from mnist_pipeline.nn import TrainSettings
from mnist_pipeline.workflow.config import experiment_settings, load_schema, resolve_config

# The recipe mode reads the workflow's config and schema, as `snakemake` would.
REPO = Path(__file__).resolve().parents[1]
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"


def load_scaled(data_dir: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """x_train, y_train, x_test, y_test with pixels / 255 in float32, as torch_peer.py's sgd mode scales them."""

    def images(stem: str) -> np.ndarray:
        x = read_idx(locate_idx(data_dir, stem)).reshape(-1, 784).astype(np.float32)
        x /= 255  # in place: one 188 MB copy of the training images, not two
        return x

    def labels(stem: str) -> np.ndarray:
        return read_idx(locate_idx(data_dir, stem)).astype(np.intp)

    return (images("train-images-idx3-ubyte"), labels("train-labels-idx1-ubyte"),
            images("t10k-images-idx3-ubyte"), labels("t10k-labels-idx1-ubyte"))


def load_prepared(data_dir: Path, val_fraction: float = 0.1, seed: int = 0) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """split -> (x float32 (n, 784), y intp (n,)) for train, val and test, split and normalised
    as the workflow's prepare stage does (stratified seeded split, training mean and std)."""
    images = read_idx(locate_idx(data_dir, "train-images-idx3-ubyte"))
    labels = read_idx(locate_idx(data_dir, "train-labels-idx1-ubyte")).astype(np.intp)
    train_rows, val_rows = stratified_split(labels, val_fraction, seed)
    norm = fit_normalization(images[train_rows])
    test_images = read_idx(locate_idx(data_dir, "t10k-images-idx3-ubyte"))
    test_labels = read_idx(locate_idx(data_dir, "t10k-labels-idx1-ubyte")).astype(np.intp)
    return {
        "train": (norm.apply(images[train_rows]), labels[train_rows]),
        "val": (norm.apply(images[val_rows]), labels[val_rows]),
        "test": (norm.apply(test_images), test_labels),
    }


def recipe(experiment: str, configfile: Path | None = None, **overrides) -> tuple[TrainSettings, dict]:
    """(train settings of `experiment` with `overrides` applied, prepare section) from config.yaml
    with `configfile` merged over it the way `snakemake --configfile` merges it."""
    from snakemake.utils import update_config

    with open(REPO / "config.yaml", encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if configfile is not None:
        with open(configfile, encoding="utf-8") as handle:
            update_config(config, yaml.safe_load(handle) or {})
    schema = load_schema(SCHEMA)
    config = resolve_config(config, schema)
    experiments = experiment_settings(config, schema)
    if experiment not in experiments:
        raise SystemExit(f"--experiment {experiment!r}: the config has {', '.join(sorted(experiments))}")
    return TrainSettings.from_dict({**experiments[experiment], **overrides}), config["prepare"]


def sgd_settings(**overrides) -> TrainSettings:
    """The plain network of torch_peer.py's sgd mode: dense + ReLU, SGD with momentum at a constant
    rate, and none of the defaults' batch norm, dropout, weight decay or label smoothing."""
    plain = {"batch_norm": False, "dropout": 0.0, "weight_decay": 0.0, "label_smoothing": 0.0,
             "schedule": "constant", "warmup_epochs": 0, "grad_clip": None, "optimizer": "momentum"}
    return TrainSettings(**{**plain, **overrides})


def training_flops_per_example(architecture: dict) -> int:
    """GEMM FLOPs of one training example: forward, weight gradients, and input gradients for
    every layer but the first (whose input gradient is never computed). Element-wise work is
    not counted: it is memory-bound and small beside the products."""
    side = None
    products = []  # (multiply-adds per example) of each dense/conv layer, in order
    for layer in architecture["layers"]:
        if layer["type"] == "reshape":
            side = layer["shape"][0]
        elif layer["type"] == "max_pool":
            side //= 2
        elif layer["type"] == "dense":
            products.append(layer["n_in"] * layer["n_out"])
        elif layer["type"] == "conv2d":
            k = layer["kernel_size"]
            products.append(side * side * k * k * layer["in_channels"] * layer["out_channels"])
    return 2 * (3 * sum(products) - products[0])


def gemm_seconds(m: int, k: int, n: int, repeat: int = 20) -> float:
    """Median seconds of one float32 (m, k) @ (k, n) product into a preallocated output."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((m, k), dtype=np.float32)
    b = rng.standard_normal((k, n), dtype=np.float32)
    out = np.empty((m, n), np.float32)
    np.matmul(a, b, out=out)
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def gemm_rate(size: int = 2048, repeat: int = 20) -> float:
    """The machine's float32 GEMM rate (FLOP/s) on large square products: the ceiling."""
    return 2 * size**3 / gemm_seconds(size, size, size, repeat)
