"""The report's How it holds up section: built from robustness.json files beside synthetic
experiments, checked in report.html (parsed), report.md (as a viewer renders it), the figures
and, in headless Chromium, on a laptop and a phone screen."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import html5lib
import numpy as np
import pytest

from browser import Browser, chromium
from mnist_pipeline.errors import ChecksumError
from mnist_pipeline.evaluation.corruptions import FAMILIES, corrupt
from mnist_pipeline.evaluation.report import ROBUSTNESS, ROBUSTNESS_FIGURES, build_report, figure_files
from mnist_pipeline.evaluation.report import figures as fig
from mnist_pipeline.evaluation.robustness import FORMAT, FORMAT_VERSION
from mnist_pipeline.fileio import write_json
from test_report import (
    DEFAULTS,
    HOSTILE_CLASSES,
    HOSTILE_RUNS,
    PROVENANCE,
    leaderboard,
    make_experiments,
    md_table,
    rendered_markdown,
    text_of,
)

FAMILY_NAMES = ["gaussian_noise", "rotate", "stripe"]
# experiment -> (clean accuracy, accuracy per family at severities 1, 2, 3); each has another worst family.
RESULTS = {
    "base": (0.80, [[0.70, 0.60, 0.50], [0.40, 0.30, 0.20], [0.75, 0.70, 0.65]]),
    "strong": (0.95, [[0.90, 0.85, 0.80], [0.88, 0.80, 0.72], [0.30, 0.25, 0.20]]),
    "weak": (0.50, [[0.20, 0.15, 0.10], [0.45, 0.40, 0.35], [0.40, 0.35, 0.30]]),
}
EXPECTED_WORST = {"base": "rotate", "strong": "stripe", "weak": "gaussian_noise"}
SEED = 5


def robustness_result(clean: float, table, families=FAMILY_NAMES, seed=SEED, n_images=300, n_test=340) -> dict:
    """A robustness.json as mnist_pipeline.evaluation.robustness writes it, for the given accuracies."""
    table = np.asarray(table, dtype=float)
    by_family = dict(zip(families, table.mean(axis=1).tolist(), strict=True))
    mean = float(table.mean())
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION, "families": list(families), "severities": [1, 2, 3],
        "seed": seed, "n_images": n_images, "n_test": n_test, "clean_accuracy": clean,
        "accuracy": {f: row.tolist() for f, row in zip(families, table, strict=True)}, "family_accuracy": by_family,
        "mean_corruption_accuracy": mean, "relative_drop": (clean - mean) / clean,
        "worst_family": min(families, key=by_family.get),
    }


def write_results(directory: Path, results: dict) -> list[Path]:
    paths = []
    for name, (clean, table) in results.items():
        path = directory / name / "robustness.json"
        write_json(path, robustness_result(clean, table), seal=True)  # sealed, as the workflow writes it
        paths.append(path)
    return paths


def build(out: Path, experiments, images, robustness) -> dict:
    paths = {"html": out / "report.html", "md": out / "report.md", "figures": out / "figures"}
    build_report(dataset="tiny", experiments=experiments, defaults=DEFAULTS, test_images=images, provenance=PROVENANCE,
                 out_html=paths["html"], out_md=paths["md"], figures_dir=paths["figures"], robustness=robustness)
    return paths


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    experiments, images = make_experiments()
    out = tmp_path_factory.mktemp("robust-report")
    paths = build(out, experiments, images, write_results(out / "results", RESULTS))
    return {**paths, "experiments": experiments, "images": images,
            "html_text": paths["html"].read_text(encoding="utf-8"), "md_text": paths["md"].read_text(encoding="utf-8")}


def page(report):
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(report["html_text"])


def mean(name: str) -> float:
    return float(np.mean(RESULTS[name][1]))


def drop(name: str) -> float:
    return (RESULTS[name][0] - mean(name)) / RESULTS[name][0]


def worst_sentence(name: str) -> str:
    family = EXPECTED_WORST[name]
    values = RESULTS[name][1][FAMILY_NAMES.index(family)]
    return (f"{name} holds up worst against {family} ({FAMILIES[family].description}): "
            f"{100 * np.mean(values):.1f}% on average over severities 1–3, against {100 * RESULTS[name][0]:.1f}% "
            "on the same images clean.")


def test_the_leaderboard_has_the_mean_corruption_accuracy_column(report):
    rows = leaderboard(report["md_text"])
    assert [r[0] for r in rows] == ["strong", "base", "weak"]
    for row in rows:
        assert row[5] == f"{100 * mean(row[0]):.2f}% ({100 * drop(row[0]):.1f}% below clean)"
    assert rows[0][-1] == "hidden=[512, 256], learning_rate=0.01"  # the columns after it are where they were
    doc = page(report)
    board = doc.find(".//section[@id='leaderboard']")
    headings = [text_of(th) for th in board.find(".//table").iter("th")]
    assert headings[5] == "Mean corruption accuracy (drop from clean)"
    cells = [[text_of(td) for td in tr.findall("td")] for tr in board.find(".//tbody").findall("tr")]
    assert [c[5] for c in cells] == [f"{100 * mean(n):.2f}%{100 * drop(n):.1f}% below clean" for n in ("strong", "base", "weak")]
    assert "Mean corruption accuracy" in [text_of(dt) for dt in board.iter("dt")]  # the glossary explains it


def test_the_section_names_the_worst_family_of_each_experiment(report):
    section = page(report).find(".//section[@id='robustness']")
    assert text_of(section.find("h2")) == "How it holds up"
    assert [text_of(li) for li in section.find(".//ul").findall("li")] == [worst_sentence(n) for n in ("strong", "base", "weak")]
    note = text_of(section.find("p"))
    assert "3 corruption families" in note and "300 of the 340 test images, drawn with seed 5" in note
    md = report["md_text"]
    for name in RESULTS:
        assert f"- {worst_sentence(name)}" in md
    assert '<a href="#robustness">How it holds up</a>' in report["html_text"]


def test_the_section_tables_in_html_and_markdown(report):
    summary = [[n, f"{100 * RESULTS[n][0]:.2f}%", f"{100 * mean(n):.2f}%", f"{100 * drop(n):.1f}%", EXPECTED_WORST[n],
                f"{100 * np.mean(RESULTS[n][1][FAMILY_NAMES.index(EXPECTED_WORST[n])]):.2f}%"] for n in ("strong", "base", "weak")]
    per_family = [[f, FAMILIES[f].group, FAMILIES[f].description,
                   *(" / ".join(f"{100 * v:.1f}" for v in RESULTS[n][1][i]) for n in ("strong", "base", "weak"))]
                  for i, f in enumerate(FAMILY_NAMES)]
    md = report["md_text"]
    assert md_table(md, "## How it holds up") == summary
    assert md_table(md, "### Accuracy per corruption and severity") == per_family
    tables = page(report).find(".//section[@id='robustness']").findall(".//table")
    assert [[text_of(td) for td in tr.findall("td")] for tr in tables[0].find("tbody")] == summary
    assert [[text_of(td) for td in tr.findall("td")] for tr in tables[1].find("tbody")] == per_family
    assert [text_of(th) for th in tables[1].iter("th")][3:] == ["strong (1 / 2 / 3)", "base (1 / 2 / 3)", "weak (1 / 2 / 3)"]
    assert md.index("## Leaderboard") < md.index("## How it holds up") < md.index("## 1. strong")


def test_the_figures_are_written_listed_and_embedded(report):
    written = sorted(p.relative_to(report["figures"]).as_posix() for p in report["figures"].rglob("*.png"))
    assert written == sorted(figure_files(list(RESULTS), with_robustness=True))
    section = page(report).find(".//section[@id='robustness']")
    alts = {img.get("alt"): img.get("src") for img in section.iter("img")}
    assert set(alts) == {"Accuracy under each corruption", "What each corruption does"}
    for name, alt in zip(ROBUSTNESS_FIGURES, ("Accuracy under each corruption", "What each corruption does"), strict=True):
        data = (report["figures"] / ROBUSTNESS / f"{name}.png").read_bytes()
        assert alts[alt] == "data:image/png;base64," + base64.b64encode(data).decode()
        assert f"figures/{ROBUSTNESS}/{name}.png" in report["md_text"]


def test_the_figures_show_every_experiment_and_what_each_corruption_does(tmp_path, monkeypatch):
    drawn = {}
    monkeypatch.setattr(fig, "corruption_strip", lambda images, rows, columns: drawn.update(strip=(images, rows, columns)) or
                        fig.tile_png(images[0, 0]))
    monkeypatch.setattr(fig, "corruption_accuracy", lambda *args: drawn.update(bars=args) or fig.tile_png(np.zeros((2, 2), np.uint8)))
    experiments, images = make_experiments(n=80)
    build(tmp_path, experiments, images, write_results(tmp_path / "results", RESULTS))
    strip, rows, columns = drawn["strip"]
    assert rows == FAMILY_NAMES and columns == ["clean", "severity 1", "2", "3"]
    # Test image 0, clean and corrupted with the seed the scores used.
    expected = [[images[0], *(corrupt(images[:1], f, s, SEED)[0] for s in (1, 2, 3))] for f in FAMILY_NAMES]
    assert np.array_equal(strip, np.array(expected))
    names, families, accuracy, clean = drawn["bars"]
    assert names == ["strong", "base", "weak"] and families == FAMILY_NAMES
    assert np.allclose(accuracy, [np.mean(RESULTS[n][1], axis=1) for n in names])
    assert clean == [RESULTS[n][0] for n in names]


def test_without_results_there_is_no_section(tmp_path):
    experiments, images = make_experiments(n=80)
    for robustness in (None, []):
        paths = build(tmp_path / str(robustness), experiments, images, robustness)
        md, html = paths["md"].read_text(encoding="utf-8"), paths["html"].read_text(encoding="utf-8")
        assert "How it holds up" not in md and "How it holds up" not in html and 'id="robustness"' not in html
        assert "Mean corruption accuracy" not in md and "Mean corruption accuracy" not in html
        assert len(leaderboard(md)[0]) == 9
        assert not (paths["figures"] / ROBUSTNESS).exists()


def test_the_same_inputs_give_the_same_bytes(report, tmp_path):
    experiments, images = make_experiments()
    again = build(tmp_path, experiments, images, write_results(tmp_path / "results", RESULTS))
    assert again["html"].read_bytes() == report["html"].read_bytes()
    assert again["md"].read_bytes() == report["md"].read_bytes()
    for name in ROBUSTNESS_FIGURES:
        assert (again["figures"] / ROBUSTNESS / f"{name}.png").read_bytes() == \
            (report["figures"] / ROBUSTNESS / f"{name}.png").read_bytes()


def test_bad_robustness_inputs_are_refused(tmp_path):
    experiments, images = make_experiments(n=60)
    paths = write_results(tmp_path / "results", RESULTS)
    with pytest.raises(ValueError, match="2 files for 3 experiments"):
        build(tmp_path / "out", experiments, images, paths[:2])
    write_json(paths[1], {"format": "something else"}, seal=True)
    with pytest.raises(ValueError, match=f"{paths[1]}: not a robustness result"):
        build(tmp_path / "out", experiments, images, paths)
    paths[1].write_text(json.dumps(robustness_result(*RESULTS["strong"])))  # not the bytes sealed
    with pytest.raises(ChecksumError, match=f"{paths[1]}: corrupted"):
        build(tmp_path / "out", experiments, images, paths)


def test_names_in_the_section_render_as_text(tmp_path):
    experiments, images = make_experiments(n=80, runs=HOSTILE_RUNS, classes=HOSTILE_CLASSES)
    results = dict(zip(HOSTILE_RUNS, list(RESULTS.values())[:2], strict=True))
    paths = build(tmp_path, experiments, images, write_results(tmp_path / "results", {f"r{i}": v for i, v in enumerate(results.values())}))
    md = paths["md"].read_text(encoding="utf-8")
    doc = rendered_markdown(md)
    assert {e.tag for e in doc.iter()} <= {"html", "head", "body", "h1", "h2", "h3", "p", "ul", "li", "strong", "em",
                                          "code", "pre", "table", "thead", "tbody", "tr", "th", "td", "img", "hr"}
    assert sorted(row[0] for row in md_table(md, "## How it holds up")) == sorted(HOSTILE_RUNS)
    html = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(paths["html"].read_text(encoding="utf-8"))
    assert not html.findall(".//script") and not html.findall(".//img[@src='x']")
    section = html.find(".//section[@id='robustness']")
    assert sorted(text_of(li).split(" holds up worst")[0] for li in section.find(".//ul").findall("li")) == sorted(HOSTILE_RUNS)


BROKEN_IMAGES = "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).length"
OVERFLOW = "document.documentElement.scrollWidth - window.innerWidth"


@pytest.mark.parametrize("screen", [{"width": 1366, "height": 900}, {"width": 390, "height": 844, "mobile": True, "scale": 3.0}],
                         ids=["laptop", "phone"])
def test_the_section_renders_in_a_browser(report, screen, tmp_path):
    browser = Browser(chromium(), tmp_path / "profile")
    try:
        browser.open(Path(report["html"]).as_uri(), **screen)
        assert browser.errors() == []
        assert browser.evaluate(BROKEN_IMAGES) == 0
        assert browser.evaluate(OVERFLOW) <= 0, "the page is wider than the screen"
        # The section's figures fit the screen's width, and the example strip is shown whole.
        widths = browser.evaluate("Array.from(document.querySelectorAll('#robustness figure img'))"
                                  ".map(i => [i.getBoundingClientRect().width, i.naturalWidth])")
        assert len(widths) == 2 and all(0 < shown <= screen["width"] for shown, _ in widths)
    finally:
        browser.close()
