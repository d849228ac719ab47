"""Seed statistics: experiments that differ only by `seed` grouped as one configuration, with
the mean, spread and range of their metrics over the seeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from mnist_pipeline.evaluation.report.comparison import settings_diff
from mnist_pipeline.evaluation.report.view import ExperimentView, SeedGroup, Spread


def _spread(values: Sequence[Any]) -> Spread | None:
    if any(v is None for v in values):
        return None
    x = np.asarray(values, dtype=np.float64)
    return Spread(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else None, float(x.min()), float(x.max()))


def _without_seed(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "seed"}


def seed_groups(experiments: Sequence[ExperimentView], defaults: Mapping[str, Any]) -> list[SeedGroup]:
    """Group experiments that differ only by `seed`; [] unless some group has 2+ distinct seeds.

    Groups are ranked by mean test accuracy, then mean log loss, then first member's name.
    """
    by_settings: dict[str, list[ExperimentView]] = {}
    for exp in sorted(experiments, key=lambda e: e.name):
        by_settings.setdefault(json.dumps(_without_seed(exp.settings), sort_keys=True), []).append(exp)
    groups = []
    for members in by_settings.values():
        per_seed: dict[int, ExperimentView] = {}
        for exp in members:  # by name, so a repeated seed keeps its first member
            per_seed.setdefault(int(exp.settings.get("seed", defaults.get("seed", 0))), exp)
        runs = [per_seed[seed] for seed in sorted(per_seed)]
        groups.append(SeedGroup(
            differs=settings_diff(_without_seed(members[0].settings), _without_seed(defaults)),
            seeds=sorted(per_seed),
            members=[exp.name for exp in members],
            accuracy=_spread([exp.metrics["test_accuracy"] for exp in runs]),
            macro_f1=_spread([exp.metrics.get("macro_f1") for exp in runs]),
            log_loss=_spread([exp.metrics.get("log_loss") for exp in runs]),
        ))
    if all(len(group.seeds) < 2 for group in groups):
        return []
    return sorted(groups, key=lambda g: (-g.accuracy.mean, float("inf") if g.log_loss is None else g.log_loss.mean,
                                         g.members[0]))
