"""benchmarks/profile_epoch.py prints its parts and the one-thread share with Amdahl's bounds (tiny data)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_profile_epoch_reports_the_share_of_the_epoch_on_one_thread(synthetic_dir):
    command = [sys.executable, str(BENCHMARKS / "profile_epoch.py"), str(synthetic_dir), "--hidden", "32", "16",
               "--batch", "16", "--epochs", "1", "--threads", "1"]
    lines = [json.loads(line) for line in subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()]
    parts = {line["part"] for line in lines if "part" in line}
    # The MLP trains by columns (nn/columns.py), its whole step in one hand-off: the step, and
    # each kind of its jobs, are parts.
    assert "model train_step (forward, loss, backward, the optimiser's step)" in parts
    for kernel in ("_forward_block", "_backward_block", "_weights_block"):
        assert any(part.startswith(f"job {kernel} (") for part in parts), (kernel, parts)
    summary = lines[-1]
    assert summary["threads"] == 1 and 0 <= summary["one_thread_share"] <= 1
    bounds = summary["amdahl_bound"]
    s = summary["one_thread_share"]
    assert bounds["8"] == round(1 / (s + (1 - s) / 8), 2)


def test_columns_vs_layers_times_both_steps_of_an_mlp(synthetic_dir):
    command = [sys.executable, str(BENCHMARKS / "columns_vs_layers.py"), str(synthetic_dir), "--threads", "1",
               "--rounds", "2", "--limit", "256"]
    lines = [json.loads(line) for line in subprocess.run(command, capture_output=True, text=True, check=True).stdout.splitlines()]
    assert [(line["round"], line["step"]) for line in lines[:-1]] == [(1, "columns"), (1, "layers"), (2, "layers"),
                                                                      (2, "columns")]
    summary = lines[-1]
    # The medians are printed rounded to 0.1 ms, the ratio from the unrounded ones.
    ratio = summary["columns_median_epoch_s"] / summary["layers_median_epoch_s"]
    assert summary["ratio_columns_over_layers"] == pytest.approx(ratio, rel=0.01)
    assert len(summary["round_ratios"]) == 2
