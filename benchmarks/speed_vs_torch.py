"""Our trainer against its PyTorch peer, alternated in one run on one machine.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed_vs_torch.py DATA_DIR \
        [--rounds 5] [--epochs 5] [--threads 2] [--python-peer TORCH_PYTHON]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/speed_vs_torch.py DATA_DIR \
        --experiment NAME [--configfile FILE] [--rounds 3] [--epochs 2] [--threads 2] [--python-peer TORCH_PYTHON]

Each round runs train_speed.py and then the peer (torch_peer.py beside this file), as separate
processes; the order flips every round so that neither always runs first on a machine that
others share. Without --experiment both train 784-256-128-10 with SGD (batch 128, lr 0.05,
momentum 0.9): train_speed.py's SGD mode against the peer's sgd mode. With it, train_speed.py's
recipe mode trains experiment NAME of config.yaml (FILE merged over it) and the peer gets the
same network, batch, optimiser and augmentation from the experiment's settings (its recipe
mode for an MLP, its cnn mode for a CNN); settings the peer cannot match stop the run, naming
them. --peer-args adds flags to the peer's command (a later flag wins).

Prints one JSON line per run and a summary: the median epoch time of each over all their
epochs, their ratio numpy / torch, and the ratio within each round and its median. The peer
needs PyTorch in the Python given by --python-peer (default: this one): see torch_peer.py.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from nn_bench import recipe

PEER = HERE / "torch_peer.py"
SGD_FLAGS = ["--hidden", "256", "128", "--batch", "128", "--lr", "0.05", "--momentum", "0.9"]
# What torch_peer.py's recipe and cnn modes train with, whatever their flags say.
PEER_FIXED = {"optimizer": "adamw", "betas": (0.9, 0.999), "schedule": "cosine", "warmup_epochs": 0,
              "activation": "relu", "grad_clip": None, "augment_flip": False, "augment_erase": 0.0}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--experiment", help="time this experiment of the config (train_speed.py's recipe mode)")
    parser.add_argument("--configfile", type=Path, help="with --experiment: merged over config.yaml")
    parser.add_argument("--peer", type=Path, default=PEER, help="a peer script taking torch_peer.py's flags")
    parser.add_argument("--peer-args", default="", help="more flags for the peer, e.g. '--batch 128'")
    parser.add_argument("--python-peer", default=sys.executable, help="the Python that has torch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    if args.configfile and not args.experiment:
        parser.error("--configfile needs --experiment")
    return args


def peer_flags(settings, val_fraction: float) -> list[str]:
    """torch_peer.py's mode and flags for the TrainSettings train_speed.py's recipe mode trains;
    SystemExit naming the settings the peer cannot match."""
    unmatched = [key for key, value in PEER_FIXED.items() if getattr(settings, key) != value]
    if unmatched:
        has = ", ".join(f"{key}: {getattr(settings, key)}" for key in unmatched)
        needs = ", ".join(f"{key}: {PEER_FIXED[key]}" for key in unmatched)
        raise SystemExit(f"the experiment has {has}; torch_peer.py trains only with {needs}")
    flags = ["--mode", "cnn" if settings.model == "cnn" else "recipe", "--hidden", *map(str, settings.hidden)]
    flags += ["--conv", *map(str, settings.conv_channels)] if settings.model == "cnn" else []
    return flags + [
        "--batch", str(settings.batch_size), "--lr", str(settings.learning_rate),
        "--weight-decay", str(settings.weight_decay), "--dropout", str(settings.dropout),
        "--batch-norm" if settings.batch_norm else "--no-batch-norm", "--label-smoothing", str(settings.label_smoothing),
        "--shift", str(settings.augment_shift), "--val-fraction", str(val_fraction), "--seed", str(settings.seed),
    ]


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    """trainer name -> the command line of its run."""
    run_args = [str(args.data_dir), "--epochs", str(args.epochs), "--threads", str(args.threads)]
    if args.experiment:
        settings, prepare = recipe(args.experiment, args.configfile, epochs=args.epochs)
        ours = ["--experiment", args.experiment, *(["--configfile", str(args.configfile)] if args.configfile else [])]
        theirs = peer_flags(settings, prepare["val_fraction"])
    else:
        ours, theirs = SGD_FLAGS, ["--mode", "sgd", *SGD_FLAGS]
    return {
        "numpy": [sys.executable, str(HERE / "train_speed.py"), *run_args, *ours, "--no-gemm"],
        "torch": [args.python_peer, str(args.peer), *run_args, *theirs, *shlex.split(args.peer_args)],
    }


def run(command: list[str]) -> list[dict]:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{shlex.join(command)} failed (exit {done.returncode}):\n{done.stderr.strip()}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    args = parse_args()
    runs = commands(args)
    epochs: dict[str, list[float]] = {"numpy": [], "torch": []}
    accuracy: dict[str, list[float]] = {"numpy": [], "torch": []}
    # On a shared machine the load drifts between rounds; a ratio within one round compares
    # two runs made under about the same load.
    round_ratios = []
    for round_ in range(args.rounds):
        order = ["numpy", "torch"] if round_ % 2 == 0 else ["torch", "numpy"]
        round_medians = {}
        for name in order:
            lines = run(runs[name])
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
        "peer": runs["torch"][1:],
    }))


if __name__ == "__main__":
    main()
