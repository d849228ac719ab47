"""build_report on small synthetic experiments: content, validity, determinism, captions."""

import base64
import io
import json
import re
import shutil
from dataclasses import astuple
from pathlib import Path

import html5lib
import matplotlib
import numpy as np
import pytest
from markdown_it import MarkdownIt
from PIL import Image

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.evaluation.metrics import predictions_table, score_predictions
from mnist_pipeline.evaluation.report import (
    COMPARISON,
    COMPARISON_FIGURES,
    EXPERIMENT_FIGURES,
    ROBUSTNESS,
    ROBUSTNESS_FIGURES,
    build_report,
    collect_provenance,
    figure_files,
)
from mnist_pipeline.evaluation.report.captions import FIGURE_TEXT, figures_rst
from mnist_pipeline.evaluation.report.content import build_view
from mnist_pipeline.evaluation.report.figures import Png, gallery_png, styled
from mnist_pipeline.evaluation.report.gallery import mistakes_gallery, pairs_gallery
from mnist_pipeline.evaluation.report.html import render_html
from mnist_pipeline.evaluation.report.markdown import render_markdown
from mnist_pipeline.evaluation.report.view import Spread
from mnist_pipeline.evaluation.report.words import seed_group_row, seed_note

REPO = Path(__file__).resolve().parents[1]
CAPTIONS = REPO / "workflow" / "report"
# Names with characters that HTML and Markdown tables must escape.
CLASSES = ["zero", "T-shirt/top", "a|b <c> & d", "three", "four", "five", "six", "seven", "eight", "nine"]
DEFAULTS = {"hidden": [256, 128], "epochs": 4, "optimizer": "adam", "learning_rate": 0.001, "seed": 0}
# name -> (overrides of DEFAULTS, how strongly the logits favour the true class)
RUNS = {"base": ({}, 2.0), "strong": ({"hidden": [512, 256], "learning_rate": 0.01}, 3.5),
        "weak": ({"optimizer": "sgd", "epochs": 6}, 0.8)}


