"""The report's History: for each current experiment, the settings tried before under its name.

The earlier runs come from the run store (mnist_pipeline.runstore.store); each is compared with the
experiment's current run the way the leaderboard compares experiments with the best one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow.parquet as pq

from mnist_pipeline.evaluation.metrics import read_predictions
from mnist_pipeline.evaluation.report.comparison import accuracy_change, outcomes, settings_diff
from mnist_pipeline.evaluation.report.formatting import NA, change_text, epochs_run_text, pct, settings_text
from mnist_pipeline.evaluation.report.view import ExperimentView
from mnist_pipeline.evaluation.report.words import epochs_text
from mnist_pipeline.runstore.store import KeptRun, earlier_runs

TITLE = "History"
NOTE = (
    "For each experiment, the runs tried earlier under its name, newest first: the settings that differ "
    "from its current run and what each reached. vs current: the earlier run's test accuracy minus the "
    "current run's, in percentage points, with a paired bootstrap 95% interval over the same test images. "
    "The command mnist-pipeline runs --diff compares any two runs; the runs listed here are those kept when the "
    "report was built."
)
COLUMNS = ("Run", "Finished", "Differs from the current run", "Test accuracy", "Validation accuracy", "Epochs",
           "vs current, pts (paired 95% CI)")
DIFFERS_COLUMN = 2


@dataclass(frozen=True)
class EarlierRun:
    run: str
    finished: str
    settings: Mapping[str, Any]
    differs: dict[str, Any]  # settings whose value differs from the current run's
    metrics: Mapping[str, Any]
    history: list[Mapping[str, Any]]  # per-epoch records
    vs_current: tuple[float, float, float] | None


@dataclass(frozen=True)
class ExperimentHistory:
    name: str
    current: ExperimentView
    runs: list[EarlierRun]  # newest first
    best: EarlierRun  # highest test accuracy, then lowest log loss, as the leaderboard ranks


def earlier_run_entries(store: Sequence[KeptRun], experiment: str) -> list[dict[str, Any]]:
    """The earlier runs of `experiment`, as build_report takes them (newest first)."""
    return [
        {"run": run.id, "finished": run.finished, "settings": run.settings, "metrics": run.metrics,
         "history": run.history.get("epochs") or [], "predictions": pq.read_table(run.path("predictions"))}
        for run in earlier_runs(store, experiment)
    ]


def _earlier(entry: Mapping[str, Any], current: ExperimentView) -> EarlierRun:
    run = str(entry["run"])
    ids, correct = outcomes(read_predictions(entry["predictions"], source=f"predictions of run {run}"))
    return EarlierRun(
        run=run,
        finished=str(entry.get("finished") or NA),
        settings=dict(entry["settings"]),
        differs=settings_diff(entry["settings"], current.settings),
        metrics=entry["metrics"],
        history=list(entry.get("history") or []),
        vs_current=accuracy_change(ids, correct, current.ids, current.correct),
    )


def experiment_histories(
    experiments: Sequence[ExperimentView], earlier: Mapping[str, Sequence[Mapping[str, Any]]]
) -> list[ExperimentHistory]:
    """One history per experiment (in the order given) that has earlier runs."""
    histories = []
    for view in experiments:
        runs = [_earlier(entry, view) for entry in earlier.get(view.name) or []]
        if runs:
            best = min(runs, key=lambda r: (-float(r.metrics["test_accuracy"]), float(r.metrics.get("log_loss", float("inf"))), r.run))
            histories.append(ExperimentHistory(view.name, view, runs, best))
    return histories


def history_row(run: EarlierRun) -> list[str]:
    """The History table's cells of one earlier run, in COLUMNS order."""
    return [
        run.run,
        run.finished.replace("T", " ").removesuffix("+00:00"),
        settings_text(run.differs),
        pct(run.metrics.get("test_accuracy")),
        pct(run.metrics.get("val_accuracy")),
        epochs_run_text(run.metrics, run.settings),
        change_text(run.vs_current),
    ]


def current_line(history: ExperimentHistory) -> str:
    """What the experiment's current run reached, to read the table against."""
    m = history.current.metrics
    return (f"Current run: test accuracy {pct(m.get('test_accuracy'))}, validation accuracy "
            f"{pct(m.get('val_accuracy'))}, epochs {epochs_text(history.current)}.")
