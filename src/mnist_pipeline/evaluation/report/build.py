"""build_report: from the experiments' metrics, histories and predictions to report.html/.md."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.evaluation.report import figures as fig
from mnist_pipeline.evaluation.report.content import build_view
from mnist_pipeline.evaluation.report.gallery import mistakes_gallery, pairs_gallery
from mnist_pipeline.evaluation.report.history import experiment_histories
from mnist_pipeline.evaluation.report.html import render_html
from mnist_pipeline.evaluation.report.layout import COMPARISON, ROBUSTNESS, Figures, figure_path
from mnist_pipeline.evaluation.report.markdown import render_markdown
from mnist_pipeline.evaluation.report.robustness import corruption_examples, family_mean, robustness_view
from mnist_pipeline.evaluation.report.view import ReportView
from mnist_pipeline.evaluation.robustness import read_robustness
from mnist_pipeline.fileio import atomic_path
from mnist_pipeline.nn.settings import TrainSettings


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


def render_figures(view: ReportView, images: np.ndarray) -> Figures:
    """Every figure of the report, by group (experiment name or COMPARISON) and name."""
    classes = view.classes
    out: Figures = {}
    with fig.styled():
        for exp in view.experiments:
            m = exp.metrics
            scores = [m["per_class"].get(c, {}) for c in classes]
            # Training loss and accuracy come from the batches as trained: augmented, if it augments.
            augment = {key: value for key, value in exp.settings.items() if key.startswith("augment_")}
            augmented = TrainSettings.from_dict(augment).augmentation.active
            out[exp.name] = {
                "loss": fig.loss_curves(exp.history, augmented),
                "accuracy": fig.accuracy_curves(exp.history, m.get("test_accuracy"), augmented),
                "confusion_matrix": fig.confusion_heatmap(np.asarray(m["confusion_matrix"]), classes),
                # An absent class (no test images, null scores) draws no bar.
                "per_class": fig.per_class_bars([c.get("precision") or 0.0 for c in scores],
                                                [c.get("recall") or 0.0 for c in scores], classes),
                "reliability": fig.reliability_diagram(exp.calibration, float((m.get("ece") or {}).get("value", np.nan))),
                "mistakes": fig.gallery_png(mistakes_gallery(exp, classes), images),
                "confused_pairs": fig.gallery_png(pairs_gallery(exp, classes), images),
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
        if view.robustness is not None:
            rob = view.robustness
            accuracy = [[np.nan if (a := family_mean(exp, f)) is None else a for f in rob.families] for exp in rob.experiments]
            examples, families = corruption_examples(images, rob)
            out[ROBUSTNESS] = {
                "corruption_accuracy": fig.corruption_accuracy([e.name for e in rob.experiments], rob.families, np.array(accuracy),
                                                               [e.robustness["clean_accuracy"] for e in rob.experiments]),
                "corruption_examples": fig.corruption_strip(examples, families,
                                                            ["clean", *(f"severity {s}" if i == 0 else str(s)
                                                                        for i, s in enumerate(rob.severities))]),
            }
    return out


def _gallery_tiles(view: ReportView, images: np.ndarray) -> dict[int, fig.Png]:
    """Test image id -> its PNG, for every image the galleries show (the HTML lays them out as tiles)."""
    shown = {tile.sample.id for exp in view.experiments
             for gallery in (mistakes_gallery(exp, view.classes), pairs_gallery(exp, view.classes)) for tile in gallery.tiles}
    return {i: fig.tile_png(images[i]) for i in sorted(shown)}


def _robustness_results(experiments: Sequence[Mapping[str, Any]], paths: Sequence[str | Path]) -> dict[str, dict]:
    """Experiment name -> its robustness result, read and checked from `paths` (one per experiment)."""
    if not paths:
        return {}
    if len(paths) != len(experiments):
        raise ValueError(f"robustness: {len(paths)} files for {len(experiments)} experiments; give one per experiment, in their order")
    return {str(exp["name"]): read_robustness(path) for exp, path in zip(experiments, paths, strict=True)}


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
    robustness: Sequence[str | Path] | None = None,
) -> None:
    """Write report.html (self-contained), report.md and the PNGs it links under figures_dir.

    experiments: dicts with name, metrics (metrics.json), history (per-epoch dicts), settings
    (the experiment's full train settings) and predictions (a table or dict of arrays with
    id, label, predicted, prob_0..prob_{k-1}; id indexes test_images, uint8 (n, H, W)).
    classes: class names in label order; by default the metrics' `classes`.
    history: experiment name -> its earlier runs, newest first (report.history.earlier_run_entries):
    dicts with run, finished, settings, metrics, history and predictions; shown in the History section.
    robustness: each experiment's robustness.json (mnist_pipeline.evaluation.robustness), in the order of
    `experiments`; None or empty (the workflow's `robustness: null`) leaves out How it holds up.
    """
    out_html, out_md, figures_dir = Path(out_html), Path(out_md), Path(figures_dir)
    results = _robustness_results(experiments, robustness or [])
    view = build_view(dataset=dataset, experiments=experiments, defaults=defaults, provenance=provenance, classes=classes)
    view.histories = experiment_histories(view.experiments, history or {})
    for exp in view.experiments:
        exp.robustness = results.get(exp.name)
    view.robustness = robustness_view(view.experiments)
    images = _images(test_images, view)
    figures = render_figures(view, images)
    for group, pngs in figures.items():
        for name, png in pngs.items():
            _write(figure_path(figures_dir, group, name), png.data)

    def link(group: str, name: str) -> str:
        return Path(os.path.relpath(figure_path(figures_dir, group, name), out_md.parent)).as_posix()

    _write(out_md, render_markdown(view, link).encode("utf-8"))
    _write(out_html, render_html(view, figures, _gallery_tiles(view, images)).encode("utf-8"))