def make_experiments(n=300, runs=RUNS, seed=0, classes=CLASSES):
    """(experiments, test_images) shaped like the workflow's report inputs, metrics as JSON reads back."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n + 40, 28, 28)).astype(np.uint8)
    y = rng.integers(0, 10, n)
    ids = rng.permutation(n + 40)[:n]  # ids index the images, in no particular order
    experiments = []
    for i, (name, (overrides, strength)) in enumerate(runs.items()):
        logits = rng.normal(size=(n, 10)) + strength * np.eye(10)[y]
        proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        settings = {**DEFAULTS, **overrides}
        epochs = settings["epochs"]
        history = [{"epoch": e, "train_loss": 2.0 / e, "val_loss": 2.1 / e + 0.01 * e, "train_accuracy": 0.5 + 0.05 * e,
                    "val_accuracy": 0.45 + 0.05 * e, "learning_rate": settings["learning_rate"], "seconds": 1.5}
                   for e in range(1, epochs + 1)]
        metrics = score_predictions(y, proba.astype(np.float32), classes=classes)
        metrics.update(val_accuracy=history[-1]["val_accuracy"], epochs_run=epochs, train_seconds=1.5 * epochs,
                       n_parameters=1000 * (i + 1))
        table = predictions_table(ids, y, proba)
        if i == 1:  # the other accepted form, rows shuffled: the report must align by id
            order = rng.permutation(n)
            table = {c: table[c].to_numpy()[order] for c in table.column_names}
        experiments.append({"name": name, "metrics": json.loads(json.dumps(metrics, sort_keys=True)),
                            "history": history, "settings": settings, "predictions": table})
    return experiments, images


PROVENANCE = {
    "dataset": "tiny", "source": "/data/tiny", "date": "2025-03-04T05:06:07Z",
    "files": {"t10k-images-idx3-ubyte": {"file": "t10k-images-idx3-ubyte.gz", "bytes": 1648877,
                                         "content_sha256": "ab" * 32, "verified_by": "content_sha256"}},
    "code": {"package_version": "0.1.0", "git_commit": "c0ffee", "git_dirty": False},
    "config": {"dataset": "tiny", "train": DEFAULTS}, "packages": {"numpy": "2.0"}, "machine": {"cpu_count": 2},
}


def build(out: Path, experiments, images, provenance=PROVENANCE) -> dict:
    paths = {"html": out / "report.html", "md": out / "report.md", "figures": out / "figures"}
    build_report(dataset="tiny", experiments=experiments, defaults=DEFAULTS, test_images=images,
                 provenance=provenance, out_html=paths["html"], out_md=paths["md"], figures_dir=paths["figures"])
    return paths


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    experiments, images = make_experiments()
    paths = build(tmp_path_factory.mktemp("report"), experiments, images)
    return {**paths, "experiments": experiments, "images": images,
            "html_text": paths["html"].read_text(encoding="utf-8"), "md_text": paths["md"].read_text(encoding="utf-8")}


def rendered_markdown(md: str):
    """The element tree of the HTML a CommonMark viewer (with GitHub's tables) makes of `md`."""
    return html5lib.parse(MarkdownIt("commonmark").enable("table").render(md), namespaceHTMLElements=False)


def text_of(element) -> str:
    return "".join(element.itertext()).strip()


def md_table(md: str, heading: str) -> list[list[str]]:
    """Cells of the body rows of the Markdown table right under `heading`, as a viewer shows them."""
    level, title = heading.split(" ", 1)
    elements = list(rendered_markdown(md).iter())
    start = next(i for i, e in enumerate(elements) if e.tag == f"h{len(level)}" and text_of(e) == title)
    table = next(e for e in elements[start:] if e.tag == "table")
    return [[text_of(cell) for cell in row.findall("td")] for row in table.find("tbody").findall("tr")]


def leaderboard(md: str) -> list[list[str]]:
    return md_table(md, "## Leaderboard")


def test_markdown_leaderboard_has_one_row_per_experiment_best_first(report):
    rows = leaderboard(report["md_text"])
    by_accuracy = sorted(report["experiments"], key=lambda e: -e["metrics"]["test_accuracy"])
    assert [r[0] for r in rows] == [e["name"] for e in by_accuracy] == ["strong", "base", "weak"]
    assert rows[0][2] == "best"
    best = by_accuracy[0]["metrics"]
    assert rows[0][1] == f"{100 * best['test_accuracy']:.2f}% ({100 * best['test_accuracy_ci95'][0]:.2f}–" \
                         f"{100 * best['test_accuracy_ci95'][1]:.2f}%)"
    assert rows[0][-1] == "hidden=[512, 256], learning_rate=0.01"
    assert rows[1][-1] == "none"
    assert rows[2][6] == "6"  # epochs
    assert re.fullmatch(r"-\d+\.\d\d \[-\d+\.\d\d, [+-]\d+\.\d\d\]", rows[2][2])


def test_markdown_escapes_table_cells_and_links_existing_pngs(report):
    md = report["md_text"]
    per_class_row = next(line for line in md.splitlines() if line.startswith("| a\\|b"))
    assert len(re.split(r"(?<!\\)\|", per_class_row)) == 8  # 6 cells, none split by the name's pipe
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert links and all(not Path(link).is_absolute() for link in links)
    for link in links:
        assert (report["md"].parent / link).is_file(), link


def test_every_figure_is_written_and_listed(report):
    written = sorted(p.relative_to(report["figures"]).as_posix() for p in report["figures"].rglob("*"))
    written = [w for w in written if w.endswith(".png")]
    assert written == sorted(figure_files([e["name"] for e in report["experiments"]]))
    for path in report["figures"].rglob("*.png"):
        with Image.open(path) as image:
            image.load()
            assert image.width > 100 and image.height > 100


def test_html_is_valid_and_self_contained(report):
    text = report["html_text"]
    parser = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False)
    doc = parser.parse(text)  # raises on any parse error
    assert doc.find(".//title").text == "Classifier report: tiny"
    images = doc.findall(".//img")
    assert len(images) > 3 * 5
    for img in images:
        src = img.get("src")
        assert src.startswith("data:image/png;base64,"), src[:40]
        with Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1], validate=True))) as decoded:
            decoded.load()
            assert (decoded.width, decoded.height) == (int(img.get("width")), int(img.get("height")))
        assert img.get("alt")
    assert not doc.findall(".//script")
    for element in doc.iter():
        for attr in ("src", "href"):
            value = element.get(attr) or ""
            assert value.startswith(("data:", "#")) or not value, value
    assert "http://" not in text and "https://" not in text and "url(" not in text


