"""The report's figures, rendered to PNG bytes with matplotlib's Agg canvas.

Figures are built on `matplotlib.figure.Figure` directly, not pyplot: no global figure
registry, no backend switch, and nothing kept alive between figures. Every figure is drawn
under the same pinned style and saved without metadata, so the same data gives the same bytes.
Each panel is small (about 5 x 3.3 inches) so that it stays legible on a phone, where the
page shows panels one per row instead of side by side.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import matplotlib
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import ListedColormap, PowerNorm
from matplotlib.figure import Figure
from matplotlib.ticker import Formatter, MaxNLocator
from PIL import Image

from mnist_pipeline.evaluation.report.gallery import Gallery

DPI = 120
PANEL = (5.0, 3.3)  # inches
TRAIN_COLOR = "#0072B2"  # Okabe-Ito blue and vermillion: distinguishable with colour blindness
VAL_COLOR = "#D55E00"
TEST_COLOR = "#555555"
# A user's matplotlibrc must not change the report, so every figure starts from the defaults.
STYLE = {
    "font.family": "DejaVu Sans",
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.titleweight": "bold",
    "axes.labelsize": 10,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.edgecolor": "#888888",
    "axes.grid": True,
    "grid.color": "#e6e6e6",
    "grid.linewidth": 0.7,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "figure.facecolor": "white",
    "savefig.facecolor": "white",
    "image.interpolation": "nearest",
}


@dataclass(frozen=True)
class Png:
    """An encoded PNG and its pixel size (for the <img> width/height attributes)."""

    data: bytes
    width: int
    height: int


@contextmanager
def styled() -> Iterator[None]:
    """Context in which figures are drawn: matplotlib's defaults plus STYLE, restored after."""
    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update(STYLE)
        yield


def _figure(size: tuple[float, float] = PANEL) -> Figure:
    fig = Figure(figsize=size, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def to_png(fig: Figure) -> Png:
    """Render `fig` and encode it as a palette PNG (a quarter of RGBA's size, same look)."""
    canvas = fig.canvas
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    image = Image.fromarray(rgba[..., :3]).quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    buf = io.BytesIO()
    # No text chunks (matplotlib would write its version there), so bytes depend on pixels only.
    image.save(buf, format="PNG", compress_level=6)
    return Png(buf.getvalue(), image.width, image.height)


def tile_png(image: np.ndarray) -> Png:
    """One grayscale test image as a PNG at its own resolution (the page scales it up)."""
    buf = io.BytesIO()
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="L")
    pil.save(buf, format="PNG", compress_level=9)
    return Png(buf.getvalue(), pil.width, pil.height)


class Percent(Formatter):
    """Fractions as percentages with as many decimals as the tick spacing needs, and no more."""

    def __call__(self, x, pos=None):
        ticks = self.axis.get_majorticklocs() if self.axis is not None else []
        step = 100 * float(np.min(np.diff(ticks))) if len(ticks) > 1 else 1.0
        decimals = next((d for d in range(4) if abs(step * 10**d - round(step * 10**d)) < 1e-6), 4)
        return f"{100 * x:.{decimals}f}%"


def _column(history: Sequence[Mapping], key: str) -> np.ndarray:
    return np.array([np.nan if row.get(key) is None else float(row[key]) for row in history])


