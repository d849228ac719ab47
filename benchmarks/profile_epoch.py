"""Where an epoch of the trainer spends its time: per layer, loss, optimiser, batch gathering.

    python benchmarks/profile_epoch.py DATA_DIR [--model mlp|cnn] [--hidden 256 128] [--batch 128]
        [--threads 2] [--epochs 3] [--limit N]
    python benchmarks/profile_epoch.py DATA_DIR --experiment NAME [--configfile FILE] [--threads 2] ...

Wraps every layer's forward and backward (for an MLP trained by columns, nn/columns.py: its
whole step, which goes to the workers in one hand-off, and each kind of job in it), the loss,
the optimiser step and np.take with timers, runs --epochs epochs of SGD with momentum (lr 0.05,
like train_speed.py), or of
experiment NAME's recipe as train_speed.py's recipe mode reads it, and prints,
for the last epoch, one JSON line per part: seconds and share of the epoch. What the parts do
not cover is Python overhead of the loop itself. A dense layer's backward returns once its
input gradient is ready (its weight gradient and the optimiser's update of its weights follow
on the workers), so "model backward" is the whole of backward and the optimiser's step.

The last line adds the one-thread share: the part of the epoch spent outside work cut into
tasks that several threads can share (Workers.shared_seconds). Measured with --threads 1, it
is Amdahl's serial fraction s, and the line gives the bound 1 / (s + (1 - s) / N) on the
speed-up at N cores; at more threads the tasks run on helper processes whose clocks are not
read, and the line gives the epoch's time only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_pipeline.nn import train as train_module
from mnist_pipeline.nn.train import Trainer
from nn_bench import load_scaled, recipe, sgd_settings

TOTALS: dict[str, float] = defaultdict(float)
#: parts timed inside other parts (a layer's backward inside the model's, a job inside a step):
#: printed, but not added up with the others
NESTED: set[str] = set()


def timed(name: str, function, nested: bool = False):
    if nested:
        NESTED.add(name)

    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            TOTALS[name] += time.perf_counter() - start

    return wrapper


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 128])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--model", default="mlp", choices=["mlp", "cnn"])
    parser.add_argument("--limit", type=int, default=0, help="train on the first LIMIT images only")
    parser.add_argument("--experiment", help="profile this experiment of the config instead of SGD")
    parser.add_argument("--configfile", type=Path, help="with --experiment: merged over config.yaml")
    args = parser.parse_args()
    x, y, _, _ = load_scaled(args.data_dir)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    if args.experiment:
        settings = recipe(args.experiment, args.configfile, epochs=args.epochs)[0]
    else:
        settings = sgd_settings(model=args.model, hidden=args.hidden, batch_size=args.batch,
                                learning_rate=0.05 if args.model == "mlp" else 0.01, epochs=args.epochs)
    with Trainer(settings, x.shape[1], 10, len(x), threads=args.threads or None) as trainer:
        columns = trainer.model.column_step
        if columns is None:
            for i, layer in enumerate(trainer.model.layers):
                layer.forward = timed(f"{i:02d} {layer.kind} forward", layer.forward)
                layer.backward = timed(f"{i:02d} {layer.kind} backward", layer.backward, nested=True)
                if hasattr(layer, "backward_deferred"):
                    layer.backward_deferred = timed(f"{i:02d} {layer.kind} backward (dx)", layer.backward_deferred,
                                                    nested=True)
        else:
            # An MLP trained by columns (nn/columns.py): its whole step (forward, loss, backward
            # and update in one hand-off; with grad_clip its forward and backward), and each
            # kind of job within, timed where it runs in this process (all of them at one thread).
            trainer.model.train_step = timed("model train_step (forward, loss, backward, the optimiser's step)",
                                             trainer.model.train_step)
            columns.forward = timed("columns forward (hidden groups' jobs, then the output layer)", columns.forward)
            run_kernel = trainer.workers.run_kernel
            trainer.workers.run_kernel = lambda kernel, n, *a, **k: timed(
                f"job {kernel.__name__} ({n} tasks; within the step)", run_kernel, nested=True)(kernel, n, *a, **k)
        trainer.model.backward = timed("model backward (with the optimiser's step)", trainer.model.backward)
        if settings.grad_clip is not None:
            # Only a clipped step calls step(); otherwise the optimiser goes to the helper
            # processes with the weights job, and a timer's closure on it could not be pickled.
            trainer.optimizer.step = timed("optimizer step (grad_clip only)", trainer.optimizer.step)
        train_module.training_loss = timed("loss (softmax cross-entropy, correct predictions)", train_module.training_loss)
        # Only the trainer calls np.take in this process, so timing it globally times the gathering.
        np.take = timed("gather batch (np.take)", np.take)
        for epoch in range(1, args.epochs + 1):
            TOTALS.clear()
            trainer.workers.measure()
            start = time.perf_counter()
            trainer.run_epoch(x, y, epoch)
            epoch_s = time.perf_counter() - start
            shared = trainer.workers.shared_seconds
    for name, seconds in sorted(TOTALS.items()):
        print(json.dumps({"part": name, "seconds": round(seconds, 4), "share": round(seconds / epoch_s, 3)}))
    rest = epoch_s - sum(seconds for name, seconds in TOTALS.items() if name not in NESTED)
    print(json.dumps({"part": "rest (loop, argmax, schedule)", "seconds": round(rest, 4), "share": round(rest / epoch_s, 3)}))
    if trainer.threads > 1:
        # Tasks run on the helper processes then, whose clocks the caller does not read.
        print(json.dumps({"epoch_s": round(epoch_s, 4), "threads": trainer.threads,
                          "one_thread_share": None, "why": "measured at --threads 1 only"}))
        return
    serial = max(0.0, 1 - shared / epoch_s)
    print(json.dumps({
        "epoch_s": round(epoch_s, 4), "threads": trainer.threads, "shared_task_s": round(shared, 4),
        "one_thread_share": round(serial, 3),
        "amdahl_bound": {n: round(1 / (serial + (1 - serial) / n), 2) for n in (2, 4, 8, 16)},
    }))


if __name__ == "__main__":
    main()
