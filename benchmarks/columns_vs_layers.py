"""An MLP's training step by columns (nn/columns.py) against the layer-by-layer step, in one process.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/columns_vs_layers.py DATA_DIR \
        [--experiment baseline [--configfile FILE]] [--threads 2] [--rounds 3] [--limit N]

Trains experiment NAME's MLP (the default recipe unless told) on DATA_DIR's training images
for one epoch each way per round, the two alternating (the order flips every round) so that a
machine whose speed drifts moves both alike, each after a warm-up epoch on a tenth of the data.
Prints one JSON line per epoch and a summary: the median seconds of each and their ratio,
with the rounds' own ratios. The two train other bytes (other dropout masks and batch-norm
sums), the same amount of work.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mnist_pipeline.nn.train import Trainer
from nn_bench import load_scaled, recipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--experiment", default="baseline")
    parser.add_argument("--configfile", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="train on the first LIMIT images only")
    args = parser.parse_args()
    x, y, _, _ = load_scaled(args.data_dir)
    if args.limit:
        x, y = x[: args.limit], y[: args.limit]
    settings = recipe(args.experiment, args.configfile)[0]
    times: dict[str, list[float]] = {"columns": [], "layers": []}
    for round_ in range(1, args.rounds + 1):
        for way in ("columns", "layers") if round_ % 2 else ("layers", "columns"):
            with Trainer(settings, x.shape[1], 10, len(x), threads=args.threads, by_columns=way == "columns") as trainer:
                if way == "columns" and trainer.model.column_step is None:
                    parser.error(f"experiment {args.experiment!r} is not an MLP that trains by columns")
                warm = max(len(x) // 10, settings.batch_size)
                trainer.run_epoch(x[:warm], y[:warm], 0)
                start = time.perf_counter()
                trainer.run_epoch(x, y, 1)
                seconds = time.perf_counter() - start
            times[way].append(seconds)
            print(json.dumps({"round": round_, "step": way, "epoch_s": round(seconds, 4)}), flush=True)
    columns, layers = (statistics.median(times[way]) for way in ("columns", "layers"))
    print(json.dumps({
        "columns_median_epoch_s": round(columns, 4), "layers_median_epoch_s": round(layers, 4),
        "ratio_columns_over_layers": round(columns / layers, 3),
        "round_ratios": [round(c / layer, 3) for c, layer in zip(times["columns"], times["layers"], strict=True)],
        "threads": args.threads, "experiment": args.experiment, "rounds": args.rounds,
    }))


if __name__ == "__main__":
    main()
