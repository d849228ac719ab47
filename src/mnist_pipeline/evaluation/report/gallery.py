"""The report's two galleries of test images, composed once: which images, in which rows, and
what is written under each. figures.gallery_png paints a gallery as the PNG that report.md links;
html.py lays the same gallery out as tiles that reflow on a phone.

Each line of text has a role, which the painters turn into a colour or a style:
    "class"      a class name (the true class under a tile; both classes of a row's label)
    "predicted"  what the model said instead
    "meta"       the probability it gave, the image id, a share
    "plain"      words between the names
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from mnist_pipeline.evaluation.report.formatting import pct
from mnist_pipeline.evaluation.report.view import ExperimentView, Sample

MISTAKE_COLUMNS = 6  # tiles per row of the mistakes gallery

Line = tuple[str, str]  # (text, role)


@dataclass(frozen=True)
class GalleryTile:
    sample: Sample
    lines: tuple[Line, ...]
    true: str  # the class names, for the alt text (the lines may leave them out)
    predicted: str

    @property
    def alt(self) -> str:
        """What the image shows, for a reader who cannot see it."""
        return f"test image {self.sample.id}: {self.true}, predicted {self.predicted}"


@dataclass(frozen=True)
class GalleryRow:
    tiles: tuple[GalleryTile, ...]
    label: tuple[Line, ...] = ()  # what the row shows, for a gallery of labelled rows


@dataclass(frozen=True)
class Gallery:
    title: str  # above the PNG
    rows: tuple[GalleryRow, ...]

    @property
    def tiles(self) -> list[GalleryTile]:
        return [tile for row in self.rows for tile in row.tiles]


def _tile(sample: Sample, classes: Sequence[str], *, with_classes: bool) -> GalleryTile:
    true, predicted = classes[sample.label], classes[sample.predicted]
    named = ((true, "class"), (f"→ {predicted}", "predicted")) if with_classes else ()
    return GalleryTile(sample, (*named, (f"{pct(sample.probability, 1)} · #{sample.id}", "meta")), true, predicted)


def mistakes_gallery(exp: ExperimentView, classes: Sequence[str]) -> Gallery:
    """The wrong predictions the model was surest of, MISTAKE_COLUMNS to a row."""
    tiles = [_tile(sample, classes, with_classes=True) for sample in exp.mistakes]
    rows = tuple(GalleryRow(tuple(tiles[i:i + MISTAKE_COLUMNS])) for i in range(0, len(tiles), MISTAKE_COLUMNS))
    return Gallery(f"{exp.name}: most confident mistakes", rows)


def pairs_gallery(exp: ExperimentView, classes: Sequence[str]) -> Gallery:
    """A row per most confused (true, predicted) pair, labelled with the pair, of its surest examples."""
    rows = []
    for pair in exp.pairs:
        true, predicted = classes[pair.true], classes[pair.predicted]
        label = ((true, "class"), ("taken for", "plain"), (f"{predicted}:", "class"), (f"{pair.count:,} times", "plain"),
                 (f"({pct(pair.share, 1)} of {true})", "meta"))
        rows.append(GalleryRow(tuple(_tile(sample, classes, with_classes=False) for sample in pair.examples), label))
    return Gallery(f"{exp.name}: most confused pairs", tuple(rows))
