"""The contract's benchmark command runs and prints what the contract promises (on tiny data)."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_train_speed_prints_a_line_per_epoch_and_a_summary(synthetic_dir):
    command = [sys.executable, str(BENCHMARKS / "train_speed.py"), str(synthetic_dir), "--hidden", "32", "16",
               "--batch", "64", "--lr", "0.05", "--momentum", "0.9", "--epochs", "2", "--threads", "1", "--no-gemm"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [line["epoch"] for line in lines[:-1]] == [1, 2]
    summary = lines[-1]
    assert summary["median_epoch_s"] > 0
    assert 0.5 < summary["final_test_accuracy"] <= 1.0, "the synthetic classes are easy to tell apart"
    assert summary["threads"] == 1
