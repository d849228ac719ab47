"""How the report writes numbers and settings, in HTML, Markdown and the terminal alike; None (a
key the metrics lack) is "n/a".
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from mnist_pipeline.evaluation.report.view import Spread

NA = "n/a"
# A class with no test images has no scores to show.
ABSENT = "absent"


def pct(x: float | None, digits: int = 2) -> str:
    return NA if x is None else f"{100 * x:.{digits}f}%"


def ci_pct(ci: Sequence[float] | None) -> str:
    return NA if not ci else f"{100 * ci[0]:.2f}–{100 * ci[1]:.2f}%"


def num(x: float | None, digits: int = 3) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def count(n: int | None) -> str:
    return NA if n is None else f"{int(n):,}"


def seconds(s: float | None) -> str:
    if s is None:
        return NA
    if s < 120:
        return f"{s:.1f} s"
    minutes, rest = divmod(round(s), 60)
    return f"{minutes} min {rest:02d} s"


def points(x: float) -> str:
    """A difference of fractions in percentage points, signed."""
    return f"{100 * x:+.2f}"


def change_text(change: tuple[float, float, float] | None) -> str:
    """An accuracy_change as `+0.40 [-0.10, +0.90]` (percentage points)."""
    if change is None:
        return NA
    diff, lo, hi = change
    return f"{points(diff)} [{points(lo)}, {points(hi)}]"


def value_text(value: Any) -> str:
    """A settings value as a user would write it in config.yaml."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def settings_text(differs: Mapping[str, Any]) -> str:
    """key=value pairs as a user would write them; "none" for no difference."""
    return ", ".join(f"{k}={value_text(v)}" for k, v in differs.items()) or "none"


def spread_text(spread: Spread | None, fmt: Callable[[float], str]) -> str:
    """mean ± std in the metric's own format; the mean alone for a single seed."""
    if spread is None:
        return NA
    return fmt(spread.mean) if spread.std is None else f"{fmt(spread.mean)} ± {fmt(spread.std)}"


def epochs_run_text(metrics: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """Epochs run, as `7 of 20` when early stopping ended training before the planned count."""
    run = metrics.get("epochs_run")
    planned = settings.get("epochs")
    if run is None:
        return NA
    if planned is not None and int(planned) > int(run):
        return f"{int(run)} of {int(planned)}"
    return str(int(run))
