"""build_report: from the experiments' metrics, histories and predictions to report.html/.md."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.fileio import atomic_path
from mnist_pipeline.report import figures as fig
from mnist_pipeline.report.history import experiment_histories
from mnist_pipeline.report.html import render_html
from mnist_pipeline.report.layout import COMPARISON, Figures, figure_path
from mnist_pipeline.report.markdown import render_markdown
from mnist_pipeline.report.summary import ExperimentView, ReportView, Sample, build_view, pct

MISTAKE_COLUMNS = 6
WRONG_COLOR = "#b42318"
MUTED_COLOR = "#5b6470"


def _images(test_images: np.ndarray, view: ReportView) -> np.ndarray:
    images = np.asarray(test_images)
    if images.ndim != 3 or 0 in images.shape[1:]:
        raise ValueError(f"test_images must have shape (n, H, W), got {images.shape}")
    for exp in view.experiments:
        if exp.ids.size and (exp.ids.min() < 0 or exp.ids.max() >= len(images)):
            raise TableSchemaError(
                f"predictions of experiment {exp.name!r}: ids run {exp.ids.min()}..{exp.ids.max()}, "
                f"but there are {len(images)} test images"
            )
    return images


def _mistakes_mosaic(exp: ExperimentView, images: np.ndarray, classes: Sequence[str]) -> fig.Png:
    tiles = [
        fig.Tile(images[m.id], ((classes[m.label], "#1d232b"), (f"→ {classes[m.predicted]}", WRONG_COLOR),
                                (f"{pct(m.probability, 1)}  #{m.id}", MUTED_COLOR)))
        for m in exp.mistakes
    ]
    rows = [tiles[i:i + MISTAKE_COLUMNS] for i in range(0, len(tiles), MISTAKE_COLUMNS)]
    return fig.image_grid(rows, title=f"{exp.name}: most confident mistakes")


def _pairs_mosaic(exp: ExperimentView, images: np.ndarray, classes: Sequence[str]) -> fig.Png:
    rows = [[fig.Tile(images[m.id], ((pct(m.probability, 1), MUTED_COLOR),)) for m in p.examples] for p in exp.pairs]
    labels = [f"{classes[p.true]}\ntaken for\n{classes[p.predicted]}\n{p.count:,} times" for p in exp.pairs]
    return fig.image_grid(rows, row_labels=labels, title=f"{exp.name}: most confused pairs")


def render_figures(view: ReportView, images: np.ndarray) -> Figures:
    """Every figure of the report, by group (experiment name or COMPARISON) and name."""
    classes = view.classes
    out: Figures = {}
    with fig.styled():
        for exp in view.experiments:
            m = exp.metrics
            scores = [m["per_class"].get(c, {}) for c in classes]
            out[exp.name] = {
                "loss": fig.loss_curves(exp.history),
                "accuracy": fig.accuracy_curves(exp.history, m.get("test_accuracy")),
                "confusion_matrix": fig.confusion_heatmap(np.asarray(m["confusion_matrix"]), classes),
                # An absent class (no test images, null scores) draws no bar.
                "per_class": fig.per_class_bars([c.get("precision") or 0.0 for c in scores],
                                                [c.get("recall") or 0.0 for c in scores], classes),
                "reliability": fig.reliability_diagram(exp.calibration, float((m.get("ece") or {}).get("value", np.nan))),
                "mistakes": _mistakes_mosaic(exp, images, classes),
                "confused_pairs": _pairs_mosaic(exp, images, classes),
            }
        if len(view.experiments) > 1:
            exps = view.experiments
            out[COMPARISON] = {
                "accuracy_intervals": fig.accuracy_intervals(
                    [e.name for e in exps], [e.metrics["test_accuracy"] for e in exps],
                    [e.metrics.get("test_accuracy_ci95") or [e.metrics["test_accuracy"]] * 2 for e in exps]),
                "val_accuracy": fig.val_accuracy_overlay([e.name for e in exps], [e.history for e in exps]),
            }
        for history in view.histories:
            out[history.name]["history"] = fig.val_accuracy_overlay(
                [f"{history.name} now", f"best earlier ({history.best.run})"], [history.current.history, history.best.history])
    return out


def _gallery_tiles(view: ReportView, images: np.ndarray) -> dict[int, fig.Png]:
    shown: list[Sample] = []
    for exp in view.experiments:
        shown += exp.mistakes
        shown += [m for p in exp.pairs for m in p.examples]
    return {i: fig.tile_png(images[i]) for i in sorted({m.id for m in shown})}


def _write(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def build_report(
    *,
    dataset: str,
    experiments: Sequence[Mapping[str, Any]],
    defaults: Mapping[str, Any],
    test_images: np.ndarray,
    provenance: Mapping[str, Any],
    out_html: str | Path,
    out_md: str | Path,
    figures_dir: str | Path,
    classes: Sequence[str] | None = None,
    history: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> None:
    """Write report.html (self-contained), report.md and the PNGs it links under figures_dir.

    experiments: dicts with name, metrics (metrics.json), history (per-epoch dicts), settings
    (the experiment's full train settings) and predictions (a table or dict of arrays with
    id, label, predicted, prob_0..prob_{k-1}; id indexes test_images, uint8 (n, H, W)).
    classes: class names in label order; by default the metrics' `classes`.
    history: experiment name -> its earlier runs, newest first (report.history.earlier_run_entries):
    dicts with run, finished, settings, metrics, history and predictions; shown in the History section.
    """
    out_html, out_md, figures_dir = Path(out_html), Path(out_md), Path(figures_dir)
    view = build_view(dataset=dataset, experiments=experiments, defaults=defaults, provenance=provenance, classes=classes)
    view.histories = experiment_histories(view.experiments, history or {})
    images = _images(test_images, view)
    figures = render_figures(view, images)
    for group, pngs in figures.items():
        for name, png in pngs.items():
            _write(figure_path(figures_dir, group, name), png.data)

    def link(group: str, name: str) -> str:
        return Path(os.path.relpath(figure_path(figures_dir, group, name), out_md.parent)).as_posix()

    _write(out_md, render_markdown(view, link).encode("utf-8"))
    _write(out_html, render_html(view, figures, _gallery_tiles(view, images)).encode("utf-8"))
