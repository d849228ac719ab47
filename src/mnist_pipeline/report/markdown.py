"""report.md: the same report as Markdown, linking the PNGs written beside it."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from mnist_pipeline.report import history as h
from mnist_pipeline.report import summary as s
from mnist_pipeline.report.layout import COMPARISON, COMPARISON_FIGURES, FIGURE_TEXT, PANEL_FIGURES

# (group, figure name) -> the PNG's path relative to report.md
LinkFn = Callable[[str, str], str]


def _cell(text: str) -> str:
    # A pipe would end the cell; a newline would end the row.
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], text_cols: Sequence[int] = (0,)) -> list[str]:
    align = ["---" if i in text_cols else "---:" for i in range(len(columns))]
    lines = ["| " + " | ".join(_cell(c) for c in columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _image(link: LinkFn, group: str, name: str) -> list[str]:
    alt, caption = FIGURE_TEXT[name]
    return [f"![{alt}]({link(group, name)})", "", f"*{caption}*", ""]


def _experiment(exp: s.ExperimentView, view: s.ReportView, link: LinkFn) -> list[str]:
    classes = view.classes
    lines = [f"## {exp.rank}. {exp.name}", ""]
    lines.append(f"Differs from the defaults: `{s.differs_text(exp)}`." if exp.differs else "Default settings.")
    if exp.rank > 1:
        lines[-1] += f" Versus the best: {s.vs_best(exp)} percentage points (paired 95% interval)."
    lines += [""] + [f"- **{k}**: {v}" for k, v in s.key_numbers(exp)] + [""]
    for name in PANEL_FIGURES:
        lines += _image(link, exp.name, name)
    lines += ["### Most confident mistakes", ""]
    lines += _image(link, exp.name, "mistakes") if exp.mistakes else ["No mistakes on the test set.", ""]
    if exp.pairs:
        lines += ["### Most confused class pairs", ""]
        lines += [
            f"- {classes[p.true]} taken for {classes[p.predicted]}: {p.count:,} times ({s.pct(p.share, 1)} of {classes[p.true]})"
            for p in exp.pairs
        ]
        lines += [""] + _image(link, exp.name, "confused_pairs")
    lines += ["### Scores per class", ""] + _table(s.PER_CLASS_COLUMNS, s.per_class_rows(exp, classes))
    return lines


def _history(view: s.ReportView, link: LinkFn) -> list[str]:
    lines = [f"## {h.TITLE}", "", h.NOTE, ""]
    for history in view.histories:
        lines += [f"### {history.name}", "", h.current_line(history), ""]
        lines += _table(h.COLUMNS, [h.history_row(run) for run in history.runs], text_cols=(0, 1, h.DIFFERS_COLUMN))
        lines += _image(link, history.name, "history")
    return lines


def _provenance(prov: Mapping[str, Any]) -> list[str]:
    lines = ["## Provenance", ""] + [f"- **{k}**: {v}" for k, v in s.provenance_facts(prov)] + [""]
    columns, rows = s.file_rows(prov.get("files") or {})
    if rows:
        lines += ["### Data files", ""] + _table(columns, rows, text_cols=range(len(columns)))
    lines += ["### Software", ""] + _table(("Package", "Version"), sorted((prov.get("packages") or {}).items()), (0, 1))
    lines += ["### Machine", ""] + [f"- **{k}**: {v}" for k, v in s.machine_facts(prov.get("machine") or {})] + [""]
    lines += ["### Configuration", "", "```json", json.dumps(prov.get("config") or {}, indent=2, sort_keys=True), "```", ""]
    return lines


def render_markdown(view: s.ReportView, link: LinkFn) -> str:
    """The whole Markdown report; `link` gives each figure's path relative to the file."""
    lines = [f"# Classifier report: {view.dataset}", "", s.headline(view), "", "## Leaderboard", ""]
    lines += _table(s.LEADERBOARD_COLUMNS, [s.leaderboard_row(e) for e in view.experiments],
                    text_cols=(0, len(s.LEADERBOARD_COLUMNS) - 1))
    lines += [s.LEADERBOARD_NOTE, ""]
    if view.seed_groups:
        lines += [f"### {s.SEED_TITLE}", ""]
        lines += _table(s.SEED_COLUMNS, [s.seed_group_row(g) for g in view.seed_groups],
                        text_cols=(0, 2, s.SEED_MEMBERS_COLUMN))
        lines += [s.seed_note(view.seed_groups), ""]
    if len(view.experiments) > 1:
        for name in COMPARISON_FIGURES:
            lines += _image(link, COMPARISON, name)
    for exp in view.experiments:
        lines += _experiment(exp, view, link)
    if view.histories:
        lines += _history(view, link)
    lines += _provenance(view.provenance)
    return "\n".join(lines).rstrip("\n") + "\n"
