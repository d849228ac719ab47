"""What each figure of the report shows and how to read it: the one place its caption is written.

The report's HTML and Markdown show these captions, and Snakemake's own report shows them through
workflow/report/figures.rst, which is generated from them:

    python -c "from mnist_pipeline.evaluation.report.captions import figures_rst; print(figures_rst(), end='')" > workflow/report/figures.rst

(a test fails when the two differ).
"""

from __future__ import annotations

import textwrap

from mnist_pipeline.evaluation.report.layout import COMPARISON, ROBUSTNESS

# figure name -> (alt text / title, caption): what the figure shows and how to read it.
FIGURE_TEXT = {
    "loss": (
        "Loss per epoch",
        "Training and validation cross-entropy per epoch. Validation loss rising while training loss "
        "keeps falling is over-fitting; the dotted line marks the epoch of lowest validation loss.",
    ),
    "accuracy": (
        "Accuracy per epoch",
        "Training and validation accuracy per epoch; the dashed line is the final model's test accuracy. "
        "Training accuracy is measured on the batches as trained: on augmented images when the experiment "
        "augments (its legend then says so), so it can sit below validation accuracy.",
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
    "corruption_accuracy": (
        "Accuracy under each corruption",
        "Accuracy on corrupted copies of the test images, averaged over the severities, one bar per "
        "experiment for each corruption family; a dashed line marks each experiment's accuracy on the "
        "same images clean, in its bars' colour.",
    ),
    "corruption_examples": (
        "What each corruption does",
        "One test image under each corruption family: clean, then at each severity from mild to strong, "
        "with the random draws the scores used.",
    ),
    "history": (
        "Current run against the best earlier one",
        "Validation accuracy per epoch of the experiment's current run and of the best run tried earlier "
        "under its name (highest test accuracy).",
    ),
}
GALLERY_TEXT = {name: FIGURE_TEXT[name] for name in ("mistakes", "confused_pairs")}


def figures_rst() -> str:
    """workflow/report/figures.rst: a Jinja template (Snakemake renders it with the figure's
    wildcards) that picks the caption of the figure it is shown under."""
    lines = [
        "{# Generated from FIGURE_TEXT in src/mnist_pipeline/evaluation/report/captions.py (a test keeps them equal):",
        "   edit the captions there, then regenerate this file as that module's docstring says. #}",
        "{% set figure = snakemake.wildcards.figure %}",
        "{% set experiment = snakemake.wildcards.experiment %}",
        f'{{% if experiment == "{COMPARISON}" %}}All experiments compared.'
        f'{{% elif experiment == "{ROBUSTNESS}" %}}How the experiments hold up on corrupted test images.'
        "{% else %}Experiment ``{{ experiment }}``.{% endif %}",
        "",
    ]
    for i, (name, (_, caption)) in enumerate(FIGURE_TEXT.items()):
        lines.append(f'{{% {"if" if i == 0 else "elif"} figure == "{name}" %}}')
        lines += textwrap.wrap(caption, width=96)
    lines += ["{% else %}", "Figure ``{{ figure }}`` of the report.", "{% endif %}"]
    return "\n".join(lines) + "\n"
