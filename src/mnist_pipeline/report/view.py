"""What the report shows: every experiment as a view (its inputs, rank, comparison with the
best, galleries' samples) and the whole report's view, built once and read by both writers, so
report.html and report.md can never disagree on a number or on the order of the leaderboard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.metrics import calibration_bins, read_predictions, top_confusions
from mnist_pipeline.report.comparison import accuracy_change, leaderboard_key, outcomes, settings_diff
from mnist_pipeline.report.seeds import SeedGroup, seed_groups

N_MISTAKES = 24  # the gallery of most confident mistakes
N_PAIRS = 4  # the most confused (true, predicted) pairs shown
N_PAIR_EXAMPLES = 8  # images shown per pair


@dataclass(frozen=True)
class Sample:
    """One test item: its id (row in the test images), true and predicted class, probability."""

    id: int
    label: int
    predicted: int
    probability: float  # of the predicted class


@dataclass(frozen=True)
class Pair:
    """A (true, predicted) confusion with its count, share of the true class and examples."""

    true: int
    predicted: int
    count: int
    share: float
    examples: list[Sample]


@dataclass
class ExperimentView:
    """One experiment as the report shows it: its inputs plus rank, comparisons and galleries."""

    name: str
    rank: int
    metrics: Mapping[str, Any]
    history: list[Mapping[str, Any]]
    settings: Mapping[str, Any]
    differs: dict[str, Any]
    calibration: dict[str, np.ndarray]
    mistakes: list[Sample]
    pairs: list[Pair]
    # accuracy(this) - accuracy(best) on the same test items: (difference, lo, hi), or None
    # for the best itself or when the two were not evaluated on the same items.
    vs_best: tuple[float, float, float] | None = None
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)


@dataclass
class ReportView:
    """The whole report's content, experiments ranked best first."""

    dataset: str
    classes: list[str]
    experiments: list[ExperimentView]  # best first
    provenance: Mapping[str, Any]
    # Every group, best mean test accuracy first, when some configuration ran with 2+ seeds;
    # empty otherwise, and then the report shows no seed table.
    seed_groups: list[SeedGroup] = field(default_factory=list)
    # report.history.ExperimentHistory of each experiment with earlier runs, in rank order
    histories: list[Any] = field(default_factory=list)

    @property
    def best(self) -> ExperimentView:
        return self.experiments[0]


def _sorted_samples(indices: np.ndarray, preds: Mapping[str, np.ndarray], limit: int) -> list[Sample]:
    """The `limit` items among `indices` with the highest predicted-class probability.

    Ties go to the lower id, so the choice does not depend on row order.
    """
    conf = preds["proba"][indices, preds["predicted"][indices]]
    order = np.lexsort((preds["id"][indices], -conf))[:limit]
    chosen = indices[order]
    return [
        Sample(int(preds["id"][i]), int(preds["label"][i]), int(preds["predicted"][i]), float(conf[j]))
        for i, j in zip(chosen, order)
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
