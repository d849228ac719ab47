"""The report's view objects: what it shows of each experiment (inputs, rank, comparison with
the best, galleries' samples), of each configuration repeated over seeds, and of the whole run.
content.build_view makes them; both writers read them, so report.html and report.md can never
disagree on a number or on the order of the leaderboard.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
    # Its robustness.json (mnist_pipeline.evaluation.robustness), or None when it was not scored on corruptions.
    robustness: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class Spread:
    """One metric over the seeds of a group: sample mean, standard deviation (ddof=1), range.

    std is None for a single seed, where it is undefined.
    """

    mean: float
    std: float | None
    low: float
    high: float


@dataclass(frozen=True)
class SeedGroup:
    """Experiments whose settings are equal but for `seed`: the same configuration, retrained.

    seeds are distinct and sorted; members are every experiment of the group, by name. When
    two members share a seed they are the same run (training is deterministic), so the
    statistics count each seed once, from its first member by name. A metric some member
    lacks is None.
    """

    differs: dict[str, Any]  # settings that differ from the defaults, seed left out
    seeds: list[int]
    members: list[str]
    accuracy: Spread
    macro_f1: Spread | None
    log_loss: Spread | None


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
    # report.robustness.RobustnessView when some experiment has a robustness result, else None
    robustness: Any = None

    @property
    def best(self) -> ExperimentView:
        return self.experiments[0]
