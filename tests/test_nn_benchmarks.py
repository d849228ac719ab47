"""The benchmark commands docs/performance.md gives run and print what it promises (on tiny data)."""

import json
import subprocess
import sys
from pathlib import Path

from mnist_pipeline.nn.model import architecture

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
REPO = BENCHMARKS.parent


def train_speed(*args: str) -> list[dict]:
    command = [sys.executable, str(BENCHMARKS / "train_speed.py"), *args, "--no-gemm"]
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_train_speed_prints_a_line_per_epoch_and_a_summary(synthetic_dir):
    lines = train_speed(str(synthetic_dir), "--hidden", "32", "16", "--batch", "64", "--lr", "0.05",
                        "--momentum", "0.9", "--epochs", "2", "--threads", "1")
    assert [line["epoch"] for line in lines[:-1]] == [1, 2]
    summary = lines[-1]
    assert summary["median_epoch_s"] > 0
    assert 0.5 < summary["final_test_accuracy"] <= 1.0, "the synthetic classes are easy to tell apart"
    assert summary["threads"] == 1


def test_the_sgd_mode_trains_the_plain_network_of_the_torch_peer():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from nn_bench import sgd_settings
    finally:
        sys.path.remove(str(BENCHMARKS))
    layers = architecture(sgd_settings(hidden=[256, 128]), 784, 10)["layers"]
    assert [layer["type"] for layer in layers] == ["dense", "relu", "dense", "relu", "dense"]


def test_the_recipe_mode_trains_an_experiment_of_the_config_merged_with_a_file(synthetic_dir, tmp_path):
    (tmp_path / "extra.yaml").write_text("experiments:\n  tiny: {hidden: [16], batch_norm: false, dropout: 0.0}\n")
    lines = train_speed(str(synthetic_dir), "--experiment", "tiny", "--configfile", str(tmp_path / "extra.yaml"),
                        "--epochs", "2", "--threads", "2")
    assert [line["epoch"] for line in lines[:-1]] == [1, 2]
    assert lines[-1]["experiment"] == "tiny" and lines[-1]["threads"] == 2
    assert 0.5 < lines[-1]["final_test_accuracy"] <= 1.0
    # The experiments of config.yaml stay: the file is merged over it, not put in its place.
    assert train_speed(str(synthetic_dir), "--experiment", "baseline", "--configfile", str(tmp_path / "extra.yaml"),
                       "--epochs", "1", "--threads", "1")[-1]["experiment"] == "baseline"


def test_handoff_prints_the_product_times_and_the_cost_of_splitting_it():
    command = [sys.executable, str(BENCHMARKS / "handoff.py"), "--threads", "2", "--repeat", "20"]
    result = json.loads(subprocess.run(command, capture_output=True, text=True, check=True).stdout)
    assert result["threads"] == 2
    assert result["product_whole_us"] > 0 and result["product_two_halves_us"] > 0
    assert result["split_overhead_us"] == round(result["product_two_halves_us"] - result["product_whole_us"] / 2, 1)
    # The helper's timings, or null when the caller ran both halves every time (a loaded machine).
    for key in ("helper_starts_after_us", "caller_returns_after_helper_us"):
        assert result[key] is None or result[key] >= 0, (key, result)
    # A job of empty tasks to the helper processes, there and back.
    assert result["process_job_us"] > 0 and result["process_prepared_job_us"] > 0
