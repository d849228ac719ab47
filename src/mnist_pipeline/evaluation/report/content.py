"""What the report shows, derived from the experiments' outputs: each experiment's view with its
galleries' samples, the ranking and comparison with the best, and the seed groups.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.evaluation.metrics import calibration_bins, read_predictions, top_confusions
from mnist_pipeline.evaluation.report.comparison import accuracy_change, leaderboard_key, outcomes, settings_diff
from mnist_pipeline.evaluation.report.seeds import seed_groups
from mnist_pipeline.evaluation.report.view import ExperimentView, Pair, ReportView, Sample

N_MISTAKES = 24  # the gallery of most confident mistakes
N_PAIRS = 4  # the most confused (true, predicted) pairs shown
N_PAIR_EXAMPLES = 8  # images shown per pair


def _sorted_samples(indices: np.ndarray, preds: Mapping[str, np.ndarray], limit: int) -> list[Sample]:
    """The `limit` items among `indices` with the highest predicted-class probability.

    Ties go to the lower id, so the choice does not depend on row order.
    """
    conf = preds["proba"][indices, preds["predicted"][indices]]
    order = np.lexsort((preds["id"][indices], -conf))[:limit]
    chosen = indices[order]
    return [
        Sample(int(preds["id"][i]), int(preds["label"][i]), int(preds["predicted"][i]), float(conf[j]))
        for i, j in zip(chosen, order, strict=False)
    ]


def _pairs(cm: np.ndarray, preds: Mapping[str, np.ndarray]) -> list[Pair]:
    support = cm.sum(axis=1)
    pairs = []
    for t, p, n in top_confusions(cm, N_PAIRS):
        idx = np.flatnonzero((preds["label"] == t) & (preds["predicted"] == p))
        pairs.append(Pair(t, p, n, n / support[t], _sorted_samples(idx, preds, N_PAIR_EXAMPLES)))
    return pairs


def _experiment_view(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> ExperimentView:
    name = str(raw["name"])
    metrics = raw["metrics"]
    preds = read_predictions(raw["predictions"], source=f"predictions of experiment {name!r}")
    k = preds["proba"].shape[1]
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    if cm.shape != (k, k):
        raise TableSchemaError(f"metrics of experiment {name!r}: confusion_matrix is {cm.shape}, predictions have {k} classes")
    correct = preds["predicted"] == preds["label"]
    bins = int(metrics.get("ece", {}).get("bins", 15))
    ids, correct_by_id = outcomes(preds)
    return ExperimentView(
        name=name,
        rank=0,
        metrics=metrics,
        history=list(raw.get("history") or []),
        settings=dict(raw.get("settings") or {}),
        differs=settings_diff(raw.get("settings") or {}, defaults),
        calibration=calibration_bins(preds["label"], preds["proba"], bins),
        mistakes=_sorted_samples(np.flatnonzero(~correct), preds, N_MISTAKES),
        pairs=_pairs(cm, preds),
        correct=correct_by_id,
        ids=ids,
    )


def _rank_key(view: ExperimentView) -> tuple:
    return leaderboard_key(view.name, view.metrics)


def build_view(
    *, dataset: str, experiments: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any],
    provenance: Mapping[str, Any], classes: Sequence[str] | None = None,
) -> ReportView:
    """Rank the experiments and derive everything the report shows about them."""
    if not experiments:
        raise ValueError("build_report needs at least one experiment")
    names = [str(e["name"]) for e in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must be unique, got {names}")
    views = sorted((_experiment_view(e, defaults) for e in experiments), key=_rank_key)
    best = views[0]
    for rank, view in enumerate(views, start=1):
        view.rank = rank
        if rank > 1:
            view.vs_best = accuracy_change(view.ids, view.correct, best.ids, best.correct)
    if classes is None:
        classes = best.metrics.get("classes") or [str(i) for i in range(len(best.metrics["confusion_matrix"]))]
    return ReportView(dataset=dataset, classes=[str(c) for c in classes], experiments=views, provenance=provenance,
                      seed_groups=seed_groups(views, defaults))
