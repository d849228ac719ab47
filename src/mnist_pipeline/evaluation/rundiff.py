"""What changed between two kept runs, and whether it helped (`mnist-pipeline runs --diff`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from mnist_pipeline.evaluation.metrics import read_predictions
from mnist_pipeline.evaluation.report.comparison import accuracy_change, outcomes
from mnist_pipeline.runstore.store import KeptRun

# The metrics.json entries a diff compares, in the order it shows them.
COMPARED_METRICS = ("test_accuracy", "val_accuracy", "macro_f1", "log_loss", "top2_accuracy", "epochs_run", "train_seconds", "n_parameters")


@dataclass(frozen=True)
class RunDiff:
    """Run b against run a: only what differs, each as (a's value, b's value)."""

    a: KeptRun
    b: KeptRun
    settings: dict[str, tuple[Any, Any]]
    metrics: dict[str, tuple[Any, Any]]
    same_data: bool
    same_code: bool
    # accuracy(b) - accuracy(a) with its paired 95% interval, None when the test items differ
    accuracy_change: tuple[float, float, float] | None
    n_test: int


def changed(a: Mapping[str, Any], b: Mapping[str, Any], keys: Any = None) -> dict[str, tuple[Any, Any]]:
    """key -> (a value, b value) for the keys whose values differ; None stands for a missing key."""
    keys = sorted(set(a) | set(b)) if keys is None else keys
    return {key: (a.get(key), b.get(key)) for key in keys if a.get(key) != b.get(key)}


def _outcomes(run: KeptRun):
    return outcomes(read_predictions(pq.read_table(run.path("predictions")), source=str(run.path("predictions"))))


def diff_runs(a: KeptRun, b: KeptRun) -> RunDiff:
    ids_b, correct_b = _outcomes(b)
    return RunDiff(
        a=a,
        b=b,
        settings=changed(a.settings, b.settings),
        metrics=changed(a.metrics, b.metrics, COMPARED_METRICS),
        same_data=a.record.get("data") == b.record.get("data"),
        same_code=a.record.get("code") == b.record.get("code"),
        accuracy_change=accuracy_change(ids_b, correct_b, *_outcomes(a)),
        n_test=len(ids_b),
    )
