"""The accuracy report: report.html (self-contained), report.md and its figures.

build_report writes them from the experiments' outputs; collect_provenance gathers what is
needed to reproduce the run. layout.figure_files lists the PNGs written, for the workflow.

What is shown: view (the view objects), content (experiments ranked, galleries' samples),
comparison (leaderboard order, paired differences, settings against the defaults), seeds
(spreads over seeds), history (earlier runs), robustness (How it holds up: accuracy on
corrupted test images), gallery (each gallery composed once). How numbers are written: formatting.
The words: words (tables, notes, headline, glossary), captions (figure captions). How it is
drawn and written: figures (PNGs), style, html, markdown; build puts it together.
"""

from mnist_pipeline.evaluation.report.build import build_report
from mnist_pipeline.evaluation.report.layout import (
    COMPARISON,
    COMPARISON_FIGURES,
    EXPERIMENT_FIGURES,
    ROBUSTNESS,
    ROBUSTNESS_FIGURES,
    figure_files,
)
from mnist_pipeline.evaluation.report.provenance import collect_provenance

__all__ = [
    "COMPARISON",
    "COMPARISON_FIGURES",
    "EXPERIMENT_FIGURES",
    "ROBUSTNESS",
    "ROBUSTNESS_FIGURES",
    "build_report",
    "collect_provenance",
    "figure_files",
]
