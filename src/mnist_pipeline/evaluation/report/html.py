"""report.html: one self-contained page, images embedded, no script, no network."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping, Sequence
from html import escape
from typing import Any

import mnist_pipeline
from mnist_pipeline.evaluation.report import comparison, words
from mnist_pipeline.evaluation.report import formatting as fmt
from mnist_pipeline.evaluation.report import history as h
from mnist_pipeline.evaluation.report import robustness as rob
from mnist_pipeline.evaluation.report.captions import FIGURE_TEXT, GALLERY_TEXT
from mnist_pipeline.evaluation.report.figures import Png
from mnist_pipeline.evaluation.report.gallery import Gallery, GalleryTile, Line, mistakes_gallery, pairs_gallery
from mnist_pipeline.evaluation.report.layout import COMPARISON, PANEL_FIGURES, ROBUSTNESS, ROBUSTNESS_FIGURES, Figures
from mnist_pipeline.evaluation.report.style import CSS
from mnist_pipeline.evaluation.report.view import ExperimentView, ReportView, SeedGroup


class Raw(str):
    """Text that is already HTML and must not be escaped again."""


def _img(png: Png, alt: str, cls: str | None = None) -> str:
    data = base64.b64encode(png.data).decode("ascii")
    cls_attr = f' class="{cls}"' if cls else ""
    return f'<img{cls_attr} src="data:image/png;base64,{data}" width="{png.width}" height="{png.height}" alt="{escape(alt)}">'


def _figure(png: Png, name: str) -> str:
    alt, caption = FIGURE_TEXT[name]
    return f"<figure>{_img(png, alt)}<figcaption>{escape(caption)}</figcaption></figure>"


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], *, text_cols: Sequence[int] = (0,),
           row_classes: Sequence[str] | None = None, cell_classes: Mapping[tuple[int, int], str] | None = None) -> str:
    """A table in a horizontally scrolling box, so that wide tables never widen a phone's page."""
    head = "".join(f'<th scope="col"{" class=text" if i in text_cols else ""}>{escape(c)}</th>' for i, c in enumerate(columns))
    body = []
    for r, row in enumerate(rows):
        cells = []
        for i, value in enumerate(row):
            classes = []
            if i in text_cols:
                classes.append("text")
            if cell_classes and (r, i) in cell_classes:
                classes.append(cell_classes[(r, i)])
            attr = f' class="{" ".join(classes)}"' if classes else ""
            cells.append(f"<td{attr}>{value if isinstance(value, Raw) else escape(value)}</td>")
        row_attr = f' class="{row_classes[r]}"' if row_classes and row_classes[r] else ""
        body.append(f"<tr{row_attr}>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table></div>'


def _anchor(name: str) -> str:
    return f"exp-{name}"


def _leaderboard(view: ReportView, figures: Figures) -> str:
    rows, row_classes, cell_classes = [], [], {}
    columns = words.leaderboard_columns(view)
    robust = view.robustness is not None
    for r, exp in enumerate(view.experiments):
        row = words.leaderboard_row(exp, robust)
        row[0] = Raw(_exp_link(exp.name))
        if robust:
            mean, drop = rob.leaderboard_cell(exp)
            row[words.ROBUSTNESS_COLUMN] = Raw(escape(mean) + (f"<br><small>{escape(drop)}</small>" if drop else ""))
        # The intervals go on a second, smaller line so the table fits a laptop screen unscrolled.
        m = exp.metrics
        accuracy, interval = fmt.pct(m.get("test_accuracy")), fmt.ci_pct(m.get("test_accuracy_ci95"))
        row[1] = Raw(f"{escape(accuracy)}<br><small>{escape(interval)}</small>")
        if exp.vs_best is not None:
            diff, lo, hi = exp.vs_best
            row[2] = Raw(f"{fmt.points(diff)}<br><small>[{fmt.points(lo)}, {fmt.points(hi)}]</small>")
        rows.append(row)
        row_classes.append("best" if exp.rank == 1 else "")
        if comparison.within_noise(exp):
            cell_classes[(r, words.VS_BEST_COLUMN)] = "tie"
        cell_classes[(r, len(row) - 1)] = "wrap"
    parts = [
        '<section id="leaderboard"><h2>Leaderboard</h2>',
        _table(columns, rows, text_cols=(0, len(columns) - 1), row_classes=row_classes, cell_classes=cell_classes),
        f'<p class="note">{escape(words.LEADERBOARD_NOTE)}</p>',
        _seed_table(view.seed_groups) if view.seed_groups else "",
        "<details><summary>How to read these numbers</summary><dl class=\"facts\">",
        "".join(f"<dt>{escape(term)}</dt><dd>{escape(meaning)}</dd>"
                for term, meaning in (*words.GLOSSARY, *(rob.GLOSSARY if robust else ()))),
        "</dl></details>",
    ]
    if COMPARISON in figures:
        parts.append('<div class="panels">')
        parts.extend(_figure(png, name) for name, png in figures[COMPARISON].items())
        parts.append("</div>")
    parts.append("</section>")
    return "".join(parts)


def _exp_link(name: str) -> str:
    return f'<a href="#{escape(_anchor(name))}">{escape(name)}</a>'


def _seed_table(groups: Sequence[SeedGroup]) -> str:
    rows, cell_classes = [], {}
    members = words.SEED_MEMBERS_COLUMN
    for r, group in enumerate(groups):
        row = words.seed_group_row(group)
        row[members] = Raw('<ul class="members">' + "".join(f"<li>{_exp_link(n)}</li>" for n in group.members) + "</ul>")
        rows.append(row)
        cell_classes.update({(r, 0): "wrap", (r, members): "wrap"})
    return "".join([
        f'<h3 id="seeds">{escape(words.SEED_TITLE)}</h3>',
        _table(words.SEED_COLUMNS, rows, text_cols=(0, 2, members), cell_classes=cell_classes),
        f'<p class="note">{escape(words.seed_note(groups))}</p>',
    ])


def _lines(lines: Sequence[Line], styles: Mapping[str, str], sep: str) -> str:
    """A gallery's lines of text, each marked up as its role asks (`styles`: role -> a tag's format)."""
    return sep.join(styles.get(role, "{}").format(escape(text)) for text, role in lines)


_TILE_STYLES = {"predicted": '<span class="pred">{}</span>', "meta": '<span class="meta">{}</span>'}
_LABEL_STYLES = {"class": "<b>{}</b>"}


def _gallery(gallery: Gallery, tiles: Mapping[int, Png]) -> str:
    """Labelled rows each under its label; unlabelled rows as one list, which the page reflows
    to its width (the PNG's rows are for its fixed width)."""
    def listing(row: Sequence[GalleryTile]) -> str:
        items = "".join(f"<li>{_img(tiles[tile.sample.id], tile.alt)}{_lines(tile.lines, _TILE_STYLES, '<br>')}</li>"
                        for tile in row)
        return f'<ol class="gallery">{items}</ol>'

    if not any(row.label for row in gallery.rows):
        return listing(gallery.tiles)
    return "".join(f'<div class="pair"><p>{_lines(row.label, _LABEL_STYLES, " ")}</p>{listing(row.tiles)}</div>'
                   for row in gallery.rows)


def _heading(name: str) -> str:
    title, note = GALLERY_TEXT[name]
    return f'<h3>{escape(title)}</h3><p class="note">{escape(note)}</p>'


def _settings_line(exp: ExperimentView) -> str:
    text = f"Differs from the defaults: <code>{escape(words.differs_text(exp))}</code>." if exp.differs else "Default settings."
    if exp.rank > 1:
        text += f" Versus the best: {escape(words.vs_best(exp))} percentage points (paired 95% interval)."
    return text


def _experiment(exp: ExperimentView, view: ReportView, figures: Figures, tiles: Mapping[int, Png]) -> str:
    classes = view.classes
    own = figures[exp.name]
    stats = "".join(f"<div><dt>{escape(k)}</dt><dd>{escape(v)}</dd></div>" for k, v in words.key_numbers(exp))
    parts = [
        f'<section id="{escape(_anchor(exp.name))}" class="experiment">',
        f'<h2><span class="rank">#{exp.rank}</span>{escape(exp.name)}</h2>',
        f"<p>{_settings_line(exp)}</p>",
        f'<dl class="stats">{stats}</dl>',
        '<div class="panels">',
        "".join(_figure(own[name], name) for name in PANEL_FIGURES),
        "</div>",
        _heading("mistakes"),
        _gallery(mistakes_gallery(exp, classes), tiles) if exp.mistakes else "<p>No mistakes on the test set.</p>",
    ]
    if exp.pairs:
        parts += [_heading("confused_pairs"), _gallery(pairs_gallery(exp, classes), tiles)]
    parts.append("<details><summary>Scores per class</summary>")
    parts.append(_table(words.PER_CLASS_COLUMNS, words.per_class_rows(exp, classes)))
    parts.append("</details><details><summary>All training settings</summary>")
    settings = [(k, fmt.value_text(v)) for k, v in sorted(exp.settings.items())]
    parts.append(_table(("Setting", "Value"), settings, text_cols=(0, 1)))
    parts.append("</details></section>")
    return "".join(parts)


def _robustness(view: ReportView, figures: Figures) -> str:
    section = view.robustness
    summary = []
    for row, exp in zip(rob.summary_rows(section), section.experiments, strict=True):
        row[0] = Raw(_exp_link(exp.name))
        summary.append(row)
    family_rows = rob.family_rows(section)
    return "".join([
        f'<section id="{rob.ANCHOR}"><h2>{escape(rob.TITLE)}</h2><p class="note">{escape(rob.note(section))}</p>',
        '<ul class="worst">', "".join(f"<li>{escape(rob.worst_sentence(exp))}</li>" for exp in section.experiments), "</ul>",
        _table(rob.SUMMARY_COLUMNS, summary, text_cols=(0, 4)),
        '<div class="panels">', "".join(_figure(figures[ROBUSTNESS][name], name) for name in ROBUSTNESS_FIGURES), "</div>",
        f"<h3>{escape(rob.FAMILY_TITLE)}</h3><p class=\"note\">{escape(rob.FAMILY_NOTE)}</p>",
        _table(rob.family_columns(section), family_rows, text_cols=(0, 1, 2),
               cell_classes={(r, 2): "wrap" for r in range(len(family_rows))}),
        "</section>",
    ])


def _history(view: ReportView, figures: Figures) -> str:
    parts = [f'<section id="history"><h2>{escape(h.TITLE)}</h2><p class="note">{escape(h.NOTE)}</p>']
    for history in view.histories:
        rows = [h.history_row(run) for run in history.runs]
        parts += [
            f"<h3>{_exp_link(history.name)}</h3><p>{escape(h.current_line(history))}</p>",
            _table(h.COLUMNS, rows, text_cols=(0, 1, h.DIFFERS_COLUMN),
                   cell_classes={(r, h.DIFFERS_COLUMN): "wrap" for r in range(len(rows))}),
            _figure(figures[history.name]["history"], "history"),
        ]
    parts.append("</section>")
    return "".join(parts)


def _facts(items: Iterable[tuple[str, str]]) -> str:
    return '<dl class="facts">' + "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in items) + "</dl>"


def _provenance(prov: Mapping[str, Any]) -> str:
    parts = ['<section id="provenance"><h2>Provenance</h2>', _facts(words.provenance_facts(prov))]
    columns, rows = words.file_rows(prov.get("files") or {})
    if rows:
        parts.append("<h3>Data files</h3>")
        hash_cols = {(r, i) for r in range(len(rows)) for i, c in enumerate(columns) if "sha" in c.lower() or "md5" in c.lower()}
        parts.append(_table(columns, rows, text_cols=tuple(range(len(columns))), cell_classes={rc: "hash" for rc in hash_cols}))
    parts.append("<h3>Software</h3>")
    parts.append(_table(("Package", "Version"), sorted((prov.get("packages") or {}).items()), text_cols=(0, 1)))
    parts.append("<h3>Machine</h3>")
    parts.append(_facts(words.machine_facts(prov.get("machine") or {})))
    parts.append("<h3>Configuration</h3>")
    parts.append(f"<pre>{escape(json.dumps(prov.get('config') or {}, indent=2, sort_keys=True))}</pre>")
    parts.append("</section>")
    return "".join(parts)


def render_html(view: ReportView, figures: Figures, tiles: Mapping[int, Png]) -> str:
    """The whole page. `figures`: group (experiment name or COMPARISON) -> figure name -> PNG;
    `tiles`: test image id -> its PNG, for the galleries."""
    nav = " ".join(_exp_link(e.name) for e in view.experiments)
    if view.robustness is not None:
        nav = f'<a href="#{rob.ANCHOR}">{escape(rob.TITLE)}</a> {nav}'
    if view.histories:
        nav += f' <a href="#history">{escape(h.TITLE)}</a>'
    if view.seed_groups:
        nav = f'<a href="#seeds">{escape(words.SEED_TITLE)}</a> {nav}'
    title = f"Classifier report: {view.dataset}"
    return "".join([
        "<!DOCTYPE html>\n",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{escape(title)}</title>",
        # An empty icon stops the browser asking the file system for /favicon.ico.
        '<link rel="icon" href="data:,">',
        f"<style>{CSS}</style></head><body>",
        f"<header><h1>{escape(title)}</h1><p class=\"lede\">{escape(words.headline(view))}</p>",
        f'<nav><a href="#leaderboard">Leaderboard</a> {nav} <a href="#provenance">Provenance</a></nav></header>',
        "<main>",
        _leaderboard(view, figures),
        _robustness(view, figures) if view.robustness is not None else "",
        "".join(_experiment(e, view, figures, tiles) for e in view.experiments),
        _history(view, figures) if view.histories else "",
        _provenance(view.provenance),
        "</main>",
        f"<footer>Written by mnist-pipeline {escape(mnist_pipeline.__version__)} from the run's own outputs: "
        "the same outputs give the same file.</footer>",
        "</body></html>\n",
    ])
