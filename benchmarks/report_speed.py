"""Time the report stage: build_report for 3 experiments on a 10,000-image test set.

    python benchmarks/report_speed.py [DATA_DIR] [--out DIR] [--experiments 3] [--repeat 3]
    python benchmarks/report_speed.py --results results/fashion-mnist [--out DIR]

DATA_DIR holds the Fashion-MNIST IDX files (default /usr/share/datasets/fashion-mnist). The
experiments are synthetic but shaped like real ones: the probabilities come from a
nearest-class-mean (cosine) model on the real images, sharpened towards the true class, so accuracy,
calibration and the confusions between similar classes look like a trained MLP's. Each
repeat writes the Parquet predictions, reads them back and builds the report, as the
workflow's report job does. With --results, the experiments are instead the real outputs of
a workflow run (every folder there with metrics.json, history.json and predictions.parquet).
Prints one JSON line per repeat and a summary line.
"""

from __future__ import annotations

import time

START = time.perf_counter()

import argparse
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from mnist_pipeline.evaluation.metrics import predictions_table, score_predictions
from mnist_pipeline.evaluation.report import build_report, collect_provenance

FASHION_CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
DEFAULTS = {"model": "mlp", "hidden": [256, 128], "epochs": 20, "batch_size": 128, "optimizer": "adam",
            "learning_rate": 0.001, "dropout": 0.0, "seed": 0}
# name, overrides of DEFAULTS, (sharpness, pull towards the true class): about 89%, 90%, 82%, 92% accurate
VARIANTS = [
    ("baseline", {}, (3.0, 1.8)),
    ("wide", {"hidden": [512, 256], "dropout": 0.2}, (3.2, 1.9)),
    ("sgd", {"optimizer": "momentum", "learning_rate": 0.05, "epochs": 12}, (2.5, 1.4)),
    ("cnn", {"model": "cnn"}, (3.0, 2.1)),
]


def read_idx(path: Path) -> np.ndarray:
    raw = gzip.decompress(path.read_bytes())
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def load(data_dir: Path, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Test images, labels and nearest-class-mean logits; random blobs if the data is absent."""
    try:
        train_x = read_idx(data_dir / "train-images-idx3-ubyte.gz").reshape(-1, 784) / 255.0
        train_y = read_idx(data_dir / "train-labels-idx1-ubyte.gz")
        test_images = read_idx(data_dir / "t10k-images-idx3-ubyte.gz")
        test_y = read_idx(data_dir / "t10k-labels-idx1-ubyte.gz").astype(np.int64)
    except FileNotFoundError:
        print(json.dumps({"note": f"no IDX files in {data_dir}; using random images"}))
        test_y = rng.integers(0, 10, 10_000)
        test_images = rng.integers(0, 256, (10_000, 28, 28)).astype(np.uint8)
        return test_images, test_y, rng.normal(size=(10_000, 10)) + 2.0 * np.eye(10)[test_y]
    means = np.stack([train_x[train_y == c].mean(axis=0) for c in range(10)])
    x = test_images.reshape(-1, 784) / 255.0
    cosine = (x / np.linalg.norm(x, axis=1, keepdims=True)) @ (means / np.linalg.norm(means, axis=1, keepdims=True)).T
    return test_images, test_y, (cosine - cosine.mean(axis=1, keepdims=True)) / cosine.std()


def synthetic_experiment(name, overrides, shape, base_logits, y, rng, out_dir: Path) -> dict:
    sharpness, pull = shape
    logits = sharpness * base_logits + rng.normal(0, 0.9, base_logits.shape) + pull * np.eye(10)[y]
    proba = np.exp(logits - logits.max(1, keepdims=True))
    proba = (proba / proba.sum(1, keepdims=True)).astype(np.float32)
    settings = {**DEFAULTS, **overrides}
    epochs = settings["epochs"]
    metrics = score_predictions(y, proba, classes=FASHION_CLASSES)
    final = metrics["test_accuracy"]
    history = [
        {"epoch": e, "train_loss": float(0.9 * np.exp(-e / 5) + 0.45 - 0.25 * final - 0.006 * e),
         "val_loss": float(0.8 * np.exp(-e / 4) + 0.5 - 0.25 * final + 0.004 * max(0, e - 10)),
         "train_accuracy": float(final + 0.03 - 0.2 * np.exp(-e / 4)), "val_accuracy": float(final + 0.005 - 0.15 * np.exp(-e / 3)),
         "learning_rate": settings["learning_rate"], "seconds": 6.0}
        for e in range(1, epochs + 1)
    ]
    metrics.update(val_accuracy=history[-1]["val_accuracy"], epochs_run=epochs, train_seconds=6.0 * epochs,
                   n_parameters=235_146)
    path = out_dir / f"{name}.parquet"
    pq.write_table(predictions_table(np.arange(len(y)), y, proba), path)
    return {"name": name, "metrics": metrics, "history": history, "settings": settings, "predictions": path}


def from_results(results: Path) -> tuple[list[dict], np.ndarray, dict]:
    """A workflow run's experiments (settings unknown here, so shown as defaults), images, dataset.json."""
    experiments = [
        {"name": d.name, "metrics": json.loads((d / "metrics.json").read_text()),
         "history": json.loads((d / "history.json").read_text())["epochs"], "settings": {},
         "predictions": d / "predictions.parquet"}
        for d in sorted(results.iterdir()) if (d / "predictions.parquet").is_file()
    ]
    info = json.loads((results / "parsed" / "dataset.json").read_text())
    return experiments, np.load(results / "parsed" / "test-images.npy"), info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("data_dir", nargs="?", default="/usr/share/datasets/fashion-mnist", type=Path)
    parser.add_argument("--out", type=Path, default=None, help="keep the report here (default: a temp dir)")
    parser.add_argument("--experiments", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", type=Path, default=None, help="a workflow's results/{dataset} folder")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="report-speed-"))
    out.mkdir(parents=True, exist_ok=True)
    if args.results:
        raw, images, info = from_results(args.results)
        defaults = {}
    else:
        rng = np.random.default_rng(0)
        images, y, base = load(args.data_dir, rng)
        raw = [synthetic_experiment(n, o, s, base, y, rng, out) for n, o, s in VARIANTS[: args.experiments]]
        info = {"dataset": "fashion-mnist", "source": str(args.data_dir), "n_test": len(y), "classes": FASHION_CLASSES}
        defaults = DEFAULTS
    provenance = collect_provenance(config={"dataset": info["dataset"], "train": defaults}, dataset_info=info,
                                    date="2025-01-01T00:00:00Z")
    setup = time.perf_counter() - START
    times = []
    for repeat in range(args.repeat):
        t0 = time.perf_counter()
        experiments = [{**e, "predictions": pq.read_table(e["predictions"])} for e in raw]
        build_report(dataset=info["dataset"], experiments=experiments, defaults=defaults, test_images=images,
                     provenance=provenance, out_html=out / "report.html", out_md=out / "report.md",
                     figures_dir=out / "figures")
        times.append(time.perf_counter() - t0)
        print(json.dumps({"repeat": repeat, "seconds": round(times[-1], 3)}))
    print(json.dumps({
        "experiments": len(raw), "test_items": int(len(images)), "import_and_setup_s": round(setup, 3),
        "median_report_s": round(float(np.median(times)), 3),
        "html_kib": round((out / "report.html").stat().st_size / 1024, 1),
        "figures_kib": round(sum(p.stat().st_size for p in (out / "figures").rglob("*.png")) / 1024, 1),
        "out": str(out),
    }))


if __name__ == "__main__":
    main()