def test_html_embeds_the_same_pngs_as_the_files(report):
    text = report["html_text"]
    for name in ("loss", "accuracy", "confusion_matrix", "per_class", "reliability"):
        data = (report["figures"] / "base" / f"{name}.png").read_bytes()
        assert base64.b64encode(data).decode() in text, name


def test_html_content(report):
    text = report["html_text"]
    assert "a|b &lt;c&gt; &amp; d" in text and "<c>" not in text
    for name in ("base", "strong", "weak"):
        assert f'id="exp-{name}"' in text
    assert text.index('id="exp-strong"') < text.index('id="exp-base"') < text.index('id="exp-weak"')
    assert "Best: strong" in text
    for needle in ("c0ffee", "ab" * 32, "1,648,877", "Content SHA-256", "2025-03-04T05:06:07Z", "/data/tiny",
                   "Most confident mistakes",
                   "Most confused class pairs", "Provenance"):
        assert needle in text, needle


def test_each_gallery_is_composed_once_for_its_png_and_the_page(report, monkeypatch):
    """The PNG report.md links and the page's tiles show the same images with the same words."""
    view = build_view(dataset="tiny", experiments=report["experiments"], defaults=DEFAULTS, provenance=PROVENANCE)
    exp = view.experiments[0]
    page = html5lib.parse(report["html_text"], namespaceHTMLElements=False).find(f".//section[@id='exp-{exp.name}']")
    shown = [[text_of(li) for li in ol.findall("li")] for ol in page.iter("ol")]
    labels = [text_of(div.find("p")) for div in page.iter("div") if div.get("class") == "pair"]
    drawn = []
    original = matplotlib.axes.Axes.text
    monkeypatch.setattr(matplotlib.axes.Axes, "text", lambda ax, x, y, text, *a, **k: drawn.append(text) or original(ax, x, y, text, *a, **k))
    galleries = mistakes_gallery(exp, view.classes), pairs_gallery(exp, view.classes)
    with styled():
        for gallery in galleries:
            gallery_png(gallery, report["images"])
    words = [["".join(text for text, _ in tile.lines) for tile in row.tiles] for row in galleries[1].rows]
    assert shown == [["".join(text for text, _ in tile.lines) for tile in galleries[0].tiles], *words]
    assert labels == [" ".join(text for text, _ in row.label) for row in galleries[1].rows] and len(labels) > 1
    for gallery in galleries:
        expected = [line for tile in gallery.tiles for line, _ in tile.lines]
        expected += ["\n".join(text for text, _ in row.label) for row in gallery.rows if row.label]
        assert sorted(drawn[:len(expected)]) == sorted(expected)
        del drawn[:len(expected)]


# Names a viewer would turn into markup if they were pasted in as they are.
HOSTILE_RUNS = {"<img src=x onerror=alert(1)>": ({}, 2.0), "**bold** [x](javascript:alert(1))": ({"epochs": 6}, 1.0)}
HOSTILE_CLASSES = ["<script>alert(1)</script>", "_under_", "`tick`", "a|b", "&amp;", "~~gone~~",
                   "![i](x.png)", "<b>b</b>", "\\back", "nine"]
HOSTILE_PROVENANCE = {**PROVENANCE, "source": "/data/<i>src</i>", "machine": {"hostname": "<a href=x>host</a>"},
                      "config": {"dataset": "tiny", "note": "```\n<script>alert(2)</script>"}}


