"""Which figures the report has and where their PNG files go (what each shows: captions.py).

Files under the figures directory:
    {experiment}/{figure}.png    for figure in EXPERIMENT_FIGURES, one folder per experiment
    {experiment}/history.png     for an experiment with earlier runs (the History section)
    _comparison/{figure}.png     for figure in COMPARISON_FIGURES, when there are 2+ experiments
    _robustness/{figure}.png     for figure in ROBUSTNESS_FIGURES, when some experiment has a
                                 robustness result (How it holds up)
Experiment names start with a letter or digit (the config schema), so `_comparison` and
`_robustness` can never collide with one; every file matches the single pattern
"{experiment}/{figure}.png".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mnist_pipeline.evaluation.report.figures import Png

COMPARISON = "_comparison"
EXPERIMENT_FIGURES = ("loss", "accuracy", "confusion_matrix", "per_class", "reliability", "mistakes", "confused_pairs")
COMPARISON_FIGURES = ("accuracy_intervals", "val_accuracy")
ROBUSTNESS = "_robustness"
ROBUSTNESS_FIGURES = ("corruption_accuracy", "corruption_examples")
# The experiment figures shown as panels; the two galleries are drawn from tiles in the HTML.
PANEL_FIGURES = EXPERIMENT_FIGURES[:5]

# group (experiment name or COMPARISON) -> figure name -> PNG
Figures = dict[str, dict[str, Png]]

def figure_path(figures_dir: str | Path, group: str, figure: str) -> Path:
    return Path(figures_dir) / group / f"{figure}.png"


def figure_files(experiments: Sequence[str], with_history: Sequence[str] = (), with_robustness: bool = False) -> list[str]:
    """Relative paths of every PNG build_report writes for these experiment names, those in
    `with_history` having earlier runs, `with_robustness` when some has a robustness result."""
    files = [f"{name}/{figure}.png" for name in experiments for figure in EXPERIMENT_FIGURES]
    files += [f"{name}/history.png" for name in with_history]
    if len(experiments) > 1:
        files += [f"{COMPARISON}/{figure}.png" for figure in COMPARISON_FIGURES]
    if with_robustness:
        files += [f"{ROBUSTNESS}/{figure}.png" for figure in ROBUSTNESS_FIGURES]
    return files
