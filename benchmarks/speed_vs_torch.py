"""Our MLP trainer against the PyTorch peer, alternated in one run on one machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed_vs_torch.py DATA_DIR \
        [--peer ../shared/bench/torch_mlp_baseline.py] [--rounds 5] [--epochs 5] [--threads 2]

Each round runs train_speed.py and then the peer, as separate processes with the same
arguments (784-256-128-10, batch 128, SGD lr 0.05 momentum 0.9); the order flips every round
so that neither always runs first on a machine that others share. Prints one JSON line per
run and a summary: the median epoch time of each over all their epochs, and the ratio
numpy / torch (the target is <= 0.8). Needs torch installed (`pip install torch==2.13.0`),
for this benchmark only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PEER = HERE.parents[1] / "shared" / "bench" / "torch_mlp_baseline.py"


def run(command: list[str]) -> list[dict]:
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--peer", type=Path, default=DEFAULT_PEER)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    common = [str(args.data_dir), "--hidden", "256", "128", "--batch", "128", "--lr", "0.05", "--momentum", "0.9",
              "--epochs", str(args.epochs), "--threads", str(args.threads)]
    commands = {
        "numpy": [sys.executable, str(HERE / "train_speed.py"), *common, "--no-gemm"],
        "torch": [sys.executable, str(args.peer), *common],
    }
    epochs: dict[str, list[float]] = {"numpy": [], "torch": []}
    accuracy: dict[str, list[float]] = {"numpy": [], "torch": []}
    for round_ in range(args.rounds):
        order = ["numpy", "torch"] if round_ % 2 == 0 else ["torch", "numpy"]
        for name in order:
            lines = run(commands[name])
            times = [line["train_s"] for line in lines if "epoch" in line]
            epochs[name] += times
            accuracy[name].append(lines[-1]["final_test_accuracy"])
            print(json.dumps({"round": round_ + 1, "trainer": name, "epoch_s": times,
                              "final_test_accuracy": lines[-1]["final_test_accuracy"]}), flush=True)
    medians = {name: statistics.median(times) for name, times in epochs.items()}
    print(json.dumps({
        "numpy_median_epoch_s": round(medians["numpy"], 4),
        "torch_median_epoch_s": round(medians["torch"], 4),
        "ratio_numpy_over_torch": round(medians["numpy"] / medians["torch"], 3),
        "numpy_median_test_accuracy": statistics.median(accuracy["numpy"]),
        "torch_median_test_accuracy": statistics.median(accuracy["torch"]),
        "rounds": args.rounds, "epochs_per_run": args.epochs, "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