def test_quoted_names_render_as_text_in_markdown_and_html(tmp_path):
    experiments, images = make_experiments(n=80, runs=HOSTILE_RUNS, classes=HOSTILE_CLASSES)
    paths = build(tmp_path, experiments, images, HOSTILE_PROVENANCE)
    md = paths["md"].read_text(encoding="utf-8")
    doc = rendered_markdown(md)
    # The only markup is the report's own: no element a quoted name could have made.
    assert {e.tag for e in doc.iter()} <= {"html", "head", "body", "h1", "h2", "h3", "p", "ul", "li", "strong", "em",
                                          "code", "pre", "table", "thead", "tbody", "tr", "th", "td", "img", "hr"}
    assert all(img.get("src").startswith("figures/") for img in doc.iter("img"))
    assert sorted(row[0] for row in md_table(md, "## Leaderboard")) == sorted(HOSTILE_RUNS)
    assert [row[0] for row in md_table(md, "### Scores per class")] == HOSTILE_CLASSES
    text = text_of(doc)
    assert "/data/<i>src</i>" in text and "<a href=x>host</a>" in text
    assert json.loads(text_of(doc.find(".//pre"))) == HOSTILE_PROVENANCE["config"]

    page = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(paths["html"].read_text(encoding="utf-8"))
    assert not page.findall(".//script") and not page.findall(".//i")
    assert all(img.get("src").startswith("data:image/png;base64,") for img in page.iter("img"))
    assert all(a.get("href").startswith("#") for a in page.iter("a"))
    page_text = text_of(page)
    for name in [*HOSTILE_RUNS, *HOSTILE_CLASSES, "/data/<i>src</i>", "<a href=x>host</a>"]:
        assert name in page_text, name


def test_same_inputs_give_the_same_bytes(report, tmp_path):
    experiments, images = make_experiments()
    again = build(tmp_path, experiments, images)
    assert again["html"].read_bytes() == report["html"].read_bytes()
    assert again["md"].read_bytes() == report["md"].read_bytes()
    for path in report["figures"].rglob("*.png"):
        assert (again["figures"] / path.relative_to(report["figures"])).read_bytes() == path.read_bytes(), path


def test_no_seed_groups_no_seed_section(report):
    # base, strong and weak differ by more than their seed: three groups of one.
    view = build_view(dataset="tiny", experiments=report["experiments"], defaults=DEFAULTS, provenance=PROVENANCE)
    assert view.seed_groups == []
    assert "Repeated over seeds" not in report["md_text"] and "Repeated over seeds" not in report["html_text"]
    assert 'id="seeds"' not in report["html_text"]


# A configuration repeated with three seeds, and a lone experiment; metrics set by hand below.
SEED_RUNS = {"lr_s2": ({"learning_rate": 0.003, "seed": 2}, 2.0), "lone": ({"optimizer": "sgd"}, 2.0),
             "lr_s0": ({"learning_rate": 0.003}, 2.0), "lr_s1": ({"learning_rate": 0.003, "seed": 1}, 2.0)}
# name -> (test accuracy, macro F1, log loss)
SEED_METRICS = {"lr_s0": (0.90, 0.80, 0.30), "lr_s1": (0.92, 0.82, 0.40), "lr_s2": (0.94, 0.87, 0.20),
                "lone": (0.85, 0.75, 0.50)}
# By hand over lr_s0..2: accuracy mean 0.92, deviations -.02, 0, +.02 -> std sqrt(0.0008 / 2) = 0.02;
# F1 mean 0.83, deviations -.03, -.01, +.04 -> std sqrt(0.0026 / 2) = 0.036056; log loss 0.30, std 0.10.
SEED_ROWS = [
    ["learning_rate=0.003", "3", "0, 1, 2", "92.00% ± 2.00%", "90.00–94.00%", "0.830 ± 0.036", "0.300 ± 0.100",
     "lr_s0, lr_s1, lr_s2"],
    ["optimizer=sgd", "1", "0", "85.00%", "85.00%", "0.750", "0.500", "lone"],
]