def _empty(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777777")
    ax.set_xticks([])
    ax.set_yticks([])


def _epoch_axis(ax) -> None:
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _curve_panel(
    history: Sequence[Mapping], key: str, title: str, augmented: bool = False
) -> tuple[Figure, object, np.ndarray | None]:
    """A panel of training and validation `key` per epoch; epochs is None when there is no history.
    `augmented`: the training figures were measured on augmented batches, and say so."""
    fig = _figure()
    ax = fig.add_subplot()
    ax.set_title(title)
    if not history:
        _empty(ax, "no training history")
        return fig, ax, None
    epochs = _column(history, "epoch")
    marker = "o" if len(history) <= 30 else None
    for split, color in (("train", TRAIN_COLOR), ("val", VAL_COLOR)):
        values = _column(history, f"{split}_{key}")
        if np.isfinite(values).any():
            label = ("training (augmented batches)" if augmented else "training") if split == "train" else "validation"
            ax.plot(epochs, values, color=color, marker=marker, markersize=3, linewidth=1.6, label=label)
    _epoch_axis(ax)
    return fig, ax, epochs


def loss_curves(history: Sequence[Mapping], augmented: bool = False) -> Png:
    """Training and validation loss per epoch, with the epoch of lowest validation loss marked."""
    fig, ax, epochs = _curve_panel(history, "loss", "Loss", augmented)
    if epochs is None:
        return to_png(fig)
    val = _column(history, "val_loss")
    if np.isfinite(val).any():
        best = int(np.nanargmin(val))
        ax.axvline(epochs[best], color=VAL_COLOR, linestyle=":", linewidth=1)
        ax.annotate(
            f"lowest validation loss\n(epoch {epochs[best]:g})",
            (epochs[best], val[best]),
            xytext=(4, 18),
            textcoords="offset points",
            fontsize=7,
            color=VAL_COLOR,
        )
    ax.set_ylabel("cross-entropy (nats)")
    ax.legend(loc="upper right")
    return to_png(fig)


def accuracy_curves(history: Sequence[Mapping], test_accuracy: float | None, augmented: bool = False) -> Png:
    """Training and validation accuracy per epoch, with the final test accuracy as a line."""
    fig, ax, epochs = _curve_panel(history, "accuracy", "Accuracy", augmented)
    if epochs is None:
        return to_png(fig)
    if test_accuracy is not None:
        ax.axhline(test_accuracy, color=TEST_COLOR, linestyle="--", linewidth=1, label=f"test {test_accuracy:.2%}")
    ax.yaxis.set_major_formatter(Percent())
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right")
    return to_png(fig)


def confusion_heatmap(cm: np.ndarray, classes: Sequence[str]) -> Png:
    """Counts per (true, predicted) cell; colour shows errors as a share of the true class.

    The diagonal is drawn in a neutral colour: coloured by the same scale it would dominate
    the picture and hide the errors, which are what a reader looks for here.
    """
    cm = np.asarray(cm)
    k = len(classes)
    # Grows past 10 classes (custom datasets) so the cells and their labels stay readable.
    fig = _figure((max(5.2, 2.4 + 0.28 * k), max(4.6, 1.8 + 0.28 * k)))
    ax = fig.add_subplot()
    rows = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, rows, out=np.zeros(cm.shape), where=rows > 0)
    off = np.where(np.eye(k, dtype=bool), np.nan, share)
    vmax = max(float(np.nanmax(off)) if np.isfinite(off).any() else 0.0, 0.01)
    image = ax.imshow(off, cmap="Reds", norm=PowerNorm(0.5, vmin=0, vmax=vmax))
    ax.imshow(np.where(np.eye(k, dtype=bool), 1.0, np.nan), cmap=ListedColormap(["#dce6f0"]))
    if k <= 20:
        for t in range(k):
            for p in range(k):
                if cm[t, p] == 0:
                    continue
                dark = t != p and share[t, p] > 0.6 * vmax
                ax.text(p, t, str(int(cm[t, p])), ha="center", va="center", fontsize=7 if k <= 10 else 5,
                        color="white" if dark else "#222222", fontweight="bold" if t == p else "normal")
    ax.set_xticks(range(k), classes, rotation=40, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.grid(False)
    ax.set_title("Confusion matrix")
    bar = fig.colorbar(image, ax=ax, shrink=0.8, format=Percent())
    bar.set_label("share of the true class predicted as this", fontsize=7)
    bar.ax.tick_params(labelsize=7)
    return to_png(fig)


def per_class_bars(precision: Sequence[float], recall: Sequence[float], classes: Sequence[str]) -> Png:
    """Horizontal precision and recall bars, one pair per class, first class on top."""
    k = len(classes)
    fig = _figure((5.0, max(2.2, 0.9 + 0.26 * k)))
    ax = fig.add_subplot()
    y = np.arange(k)
    ax.barh(y - 0.2, precision, height=0.4, color=TRAIN_COLOR, label="precision")
    ax.barh(y + 0.2, recall, height=0.4, color=VAL_COLOR, label="recall")
    ax.set_yticks(y, classes)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(Percent())
    ax.grid(axis="y", visible=False)
    ax.set_title("Precision and recall per class")
    fig.legend(loc="outside lower center", ncols=2)
    return to_png(fig)


def reliability_diagram(bins: Mapping[str, np.ndarray], ece: float) -> Png:
    """Accuracy against confidence per bin, with the bin counts (log scale) below."""
    fig = _figure((5.0, 4.0))
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    edges = np.asarray(bins["edges"])
    width = np.diff(edges)
    count = np.asarray(bins["count"])
    filled = count > 0
    top.plot([0, 1], [0, 1], color=TEST_COLOR, linestyle="--", linewidth=1, label="perfect calibration")
    top.bar(edges[:-1][filled], np.asarray(bins["accuracy"])[filled], width=width[filled], align="edge",
            color="#8fbce6", edgecolor="white", label="accuracy in bin")
    acc = np.asarray(bins["accuracy"])[filled]
    top.bar(edges[:-1][filled], np.asarray(bins["confidence"])[filled] - acc, bottom=acc, width=width[filled],
            align="edge", facecolor="none", hatch="////", edgecolor=VAL_COLOR, linewidth=0.6,
            label="gap to mean confidence")
    top.set_ylim(0, 1)
    top.set_ylabel("accuracy")
    top.set_title(f"Reliability (ECE {ece:.2%}, {len(count)} bins)")
    top.legend(loc="upper left")
    bottom.bar(edges[:-1][filled], count[filled], width=width[filled], align="edge", color="#999999", edgecolor="white")
    bottom.set_yscale("log")
    bottom.set_ylabel("items")
    bottom.set_xlabel("confidence of the predicted class")
    bottom.set_xlim(0, 1)
    bottom.xaxis.set_major_formatter(Percent())
    return to_png(fig)


def accuracy_intervals(names: Sequence[str], accuracy: Sequence[float], ci95: Sequence[Sequence[float]]) -> Png:
    """Test accuracy with its 95% interval per experiment, in the given (leaderboard) order."""
    n = len(names)
    fig = _figure((5.0, max(1.8, 0.9 + 0.32 * n)))
    ax = fig.add_subplot()
    y = np.arange(n)
    acc = np.asarray(accuracy, dtype=float)
    lo_hi = np.asarray(ci95, dtype=float).reshape(n, 2)
    ax.errorbar(acc, y, xerr=np.abs(lo_hi.T - acc), fmt="o", color=TRAIN_COLOR, ecolor=TRAIN_COLOR,
                capsize=3, markersize=4)
    ax.axvspan(lo_hi[0, 0], lo_hi[0, 1], color=TRAIN_COLOR, alpha=0.08, linewidth=0)
    ax.set_yticks(y, names)
    ax.invert_yaxis()
    ax.set_ylim(n - 0.5, -0.5)
    ax.xaxis.set_major_formatter(Percent())
    ax.grid(axis="y", visible=False)
    ax.set_title("Test accuracy, 95% interval (band: the best's)")
    return to_png(fig)


def val_accuracy_overlay(names: Sequence[str], histories: Sequence[Sequence[Mapping]]) -> Png:
    """Validation accuracy per epoch of every experiment on one axis."""
    fig = _figure()
    ax = fig.add_subplot()
    colors = matplotlib.colormaps["tab10"].colors
    for i, (name, history) in enumerate(zip(names, histories, strict=False)):
        values = _column(history, "val_accuracy")
        if np.isfinite(values).any():
            ax.plot(_column(history, "epoch"), values, color=colors[i % len(colors)], linewidth=1.5, label=name)
    ax.yaxis.set_major_formatter(Percent())
    _epoch_axis(ax)
    ax.set_ylabel("validation accuracy")
    ax.set_title("Validation accuracy per epoch")
    if ax.lines:
        ax.legend(loc="lower right")
    else:
        _empty(ax, "no training history")
    return to_png(fig)


# A gallery line's role (report.gallery) -> its colour in the PNG.
ROLE_COLORS = {"class": "#1d232b", "predicted": "#b42318", "meta": "#5b6470", "plain": "#1d232b"}


def gallery_png(gallery: Gallery, images: np.ndarray) -> Png:
    """A gallery drawn on one axis: images (`images[tile.sample.id]`, uint8 (H, W), one size)
    placed in one canvas, each tile's lines under it, each row's label on its left.

    One imshow plus text is several times faster than an axis per image. Images smaller than
    MNIST's 28x28 are enlarged by a whole factor, so that captions sized for 28-pixel tiles fit.
    """
    rows = [row.tiles for row in gallery.rows]
    labelled = any(row.label for row in gallery.rows)
    row_labels = ["\n".join(text for text, _ in row.label) for row in gallery.rows] if labelled else None
    title = gallery.title
    n_rows = max(len(rows), 1)
    n_cols = max((len(r) for r in rows), default=1)
    lines = max((len(t.lines) for r in rows for t in r), default=0)
    height, width = next((images[t.sample.id].shape for r in rows for t in r), (28, 28))
    zoom = max(1, 28 // max(height, width))
    height, width = height * zoom, width * zoom
    cell_w, cell_h = max(width, 28) + 6, height + 4 + 5 * lines  # in image pixels; a caption line is ~5 of them
    label_w = 36 if row_labels else 0
    canvas = np.full((n_rows * cell_h, label_w + n_cols * cell_w), np.nan)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            y0, x0 = r * cell_h + 2, label_w + c * cell_w + 3
            canvas[y0:y0 + height, x0:x0 + width] = np.kron(images[tile.sample.id], np.ones((zoom, zoom)))
    inches_per_px = 0.042
    fig = Figure(figsize=(canvas.shape[1] * inches_per_px, canvas.shape[0] * inches_per_px + (0.3 if title else 0)),
                 dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, canvas.shape[0] / (canvas.shape[0] + (0.3 / inches_per_px if title else 0))))
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=0, vmax=255, aspect="equal")
    ax.set_axis_off()
    for r, row in enumerate(rows):
        if row_labels:
            ax.text(1, r * cell_h + height / 2, row_labels[r], ha="left", va="center", fontsize=7)
        for c, tile in enumerate(row):
            x = label_w + c * cell_w + 3 + width / 2
            for i, (text, role) in enumerate(tile.lines):
                ax.text(x, r * cell_h + height + 3.5 + 5 * i, text, ha="center", va="top", fontsize=6.5, color=ROLE_COLORS[role])
    if title:
        fig.suptitle(title, y=0.995, va="top", fontsize=10, fontweight="bold")
    return to_png(fig)


