"""Test accuracy, training time and peak memory of fit() on the real data, prepared as the workflow prepares it.

    python benchmarks/train_accuracy.py DATA_DIR [--threads 2] [--set KEY=VALUE ...]

The training images are split 90/10 (stratified, seed 0) and normalised with the training
split's mean and std, as the prepare stage does; the settings are TrainSettings' defaults with
each --set KEY=VALUE (VALUE in YAML, e.g. --set model=cnn --set "hidden=[128]") applied.
Prints fit()'s progress on stderr and one JSON line: the settings that differ from the
defaults, test accuracy, best validation accuracy, epochs run, training seconds, the peak
resident memory of the whole process (ru_maxrss) and its CPU seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.nn import TrainSettings, fit
from nn_bench import load_prepared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = yaml.safe_load(value)
    try:
        settings = TrainSettings.from_dict(overrides)
    except ConfigError as error:
        parser.error(str(error))

    splits = load_prepared(args.data_dir)
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = splits["train"], splits["val"], splits["test"]

    start = time.perf_counter()
    result = fit(settings, x_train, y_train, x_val, y_val, threads=args.threads)
    seconds = time.perf_counter() - start
    accuracy = float(np.mean(result.model.predict_proba(x_test).argmax(axis=1) == y_test))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({
        "settings": overrides,
        "test_accuracy": round(accuracy, 4),
        "best_val_accuracy": round(max(h["val_accuracy"] for h in result.history), 4),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "train_seconds": round(result.train_seconds, 1),
        "fit_wall_seconds": round(seconds, 1),
        "n_parameters": result.model.n_parameters,
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),
        # On a shared machine wall time includes waiting for the CPU; this is what the process used.
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 1),
    }), flush=True)


if __name__ == "__main__":
    main()
