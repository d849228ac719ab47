"""The report's words: table columns and their cells, notes, the headline, the glossary and the
provenance facts, shared by the HTML and Markdown writers (figure captions: captions.py).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mnist_pipeline.evaluation.report import robustness
from mnist_pipeline.evaluation.report.comparison import within_noise
from mnist_pipeline.evaluation.report.formatting import (
    ABSENT,
    NA,
    change_text,
    ci_pct,
    count,
    epochs_run_text,
    num,
    pct,
    seconds,
    settings_text,
    spread_text,
    value_text,
)
from mnist_pipeline.evaluation.report.view import ExperimentView, ReportView, SeedGroup


def vs_best(view: ExperimentView) -> str:
    if view.rank == 1:
        return "best"
    return change_text(view.vs_best)


def differs_text(view: ExperimentView) -> str:
    return settings_text(view.differs)


def epochs_text(view: ExperimentView) -> str:
    return epochs_run_text(view.metrics, view.settings)


LEADERBOARD_COLUMNS = (
    "Experiment", "Test accuracy (95% CI)", "vs best, pts (paired 95% CI)", "Macro F1", "Log loss",
    "Parameters", "Epochs", "Training time", "Differs from defaults",
)
VS_BEST_COLUMN = 2
# Inserted after Log loss when some experiment was scored on corrupted images (How it holds up).
ROBUSTNESS_COLUMN, ROBUSTNESS_HEADING = 5, "Mean corruption accuracy (drop from clean)"


def leaderboard_columns(report: ReportView) -> tuple[str, ...]:
    """LEADERBOARD_COLUMNS, with the robustness column when the report has that section."""
    if report.robustness is None:
        return LEADERBOARD_COLUMNS
    at = ROBUSTNESS_COLUMN
    return (*LEADERBOARD_COLUMNS[:at], ROBUSTNESS_HEADING, *LEADERBOARD_COLUMNS[at:])


def leaderboard_row(view: ExperimentView, with_robustness: bool = False) -> list[str]:
    """The leaderboard cells of one experiment, in leaderboard_columns order."""
    m = view.metrics
    row = [
        view.name,
        f"{pct(m.get('test_accuracy'))} ({ci_pct(m.get('test_accuracy_ci95'))})",
        vs_best(view),
        num(m.get("macro_f1")),
        num(m.get("log_loss")),
        count(m.get("n_parameters")),
        epochs_text(view),
        seconds(m.get("train_seconds")),
        differs_text(view),
    ]
    if with_robustness:
        mean, drop = robustness.leaderboard_cell(view)
        row.insert(ROBUSTNESS_COLUMN, f"{mean} ({drop})" if drop else mean)
    return row


SEED_TITLE = "Repeated over seeds"
SEED_COLUMNS = (
    "Differs from defaults (seed aside)", "n seeds", "Seeds", "Test accuracy, mean ± std", "Test accuracy, min–max",
    "Macro F1, mean ± std", "Log loss, mean ± std", "Experiments",
)
SEED_MEMBERS_COLUMN = len(SEED_COLUMNS) - 1


def seed_group_row(group: SeedGroup) -> list[str]:
    """The seed table's cells of one group, in SEED_COLUMNS order."""
    return [
        settings_text(group.differs),
        str(len(group.seeds)),
        ", ".join(map(str, group.seeds)),
        spread_text(group.accuracy, pct),
        pct(group.accuracy.low) if len(group.seeds) == 1 else ci_pct((group.accuracy.low, group.accuracy.high)),
        spread_text(group.macro_f1, num),
        spread_text(group.log_loss, num),
        ", ".join(group.members),
    ]


def seed_note(groups: Sequence[SeedGroup]) -> str:
    """How to read the seed table, plus a word on lone seeds and on seeds run twice where the table has them."""
    text = (
        "Experiments whose settings are the same except for the training seed, one row per configuration, best "
        "mean test accuracy first. ± is the sample standard deviation over the seeds (n − 1 in the denominator): "
        "how much the result moves with the seed alone; with few seeds it is a rough estimate. A gap between two "
        "configurations no larger than their standard deviations may be the seed's doing, not the settings'."
    )
    if any(len(g.seeds) == 1 for g in groups):
        text += " A configuration run with one seed shows its one result, with no spread to judge it by."
    if any(len(g.members) > len(g.seeds) for g in groups):
        text += (" Experiments with the same settings and the same seed are the same run (training is "
                 "deterministic), so each seed counts once.")
    return text


def key_numbers(view: ExperimentView) -> list[tuple[str, str]]:
    """(label, value) pairs summarising one experiment."""
    m = view.metrics
    ece = m.get("ece") or {}
    return [
        ("Test accuracy", f"{pct(m.get('test_accuracy'))} ({ci_pct(m.get('test_accuracy_ci95'))})"),
        ("Validation accuracy", pct(m.get("val_accuracy"))),
        ("Top-2 accuracy", pct(m.get("top2_accuracy"))),
        ("Macro / weighted F1", f"{num(m.get('macro_f1'))} / {num(m.get('weighted_f1'))}"),
        ("Log loss", num(m.get("log_loss"))),
        ("Calibration error (ECE)", f"{pct(ece.get('value'))} ({ece.get('bins', NA)} bins)"),
        ("Epochs", epochs_text(view)),
        ("Training time", seconds(m.get("train_seconds"))),
        ("Parameters", count(m.get("n_parameters"))),
        ("Test items", count(m.get("n_test"))),
        *robustness.key_numbers(view),
    ]