def make_seed_experiments(runs=SEED_RUNS, values=SEED_METRICS):
    experiments, images = make_experiments(n=60, runs=runs)
    for exp in experiments:
        accuracy, f1, loss = values[exp["name"]]
        exp["metrics"].update(test_accuracy=accuracy, macro_f1=f1, log_loss=loss)
    return experiments, images


def _link(group: str, name: str) -> str:
    return f"figures/{group}/{name}.png"


def seed_view(experiments):
    return build_view(dataset="tiny", experiments=experiments, defaults=DEFAULTS, provenance=PROVENANCE)


def test_seed_groups_have_hand_computed_mean_and_sample_std():
    experiments, _ = make_seed_experiments()
    group, lone = seed_view(experiments).seed_groups
    assert group.differs == {"learning_rate": 0.003} and group.seeds == [0, 1, 2]
    assert group.members == ["lr_s0", "lr_s1", "lr_s2"]
    assert astuple(group.accuracy) == pytest.approx((0.92, 0.02, 0.90, 0.94))
    assert (group.macro_f1.mean, group.macro_f1.std) == pytest.approx((0.83, 0.0360555), abs=1e-7)
    assert (group.log_loss.mean, group.log_loss.std) == pytest.approx((0.30, 0.10))
    assert lone.differs == {"optimizer": "sgd"} and lone.seeds == [0] and lone.members == ["lone"]
    assert lone.accuracy == Spread(0.85, None, 0.85, 0.85)
    assert [seed_group_row(g) for g in (group, lone)] == SEED_ROWS


def test_seed_groups_rank_by_mean_and_do_not_depend_on_input_order():
    experiments, _ = make_seed_experiments(values={**SEED_METRICS, "lone": (0.95, 0.90, 0.10)})
    # The lone run beats every seed of the group, and the group's mean.
    forward, backward = seed_view(experiments), seed_view(experiments[::-1])
    assert [g.members[0] for g in forward.seed_groups] == ["lone", "lr_s0"]
    assert forward.seed_groups == backward.seed_groups
    assert render_markdown(forward, _link) == render_markdown(backward, _link)


def test_a_seed_run_twice_counts_once():
    # `baseline` has the settings of sweep point seed 0: the same deterministic run under two names.
    runs = {"sweep_seed-0": ({}, 2.0), "baseline": ({}, 2.0), "sweep_seed-1": ({"seed": 1}, 2.0)}
    values = {"baseline": (0.90, 0.8, 0.3), "sweep_seed-0": (0.90, 0.8, 0.3), "sweep_seed-1": (0.80, 0.7, 0.5)}
    experiments, _ = make_seed_experiments(runs, values)
    (group,) = seed_view(experiments).seed_groups
    assert group.seeds == [0, 1] and group.members == ["baseline", "sweep_seed-0", "sweep_seed-1"]
    assert astuple(group.accuracy) == pytest.approx((0.85, 0.0707107, 0.80, 0.90), abs=1e-7)
    assert "each seed counts once" in seed_note([group])
    # Two names for one seed are one run, not a spread: no table.
    del runs["sweep_seed-1"]
    assert seed_view(make_seed_experiments(runs, values)[0]).seed_groups == []


def _html_seed_table(html: str) -> tuple[list[list[str]], list[list[str]]]:
    """(cell texts, experiment names listed) of each body row of the HTML seed table."""
    doc = html5lib.HTMLParser(strict=True, namespaceHTMLElements=False).parse(html)
    section = doc.find(".//section[@id='leaderboard']")
    children = list(section)
    heading = next(i for i, el in enumerate(children) if el.get("id") == "seeds")
    assert "".join(children[heading].itertext()) == "Repeated over seeds"
    rows = children[heading + 1].findall(".//tbody/tr")
    cells = [["".join(td.itertext()) for td in tr.findall("td")] for tr in rows]
    return cells, [[a.text for a in tr.findall(".//li/a")] for tr in rows]


