"""report.md: the same report as Markdown, linking the PNGs written beside it.

Every name it quotes (experiments, classes, paths, hosts) goes through `_text`, so that it
renders as the text it is: a class named `<img src=x>` or `[x](javascript:...)` must not
become markup in a viewer that renders the file.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import quote

from mnist_pipeline.evaluation.report import history as h
from mnist_pipeline.evaluation.report import robustness as rob
from mnist_pipeline.evaluation.report import words
from mnist_pipeline.evaluation.report.captions import FIGURE_TEXT
from mnist_pipeline.evaluation.report.gallery import pairs_gallery
from mnist_pipeline.evaluation.report.layout import COMPARISON, COMPARISON_FIGURES, PANEL_FIGURES, ROBUSTNESS, ROBUSTNESS_FIGURES
from mnist_pipeline.evaluation.report.view import ExperimentView, ReportView

# (group, figure name) -> the PNG's path relative to report.md
LinkFn = Callable[[str, str], str]


# Characters that start Markdown syntax anywhere in a line; a backslash makes each literal.
# (A pipe would end a table cell even inside code.)
_SYNTAX = re.compile(r"[\\`*\[\]|~]")
# An underscore between two letters or digits never delimits emphasis (CommonMark), so the
# experiment names `sweep` writes stay readable; any other underscore is escaped.
_LONE_UNDERSCORE = re.compile(r"(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")
_ENTITIES = {"&": "&amp;", "<": "&lt;", ">": "&gt;"}


def _text(text: str) -> str:
    """`text` as Markdown that renders as exactly that text, on one line: no HTML, links or emphasis."""
    text = _SYNTAX.sub(lambda m: "\\" + m.group(), text)
    text = _LONE_UNDERSCORE.sub(r"\\_", text)
    text = re.sub(r"[&<>]", lambda m: _ENTITIES[m.group()], text)
    return re.sub(r"\s*\n\s*", " ", text)


def _fence(text: str, least: int) -> str:
    """Backticks that open and close code around `text`: more than any run of them inside it."""
    return "`" * max(least, 1 + max((len(run) for run in re.findall(r"`+", text)), default=0))


def _code(text: str) -> str:
    """`text` as an inline code span, which Markdown shows literally."""
    fence, pad = _fence(text, 1), " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text.replace(chr(10), ' ')}{pad}{fence}"


def _fenced(text: str, info: str) -> list[str]:
    """A fenced code block of `text`."""
    fence = _fence(text, 3)
    return [fence + info, text, fence]


def _table(columns: Sequence[str], rows: Iterable[Sequence[str]], text_cols: Sequence[int] = (0,)) -> list[str]:
    align = ["---" if i in text_cols else "---:" for i in range(len(columns))]
    lines = ["| " + " | ".join(_text(c) for c in columns) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(_text(v) for v in row) + " |" for row in rows]
    return lines + [""]


def _image(link: LinkFn, group: str, name: str) -> list[str]:
    alt, caption = FIGURE_TEXT[name]
    # Percent-encoded: a name with a space or a parenthesis would otherwise end the link.
    return [f"![{_text(alt)}]({quote(link(group, name))})", "", f"*{_text(caption)}*", ""]


def _experiment(exp: ExperimentView, view: ReportView, link: LinkFn) -> list[str]:
    classes = view.classes
    lines = [f"## {exp.rank}. {_text(exp.name)}", ""]
    lines.append(f"Differs from the defaults: {_code(words.differs_text(exp))}." if exp.differs else "Default settings.")
    if exp.rank > 1:
        lines[-1] += f" Versus the best: {words.vs_best(exp)} percentage points (paired 95% interval)."
    lines += [""] + _facts(words.key_numbers(exp)) + [""]
    for name in PANEL_FIGURES:
        lines += _image(link, exp.name, name)
    lines += ["### Most confident mistakes", ""]
    lines += _image(link, exp.name, "mistakes") if exp.mistakes else ["No mistakes on the test set.", ""]
    if exp.pairs:
        lines += ["### Most confused class pairs", ""]
        lines += [_text("- " + " ".join(text for text, _ in row.label)) for row in pairs_gallery(exp, classes).rows]
        lines += [""] + _image(link, exp.name, "confused_pairs")
    lines += ["### Scores per class", ""] + _table(words.PER_CLASS_COLUMNS, words.per_class_rows(exp, classes))
    return lines


def _facts(items: Iterable[tuple[str, str]]) -> list[str]:
    return [f"- **{_text(k)}**: {_text(v)}" for k, v in items]
def _robustness(view: ReportView, link: LinkFn) -> list[str]:
    section = view.robustness
    lines = [f"## {_text(rob.TITLE)}", "", _text(rob.note(section)), ""]
    lines += [_text("- " + rob.worst_sentence(exp)) for exp in section.experiments] + [""]
    lines += _table(rob.SUMMARY_COLUMNS, rob.summary_rows(section), text_cols=(0, 4))
    for name in ROBUSTNESS_FIGURES:
        lines += _image(link, ROBUSTNESS, name)
    lines += [f"### {_text(rob.FAMILY_TITLE)}", "", _text(rob.FAMILY_NOTE), ""]
    lines += _table(rob.family_columns(section), rob.family_rows(section), text_cols=(0, 1, 2))
    return lines


def _history(view: ReportView, link: LinkFn) -> list[str]:
    lines = [f"## {_text(h.TITLE)}", "", _text(h.NOTE), ""]
    for history in view.histories:
        lines += [f"### {_text(history.name)}", "", _text(h.current_line(history)), ""]
        lines += _table(h.COLUMNS, [h.history_row(run) for run in history.runs], text_cols=(0, 1, h.DIFFERS_COLUMN))
        lines += _image(link, history.name, "history")
    return lines


def _provenance(prov: Mapping[str, Any]) -> list[str]:
    lines = ["## Provenance", ""] + _facts(words.provenance_facts(prov)) + [""]
    columns, rows = words.file_rows(prov.get("files") or {})
    if rows:
        lines += ["### Data files", ""] + _table(columns, rows, text_cols=range(len(columns)))
    lines += ["### Software", ""] + _table(("Package", "Version"), sorted((prov.get("packages") or {}).items()), (0, 1))
    lines += ["### Machine", ""] + _facts(words.machine_facts(prov.get("machine") or {})) + [""]
    lines += ["### Configuration", "", *_fenced(json.dumps(prov.get("config") or {}, indent=2, sort_keys=True), "json"), ""]
    return lines


def render_markdown(view: ReportView, link: LinkFn) -> str:
    """The whole Markdown report; `link` gives each figure's path relative to the file."""
    lines = [f"# Classifier report: {_text(view.dataset)}", "", _text(words.headline(view)), "", "## Leaderboard", ""]
    columns = words.leaderboard_columns(view)
    lines += _table(columns, [words.leaderboard_row(e, view.robustness is not None) for e in view.experiments],
                    text_cols=(0, len(columns) - 1))
    lines += [_text(words.LEADERBOARD_NOTE), ""]
    if view.seed_groups:
        lines += [f"### {words.SEED_TITLE}", ""]
        lines += _table(words.SEED_COLUMNS, [words.seed_group_row(g) for g in view.seed_groups],
                        text_cols=(0, 2, words.SEED_MEMBERS_COLUMN))
        lines += [_text(words.seed_note(view.seed_groups)), ""]
    if len(view.experiments) > 1:
        for name in COMPARISON_FIGURES:
            lines += _image(link, COMPARISON, name)
    if view.robustness is not None:
        lines += _robustness(view, link)
    for exp in view.experiments:
        lines += _experiment(exp, view, link)
    if view.histories:
        lines += _history(view, link)
    lines += _provenance(view.provenance)
    return "\n".join(lines).rstrip("\n") + "\n"