def corruption_accuracy(names: Sequence[str], families: Sequence[str], accuracy: np.ndarray, clean: Sequence[float]) -> Png:
    """Accuracy per corruption family (rows, first on top) for every experiment side by side:
    accuracy (n_experiments, n_families), NaN where an experiment has no result; each
    experiment's clean accuracy as a dashed line in its colour."""
    n, k = len(names), len(families)
    accuracy = np.asarray(accuracy, dtype=float).reshape(n, k)
    # Each family's band grows with the experiments in it, up to an inch.
    fig = _figure((5.0, max(2.4, 1.3 + k * min(1.0, 0.14 + 0.12 * n))))
    ax = fig.add_subplot()
    colors = [TRAIN_COLOR] if n == 1 else matplotlib.colormaps["tab10"].colors
    height = 0.8 / n
    y = np.arange(k)
    for i, name in enumerate(names):
        color = colors[i % len(colors)]
        ax.barh(y + (i - (n - 1) / 2) * height, np.nan_to_num(accuracy[i]), height=height, color=color,
                label="mean over the severities" if n == 1 else name)
        ax.axvline(clean[i], color=color, linestyle="--", linewidth=1, label="clean" if n == 1 else None)
    ax.set_yticks(y, families)
    ax.set_ylim(k - 0.5, -0.5)
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(Percent())
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("accuracy, mean over the severities" + ("" if n == 1 else " (dashed: clean)"))
    ax.set_title("Accuracy under each corruption")
    fig.legend(loc="outside lower center", ncols=min(max(n, 2), 3))
    return to_png(fig)