def test_seed_table_in_markdown_and_html():
    # The writers alone, from one view, with a stand-in PNG: the figures are tested above.
    experiments, images = make_seed_experiments()
    view = seed_view(experiments)
    buffer = io.BytesIO()
    Image.new("L", (2, 2)).save(buffer, format="PNG")
    png = Png(buffer.getvalue(), 2, 2)
    figures = {group: dict.fromkeys(EXPERIMENT_FIGURES + COMPARISON_FIGURES, png) for group in [*SEED_RUNS, COMPARISON]}
    html = render_html(view, figures, dict.fromkeys(range(len(images)), png))
    md = render_markdown(view, _link)
    assert sorted(r[0] for r in leaderboard(md)) == sorted(SEED_RUNS)  # still one row per experiment
    assert md.index("## Leaderboard") < md.index("### Repeated over seeds") < md.index("## 1. ")
    assert md_table(md, "### Repeated over seeds") == SEED_ROWS
    cells, members = _html_seed_table(html)
    assert [row[:-1] for row in cells] == [row[:-1] for row in SEED_ROWS]
    assert members == [["lr_s0", "lr_s1", "lr_s2"], ["lone"]]
    assert '<a href="#seeds">' in html


def test_no_temporary_files_are_left(report):
    leftovers = [p for p in report["html"].parent.rglob("*") if p.name.startswith(".") or p.suffix == ".part"]
    assert leftovers == []


def test_matplotlib_settings_are_left_as_found(tmp_path):
    experiments, images = make_experiments(n=60, runs={"only": ({}, 2.0)})
    with matplotlib.rc_context({"font.size": 31.0, "lines.linewidth": 7.0}):
        build(tmp_path, experiments, images)
        assert matplotlib.rcParams["font.size"] == 31.0 and matplotlib.rcParams["lines.linewidth"] == 7.0


def test_a_single_perfect_experiment_without_history(tmp_path):
    experiments, images = make_experiments(n=80, runs={"only": ({}, 60.0)})
    experiments[0]["history"] = []
    assert experiments[0]["metrics"]["test_accuracy"] == 1.0
    paths = build(tmp_path, experiments, images)
    md = paths["md"].read_text(encoding="utf-8")
    assert [r[0] for r in leaderboard(md)] == ["only"]
    assert "No mistakes on the test set." in md and "most frequent mistake" not in md
    assert not (paths["figures"] / COMPARISON).exists()
    html5lib.HTMLParser(strict=True).parse(paths["html"].read_text(encoding="utf-8"))


