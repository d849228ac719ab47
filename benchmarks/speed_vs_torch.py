"""Our trainer against its PyTorch peer, alternated in one run on one machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed_vs_torch.py DATA_DIR \
        [--peer ../shared/bench/torch_mlp_baseline.py] [--rounds 5] [--epochs 5] [--threads 2]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed_vs_torch.py DATA_DIR \
        --experiment NAME [--configfile FILE] --peer-args "--hidden 1024 512" [--rounds 3] [--epochs 3] [--threads 2]

Each round runs train_speed.py and then the peer, as separate processes; the order flips every
round so that neither always runs first on a machine that others share. Without --experiment
both train 784-256-128-10 with SGD (batch 128, lr 0.05, momentum 0.9) and the peer is
torch_mlp_baseline.py; with it, train_speed.py's recipe mode trains experiment NAME and the
peer is torch_recipe.py given --peer-args (the same network and batch: `--hidden 1024 512`
for config.yaml's baseline, `--conv 32 64 --hidden 256 --batch 64` for examples/cnn.yaml,
whose shifts the peer does not make). Prints one JSON
line per run and a summary: the median epoch time of each over all their epochs, their ratio
numpy / torch, and the ratio within each round and its median. Needs torch==2.13.0 in the
Python given by --python-peer (default: this one), for this benchmark only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
PEERS = HERE.parents[1] / "shared" / "bench"


def run(command: list[str]) -> list[dict]:
    done = subprocess.run(command, check=True, capture_output=True, text=True)
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--peer", type=Path, help="default: torch_mlp_baseline.py, or torch_recipe.py with --experiment")
    parser.add_argument("--experiment", help="time this experiment of the config (train_speed.py's recipe mode)")
    parser.add_argument("--configfile", type=Path, help="with --experiment: merged over config.yaml")
    parser.add_argument("--peer-args", default="", help="with --experiment: the peer's network, e.g. '--hidden 1024 512'")
    parser.add_argument("--python-peer", default=sys.executable, help="the Python that has torch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    run_args = [str(args.data_dir), "--epochs", str(args.epochs), "--threads", str(args.threads)]
    if args.experiment:
        ours = ["--experiment", args.experiment, *(["--configfile", str(args.configfile)] if args.configfile else [])]
        peer, theirs = args.peer or PEERS / "torch_recipe.py", args.peer_args.split()
    else:
        ours = theirs = ["--hidden", "256", "128", "--batch", "128", "--lr", "0.05", "--momentum", "0.9"]
        peer = args.peer or PEERS / "torch_mlp_baseline.py"
    commands = {
        "numpy": [sys.executable, str(HERE / "train_speed.py"), *run_args, *ours, "--no-gemm"],
        "torch": [args.python_peer, str(peer), *run_args, *theirs],
    }
    epochs: dict[str, list[float]] = {"numpy": [], "torch": []}
    accuracy: dict[str, list[float]] = {"numpy": [], "torch": []}
    # On a shared machine the load drifts between rounds; a ratio within one round compares
    # two runs made under about the same load.
    round_ratios = []
    for round_ in range(args.rounds):
        order = ["numpy", "torch"] if round_ % 2 == 0 else ["torch", "numpy"]
        round_medians = {}
        for name in order:
            lines = run(commands[name])
            times = [line["train_s"] for line in lines if "epoch" in line]
            epochs[name] += times
            round_medians[name] = statistics.median(times)
            accuracy[name].append(lines[-1]["final_test_accuracy"])
            print(json.dumps({"round": round_ + 1, "trainer": name, "epoch_s": times,
                              "final_test_accuracy": lines[-1]["final_test_accuracy"]}), flush=True)
        round_ratios.append(round_medians["numpy"] / round_medians["torch"])
    medians = {name: statistics.median(times) for name, times in epochs.items()}
    print(json.dumps({
        "numpy_median_epoch_s": round(medians["numpy"], 4),
        "torch_median_epoch_s": round(medians["torch"], 4),
        "ratio_numpy_over_torch": round(medians["numpy"] / medians["torch"], 3),
        "round_ratios": [round(ratio, 3) for ratio in round_ratios],
        "median_round_ratio": round(statistics.median(round_ratios), 3),
        "numpy_median_test_accuracy": statistics.median(accuracy["numpy"]),
        "torch_median_test_accuracy": statistics.median(accuracy["torch"]),
        "experiment": args.experiment, "rounds": args.rounds, "epochs_per_run": args.epochs, "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