def corruption_strip(images: np.ndarray, rows: Sequence[str], columns: Sequence[str]) -> Png:
    """Images uint8 (n_rows, n_columns, H, W) in a grid, each row labelled on its left and each
    column on top: a narrow, tall strip that a phone shows whole. Images smaller than 28 x 28
    are enlarged by a whole factor, as gallery_png does."""
    n_rows, n_cols, height, width = images.shape
    zoom = max(1, 28 // max(height, width))
    height, width = height * zoom, width * zoom
    # Laid out in units of a 28-pixel tile's pixels, a tile shown 56 screen pixels high.
    unit = max(height, width, 28) / 28
    label_w, head_h, gap = 52 * unit, 9 * unit, 3 * unit
    cell_w, cell_h = width + gap, height + gap
    canvas = np.full((round(head_h + n_rows * cell_h), round(label_w + n_cols * cell_w)), np.nan)
    for r in range(n_rows):
        for c in range(n_cols):
            y0, x0 = round(head_h + r * cell_h), round(label_w + c * cell_w)
            canvas[y0:y0 + height, x0:x0 + width] = np.kron(images[r, c], np.ones((zoom, zoom)))
    inches_per_unit = 56 / DPI / max(height, 28)
    fig = Figure(figsize=(canvas.shape[1] * inches_per_unit, canvas.shape[0] * inches_per_unit), dpi=DPI)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0, 0, 1, 1))
    cmap = matplotlib.colormaps["gray"].with_extremes(bad="white")
    ax.imshow(canvas, cmap=cmap, vmin=0, vmax=255, aspect="equal", interpolation="nearest")
    ax.set_axis_off()
    for c, label in enumerate(columns):
        ax.text(label_w + c * cell_w + width / 2, head_h - 2 * unit, label, ha="center", va="bottom", fontsize=7,
                color=ROLE_COLORS["meta"])
    for r, label in enumerate(rows):
        ax.text(label_w - 3 * unit, head_h + r * cell_h + height / 2, label, ha="right", va="center", fontsize=7,
                color=ROLE_COLORS["class"])
    return to_png(fig)