def test_a_custom_dataset_with_three_classes(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.integers(0, 3, 90)
    proba = rng.dirichlet(np.ones(3), 90) * 0.5 + 0.5 * np.eye(3)[y]
    metrics = score_predictions(y, proba, classes=["cat", "dog", "eel"])
    metrics.update(val_accuracy=0.7, epochs_run=1, train_seconds=0.5, n_parameters=99)
    experiment = {"name": "tri", "metrics": metrics, "history": [], "settings": DEFAULTS,
                  "predictions": predictions_table(np.arange(90), y, proba)}
    paths = build(tmp_path, [experiment], rng.integers(0, 256, (90, 28, 28)).astype(np.uint8))
    md = paths["md"].read_text(encoding="utf-8")
    assert [line.split(" | ")[0] for line in md.splitlines() if line.startswith(("| cat", "| dog", "| eel"))] == \
        ["| cat", "| dog", "| eel"]


def test_bad_inputs_are_refused_with_the_experiment_named(tmp_path):
    experiments, images = make_experiments(n=60, runs={"only": ({}, 2.0)})
    with pytest.raises(TableSchemaError, match="'only'.*40 test images|'only'.*ids"):
        build(tmp_path, experiments, images[:40])
    experiments[0]["predictions"] = experiments[0]["predictions"].drop_columns(["label"])
    with pytest.raises(TableSchemaError, match="'only'.*'label'"):
        build(tmp_path, experiments, images)
    with pytest.raises(ValueError, match="at least one"):
        build(tmp_path, [], images)


def test_collect_provenance_reads_this_checkout():
    info = {"dataset": "fashion-mnist", "source": "/usr/share/datasets/fashion-mnist", "n_train": 60000,
            "n_test": 10000, "classes": ["a", "b"], "files": {"x": {"content_sha256": "00" * 32}}}
    prov = collect_provenance(config={"dataset": "fashion-mnist"}, dataset_info=info, date="2025-01-01",
                              repo_dir=REPO)
    assert prov["files"] == info["files"] and prov["date"] == "2025-01-01" and prov["n_test"] == 10000
    assert prov["packages"]["numpy"] == np.__version__ and prov["packages"]["python"]
    assert prov["machine"]["cpu_count"] >= 1
    if shutil.which("git") and (REPO / ".git").exists():
        assert re.fullmatch(r"[0-9a-f]{40}", prov["code"]["git_commit"])
        assert isinstance(prov["code"]["git_dirty"], bool)
    json.dumps(prov)
    outside = collect_provenance(config={"dataset": "d"}, dataset_info={}, repo_dir="/")
    assert outside["code"]["git_commit"] is None and outside["dataset"] == "d" and outside["date"] is None


def _render_caption(name: str, **wildcards) -> str:
    """A caption as Snakemake's report renders it: Jinja (its settings), then docutils."""
    from docutils.core import publish_parts
    from jinja2 import Environment

    class Snakemake:
        config = {"dataset": "fashion-mnist"}

    Snakemake.wildcards = type("W", (), wildcards)
    text = Environment(trim_blocks=True, lstrip_blocks=True).from_string((CAPTIONS / name).read_text()).render(
        snakemake=Snakemake)
    return publish_parts(text, writer="html", settings_overrides={"report_level": 2, "halt_level": 2})["body"]


def test_snakemake_figure_captions_are_generated_from_the_package_captions():
    assert (CAPTIONS / "figures.rst").read_text() == figures_rst(), (
        "workflow/report/figures.rst differs from report/captions.py: regenerate it as captions.py's docstring says")


def test_captions_render_for_every_figure():
    bodies = {}
    for figure in (*EXPERIMENT_FIGURES, *COMPARISON_FIGURES, *ROBUSTNESS_FIGURES, "history"):
        experiment = COMPARISON if figure in COMPARISON_FIGURES else ROBUSTNESS if figure in ROBUSTNESS_FIGURES else "baseline"
        bodies[figure] = _render_caption("figures.rst", figure=figure, experiment=experiment)
        assert "of the report" not in bodies[figure], figure  # the fallback for unknown figures
        # Snakemake's caption says what the report's own caption says, word for word.
        assert " ".join(FIGURE_TEXT[figure][1].split()) in " ".join(re.sub(r"<[^>]+>", "", bodies[figure]).split()), figure
    assert len(set(bodies.values())) == len(bodies)
    assert re.search(r"baseline</tt>\.\s+Training", bodies["loss"])  # two sentences, not run together
    assert re.search(r"corrupted test images\.\s+One test image", bodies["corruption_examples"])
    for name in ("metrics.rst", "predictions.rst", "history.rst", "robustness.rst", "report_html.rst", "report_md.rst",
                 "workflow.rst"):
        body = _render_caption(name, experiment="baseline")
        assert len(body) > 100 and "system-message" not in body, name


def test_learning_curves_say_when_training_figures_come_from_augmented_batches():
    from mnist_pipeline.evaluation.report import figures as fig

    history = [{"epoch": e, "train_loss": 1.0 / e, "val_loss": 1.1 / e, "train_accuracy": 0.5 + 0.04 * e,
                "val_accuracy": 0.52 + 0.04 * e} for e in range(1, 6)]
    labels = []
    for augmented in (False, True):
        _, ax, _ = fig._curve_panel(history, "accuracy", "Accuracy", augmented)
        labels.append([line.get_label() for line in ax.get_lines()])
    assert labels == [["training", "validation"], ["training (augmented batches)", "validation"]]
