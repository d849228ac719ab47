"""What a run prints at its end: why each failed stage failed, or the best experiments."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from mnist_pipeline.workflow.terminal import (
    failure_text,
    flip_warning_text,
    summary_text,
    training_plan_text,
)

FAIL = """
import logging
from mnist_pipeline.workflow.logs import log_to
log_to({log!r})
logging.getLogger("mnist_pipeline.stage").info("working")
from mnist_pipeline.errors import ChecksumError
raise {error}("t10k-labels failed its checksum:\\n  - /data: content SHA-256 is 00, expected ff")
"""


def run_stage(log: Path, code: str, error: str = "ChecksumError") -> subprocess.CompletedProcess:
    log.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run([sys.executable, "-c", code.format(log=str(log), error=error)], capture_output=True, text=True, timeout=60)


def test_a_failed_stage_logs_its_traceback_then_its_reason_in_its_own_words(tmp_path):
    result = run_stage(tmp_path / "logs/download.log", FAIL)
    assert result.returncode == 1 and result.stderr == ""
    text = (tmp_path / "logs/download.log").read_text()
    assert "Traceback (most recent call last)" in text and "INFO working" in text
    assert text.endswith("FAILED: ChecksumError: t10k-labels failed its checksum:\n  - /data: content SHA-256 is 00, expected ff\n")


def test_failure_text_names_each_stage_that_failed_in_this_run(tmp_path):
    logs = tmp_path / "logs"
    run_stage(logs / "old.log", FAIL)
    os.utime(logs / "old.log", (1, 1))  # failed in an earlier run
    since = time.time()
    run_stage(logs / "train/wide.log", FAIL, error="ValueError")
    run_stage(logs / "download.log", FAIL)
    run_stage(logs / "parse.log", "from mnist_pipeline.workflow.logs import log_to; log_to({log!r}); print('fine')")
    text = failure_text(logs, since)
    # One heading per failed stage, in stage order; the earlier run's and the stage that ran fine are left out.
    headings = [line.split(" (")[0].strip() for line in text.splitlines() if line.startswith("  ") and not line.startswith("   ")]
    assert headings == ["download", "train/wide"]
    assert text.startswith("\nWhy it failed:\n  download (")
    assert f"  train/wide ({logs}/train/wide.log):\n    ValueError: t10k-labels failed its checksum:\n      - /data: content SHA-256 is 00" in text
    assert failure_text(logs, time.time() + 10) == ""


def write_metrics(results: Path, name: str, test: float, val: float, log_loss: float = 0.3) -> None:
    path = results / "digits" / name / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"test_accuracy": test, "val_accuracy": val, "log_loss": log_loss}))


def test_summary_shows_the_leaderboard_best_first_and_the_report(tmp_path):
    results = tmp_path / "results"
    for name, test, val in (("small", 0.91, 0.90), ("wide", 0.95, 0.94), ("deep", 0.93, 0.95), ("tiny", 0.80, 0.79)):
        write_metrics(results, name, test, val)
    names = ["small", "wide", "deep", "tiny"]
    assert summary_text(results, "digits", names) == ""  # no report: the run stopped earlier
    (results / "digits/report.html").write_text("<html>")
    assert summary_text(results, "digits", names) == (
        "\nBest of 4 experiments on digits (test accuracy, validation accuracy):\n"
        "  1. wide    95.00%   94.00%\n"
        "  2. deep    93.00%   95.00%\n"
        "  3. small   91.00%   90.00%\n"
        "  ... and 1 more on the report's leaderboard\n"
        f"Report: {results}/digits/report.html (and report.md beside it)\n"
    )
    assert summary_text(results, "digits", ["deep"]).startswith(
        "\nThe experiment on digits (test accuracy, validation accuracy):\n  1. deep   93.00%   95.00%\n"
    )


def test_the_training_plan_names_the_experiments_of_each_run_still_to_train(tmp_path):
    runs = {"baseline": {"run": "aaaa"}, "twin": {"run": "aaaa"}, "wide": {"run": "bbbb"}, "old": {"run": "cccc"}}
    (tmp_path / "runs" / "cccc").mkdir(parents=True)
    (tmp_path / "runs" / "cccc" / "model.npz").write_bytes(b"")
    assert training_plan_text(tmp_path, runs) == (
        "Run aaaa trains experiment(s): baseline, twin\nRun bbbb trains experiment(s): wide\n"
    )


def test_flipping_digits_is_warned_of_and_flipping_clothes_or_custom_images_is_not():
    runs = {
        "cnn": {"run": "aaaa", "settings": {"augment_flip": True}},
        "plain": {"run": "bbbb", "settings": {"augment_flip": False}},
    }
    warning = flip_warning_text("mnist", runs)
    assert warning.startswith("Warning: experiment(s) cnn set augment_flip on mnist")
    assert "plain" not in warning
    assert flip_warning_text("kmnist", runs).startswith("Warning: experiment(s) cnn")
    assert flip_warning_text("fashion-mnist", runs) == ""
    assert flip_warning_text("my-scans", runs) == ""  # a custom dataset: only its owner knows
    assert flip_warning_text("mnist", {"plain": runs["plain"]}) == ""
