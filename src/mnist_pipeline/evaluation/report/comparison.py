"""How experiments compare: the leaderboard's order, the paired accuracy difference between two
runs, and which settings differ from the defaults (the report, `mnist-pipeline runs` and the
terminal summary all rank and compare this way).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from mnist_pipeline.evaluation.metrics import paired_difference_ci
from mnist_pipeline.evaluation.report.view import ExperimentView

DIFF_SEED = 0


def settings_diff(settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings whose value differs from the defaults, by key in sorted order."""
    missing = object()
    return {
        key: settings.get(key)
        for key in sorted(set(settings) | set(defaults))
        if settings.get(key, missing) != defaults.get(key, missing)
    }


def outcomes(preds: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The test item ids in order and whether each was predicted right: what accuracy_change pairs."""
    order = np.argsort(preds["id"], kind="stable")
    return preds["id"][order], (preds["predicted"] == preds["label"])[order]


def accuracy_change(
    ids: np.ndarray, correct: np.ndarray, base_ids: np.ndarray, base_correct: np.ndarray
) -> tuple[float, float, float] | None:
    """accuracy - base accuracy as (difference, lo, hi) with the paired bootstrap 95% interval
    the leaderboard shows; None when the two were not evaluated on the same test items."""
    if not np.array_equal(ids, base_ids):
        return None
    lo, hi = paired_difference_ci(correct, base_correct, seed=DIFF_SEED)
    return float(correct.mean() - base_correct.mean()), lo, hi


def leaderboard_key(name: str, metrics: Mapping[str, Any]) -> tuple:
    """Sort key of the leaderboard, best first: higher test accuracy, then lower log loss, then
    name for a stable order."""
    loss = metrics.get("log_loss")
    return (-float(metrics["test_accuracy"]), float("inf") if loss is None else float(loss), name)


def within_noise(view: ExperimentView) -> bool:
    """True when the paired interval against the best includes 0: not clearly worse."""
    return view.vs_best is not None and view.vs_best[1] <= 0 <= view.vs_best[2]
