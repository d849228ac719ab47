"""Epoch time of our NumPy trainer: a plain SGD MLP, or any experiment of a config.

    python benchmarks/train_speed.py DATA_DIR --hidden 256 128 --batch 128 --lr 0.05 --momentum 0.9 --epochs 5 [--threads 2]
    python benchmarks/train_speed.py DATA_DIR --experiment NAME [--configfile FILE] --epochs N [--threads 2]

SGD mode, the peer of `torch_peer.py --mode sgd`: same data (the four IDX files in DATA_DIR,
pixels / 255), same architecture (dense + ReLU, softmax cross-entropy), same optimiser (SGD
with momentum, PyTorch's update rule), a fresh shuffle every epoch, batches of --batch with a
short last one, and test accuracy after each epoch outside the timed loop. Only the initialisation differs: our He initialisation.
The timed loop is Trainer.run_epoch, the very loop fit() runs.

Recipe mode (--experiment), the peer of torch_peer.py's recipe and cnn modes: the settings of
experiment NAME from config.yaml with FILE merged over it as `snakemake --configfile FILE`
merges it (--epochs replaces the experiment's own), trained on the IDX files split and
normalised as the prepare stage does (the config's `prepare` section). Test accuracy is
measured after each epoch, outside the timed loop.

Prints one JSON line per epoch and a last line with median_epoch_s, final_test_accuracy, the
BLAS in use, the process's peak resident memory and, unless --no-gemm, the epoch's GEMM FLOPs
against the measured float32 GEMM rate (fraction_of_gemm_bound = GEMM-bound time / epoch time).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_pipeline.nn.train import Trainer
from nn_bench import (
    gemm_rate,
    load_prepared,
    load_scaled,
    recipe,
    sgd_settings,
    training_flops_per_example,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--momentum", type=float, default=0.9)
    parser.add_argument("--experiment", help="recipe mode: time this experiment of the config instead of SGD")
    parser.add_argument("--configfile", type=Path, help="recipe mode: merged over config.yaml")
    parser.add_argument("--threads", type=int, default=0, help="threads of the trainer; 0: every core this process may use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-gemm", action="store_true", help="skip measuring the GEMM rate at the end")
    args = parser.parse_args()

    if args.configfile and not args.experiment:
        parser.error("--configfile needs --experiment")
    if args.experiment:
        settings, prepare = recipe(args.experiment, args.configfile, epochs=args.epochs)
        splits = load_prepared(args.data_dir, prepare["val_fraction"], prepare["seed"])
        (x_train, y_train), (x_test, y_test) = splits["train"], splits["test"]
    else:
        x_train, y_train, x_test, y_test = load_scaled(args.data_dir)
        settings = sgd_settings(model="mlp", hidden=args.hidden, epochs=args.epochs, batch_size=args.batch,
                                learning_rate=args.lr, momentum=args.momentum, seed=args.seed)
    with Trainer(settings, x_train.shape[1], 10, len(x_train), threads=args.threads or None) as trainer:
        times, accuracy = [], 0.0
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            stats = trainer.run_epoch(x_train, y_train, epoch)
            seconds = time.perf_counter() - start
            times.append(seconds)
            accuracy = trainer.model.loss_and_accuracy(x_test, y_test)[1]
            print(json.dumps({"epoch": epoch, "train_s": round(seconds, 4), "test_accuracy": round(accuracy, 4),
                              "train_loss": round(stats["train_loss"], 4)}), flush=True)
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        summary = {
            "trainer": "numpy",
            "experiment": args.experiment,
            "numpy": np.__version__,
            "threads": trainer.threads,
            "blas": [f"{pool['internal_api']} {pool.get('version')} {pool.get('architecture')}" for pool in blas],
            "median_epoch_s": round(statistics.median(times), 4),
            "final_test_accuracy": round(accuracy, 4),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        }
        if not args.no_gemm:
            flops = training_flops_per_example(trainer.model.architecture) * len(x_train)
            rate = gemm_rate()
            summary.update({
                "gemm_gflop_per_epoch": round(flops / 1e9, 2),
                "gemm_rate_gflops": round(rate / 1e9, 1),
                "gemm_bound_epoch_s": round(flops / rate, 4),
                "fraction_of_gemm_bound": round(flops / rate / statistics.median(times), 3),
            })
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
