"""Which figures the report has, where their PNG files go, and what each one shows.

Files under the figures directory:
    {experiment}/{figure}.png    for figure in EXPERIMENT_FIGURES, one folder per experiment
    {experiment}/history.png     for an experiment with earlier runs (the History section)
    _comparison/{figure}.png     for figure in COMPARISON_FIGURES, when there are 2+ experiments
Experiment names start with a letter or digit (the config schema), so `_comparison` can
never collide with one; every file matches the single pattern "{experiment}/{figure}.png".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mnist_pipeline.report.figures import Png

COMPARISON = "_comparison"
EXPERIMENT_FIGURES = ("loss", "accuracy", "confusion_matrix", "per_class", "reliability", "mistakes", "confused_pairs")
COMPARISON_FIGURES = ("accuracy_intervals", "val_accuracy")
# The experiment figures shown as panels; the two galleries are drawn from tiles in the HTML.
PANEL_FIGURES = EXPERIMENT_FIGURES[:5]

# group (experiment name or COMPARISON) -> figure name -> PNG
Figures = dict[str, dict[str, Png]]

# figure name -> (alt text / title, caption): what the figure shows and how to read it.
FIGURE_TEXT = {
    "loss": (
        "Loss per epoch",
        "Training and validation cross-entropy per epoch. Validation loss rising while training loss "
        "keeps falling is over-fitting; the dotted line marks the epoch of lowest validation loss.",
    ),
    "accuracy": (
        "Accuracy per epoch",
        "Training and validation accuracy per epoch; the dashed line is the final model's test accuracy.",
    ),
    "confusion_matrix": (
        "Confusion matrix",
        "Test images by true class (rows) and predicted class (columns). Red cells are mistakes, "
        "shaded by the share of the true class they take; the diagonal (correct) is left neutral.",
    ),
    "per_class": (
        "Precision and recall per class",
        "Precision: of the images predicted as a class, the share that belong to it. "
        "Recall: of the images of a class, the share predicted as it.",
    ),
    "reliability": (
        "Reliability diagram",
        "Test images grouped by the confidence of their prediction: bars below the diagonal mean the "
        "model is over-confident there. Below, how many images fall in each bin (log scale).",
    ),
    "mistakes": (
        "Most confident mistakes",
        "The wrong predictions the model was surest of, surest first: true class, predicted class, "
        "the probability it gave, and the test image id. Label noise often shows up here.",
    ),
    "confused_pairs": (
        "Most confused class pairs",
        "The (true, predicted) pairs with the most mistakes, with the most confident examples of each.",
    ),
    "accuracy_intervals": (
        "Test accuracy of every experiment",
        "Test accuracy with its bootstrap 95% interval, best on top; the shaded band is the best "
        "experiment's interval.",
    ),
    "val_accuracy": (
        "Validation accuracy of every experiment",
        "Validation accuracy per epoch, all experiments on one axis.",
    ),
    "history": (
        "Current run against the best earlier one",
        "Validation accuracy per epoch of the experiment's current run and of the best run tried earlier "
        "under its name (highest test accuracy).",
    ),
}
GALLERY_TEXT = {name: FIGURE_TEXT[name] for name in ("mistakes", "confused_pairs")}


def figure_path(figures_dir: str | Path, group: str, figure: str) -> Path:
    return Path(figures_dir) / group / f"{figure}.png"


def figure_files(experiments: Sequence[str], with_history: Sequence[str] = ()) -> list[str]:
    """Relative paths of every PNG build_report writes for these experiment names, those in
    `with_history` having earlier runs."""
    files = [f"{name}/{figure}.png" for name in experiments for figure in EXPERIMENT_FIGURES]
    files += [f"{name}/history.png" for name in with_history]
    if len(experiments) > 1:
        files += [f"{COMPARISON}/{figure}.png" for figure in COMPARISON_FIGURES]
    return files