def per_class_rows(view: ExperimentView, classes: Sequence[str]) -> list[list[str]]:
    """Class, precision, recall, F1, support, errors: one row per class in class order."""
    per_class = view.metrics.get("per_class", {})
    errors = view.metrics.get("errors_per_class", {})
    rows = []
    for name in classes:
        scores = per_class.get(name, {})
        if scores.get("absent"):
            rows.append([name, ABSENT, ABSENT, ABSENT, count(0), count(errors.get(name))])
            continue
        rows.append([
            name, pct(scores.get("precision"), 1), pct(scores.get("recall"), 1), num(scores.get("f1")),
            count(scores.get("support")), count(errors.get(name)),
        ])
    return rows


PER_CLASS_COLUMNS = ("Class", "Precision", "Recall", "F1", "Support", "Errors")


def headline(view: ReportView) -> str:
    """One sentence: how many runs, the best and its accuracy, and which runs tie with it."""
    best = view.best
    n = len(view.experiments)
    n_test = best.metrics.get("n_test")
    runs = "1 experiment" if n == 1 else f"{n} experiments"
    text = (
        f"{runs} evaluated on {count(n_test)} test images of {view.dataset}. "
        f"Best: {best.name}, {pct(best.metrics['test_accuracy'])} test accuracy "
        f"(95% CI {ci_pct(best.metrics.get('test_accuracy_ci95'))})."
    )
    ties = [v.name for v in view.experiments[1:] if within_noise(v)]
    if ties:
        text += f" Not clearly worse than it (paired interval includes 0): {', '.join(ties)}."
    if best.pairs:
        pair = best.pairs[0]
        text += (
            f" Its most frequent mistake: {view.classes[pair.true]} taken for "
            f"{view.classes[pair.predicted]} ({pair.count} times, {pct(pair.share, 1)} of {view.classes[pair.true]})."
        )
    return text


LEADERBOARD_NOTE = (
    "Best first, by test accuracy. 95% CI: percentile bootstrap over the test images. "
    "vs best: this experiment's accuracy minus the best's, in percentage points, with a paired "
    "bootstrap interval over the same test images; an interval that includes 0 means the two are not "
    "clearly different on this test set. Ranking by test accuracy selects on the test set: treat "
    "small leads with suspicion and confirm them with validation accuracy."
)
GLOSSARY = (
    ("Test accuracy", "Share of the test images whose most probable class is the true one."),
    ("Macro F1", "Mean over classes of the harmonic mean of precision and recall; every class counts equally. "
                 "A class with no test images is absent: it has no scores and is left out of the mean."),
    ("Weighted F1", "The same, each class weighted by its number of test images."),
    ("Log loss", "Mean of -ln(probability given to the true class), in nats; lower is better and it "
                 "punishes confident mistakes. Guessing uniformly among k classes scores ln k (2.303 for 10)."),
    ("Top-2 accuracy", "Share of test images whose true class is among the two most probable."),
    ("ECE", "Expected calibration error: the gap between confidence and accuracy, averaged over "
            "equal-width confidence bins weighted by their size. 0 means the probabilities can be taken at face value."),
)


def provenance_facts(prov: Mapping[str, Any]) -> list[tuple[str, str]]:
    """(label, value) of the scalar provenance entries, in reading order."""
    code = prov.get("code") or {}
    commit = code.get("git_commit")
    if commit is None:
        code_text = "not a git work tree"
    else:
        code_text = commit + (" (with uncommitted changes)" if code.get("git_dirty") else "")
    sizes = []
    if "n_train" in prov and "n_test" in prov:
        sizes.append(f"{count(prov['n_train'])} training and {count(prov['n_test'])} test images")
    if prov.get("image_shape"):
        sizes.append("{}x{} pixels".format(*prov["image_shape"]))
    if prov.get("classes"):
        sizes.append(f"{len(prov['classes'])} classes: {', '.join(map(str, prov['classes']))}")
    if prov.get("absent_classes"):
        sizes.append(f"absent from the training or test images: {', '.join(map(str, prov['absent_classes']))}")
    dataset = str(prov.get("dataset", NA)) + (f" ({'; '.join(sizes)})" if sizes else "")
    return [
        ("Dataset", dataset),
        ("Source", str(prov.get("source") or "the dataset's own mirrors")),
        ("Date", str(prov.get("date") or "not recorded")),
        ("Package version", str(code.get("package_version", NA))),
        ("Git commit", code_text),
    ]


def machine_facts(machine: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(key.replace("_", " ").capitalize(), value if isinstance(value, str) else value_text(value))
            for key, value in machine.items()]


# Download-manifest fields, in the order and with the headings the provenance table uses;
# fields not listed here follow under their own names.
FILE_FIELDS = {
    "file": "File", "bytes": "Bytes", "verified_by": "Verified by", "content_sha256": "Content SHA-256",
    "gz_sha256": ".gz SHA-256", "origin": "Origin",
}


def file_rows(files: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The download manifest's files as a table: one row per file, one column per field."""
    entries = {name: e if isinstance(e, Mapping) else {"value": e} for name, e in files.items()}
    present = {f for entry in entries.values() for f in entry}
    fields = [f for f in FILE_FIELDS if f in present]
    fields += sorted(present - set(FILE_FIELDS))
    rows = [[name] + [_field_text(entries[name].get(f)) for f in fields] for name in sorted(entries)]
    return ["Name"] + [FILE_FIELDS.get(f, f) for f in fields], rows


def _field_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return value if isinstance(value, str) else value_text(value)
