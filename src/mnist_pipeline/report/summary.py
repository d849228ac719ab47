"""What the report says, independent of how it is written: ranking, comparisons, seed spreads, galleries.

The HTML and Markdown writers both read these views and the text formatters below, so the
two files can never disagree on a number or on the order of the leaderboard.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mnist_pipeline.errors import TableSchemaError
from mnist_pipeline.metrics import calibration_bins, paired_difference_ci, read_predictions, top_confusions

N_MISTAKES = 24  # the gallery of most confident mistakes
N_PAIRS = 4  # the most confused (true, predicted) pairs shown
N_PAIR_EXAMPLES = 8  # images shown per pair
DIFF_SEED = 0


@dataclass(frozen=True)
class Sample:
    """One test item: its id (row in the test images), true and predicted class, probability."""

    id: int
    label: int
    predicted: int
    probability: float  # of the predicted class


@dataclass(frozen=True)
class Pair:
    """A (true, predicted) confusion with its count, share of the true class and examples."""

    true: int
    predicted: int
    count: int
    share: float
    examples: list[Sample]


@dataclass
class ExperimentView:
    """One experiment as the report shows it: its inputs plus rank, comparisons and galleries."""

    name: str
    rank: int
    metrics: Mapping[str, Any]
    history: list[Mapping[str, Any]]
    settings: Mapping[str, Any]
    differs: dict[str, Any]
    calibration: dict[str, np.ndarray]
    mistakes: list[Sample]
    pairs: list[Pair]
    # accuracy(this) - accuracy(best) on the same test items: (difference, lo, hi), or None
    # for the best itself or when the two were not evaluated on the same items.
    vs_best: tuple[float, float, float] | None = None
    correct: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool), repr=False)
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64), repr=False)


@dataclass(frozen=True)
class Spread:
    """One metric over the seeds of a group: sample mean, standard deviation (ddof=1), range.

    std is None for a single seed, where it is undefined.
    """

    mean: float
    std: float | None
    low: float
    high: float


@dataclass(frozen=True)
class SeedGroup:
    """Experiments whose settings are equal but for `seed`: the same configuration, retrained.

    seeds are distinct and sorted; members are every experiment of the group, by name. When
    two members share a seed they are the same run (training is deterministic), so the
    statistics count each seed once, from its first member by name. A metric some member
    lacks is None.
    """

    differs: dict[str, Any]  # settings that differ from the defaults, seed left out
    seeds: list[int]
    members: list[str]
    accuracy: Spread
    macro_f1: Spread | None
    log_loss: Spread | None


@dataclass
class ReportView:
    """The whole report's content, experiments ranked best first."""

    dataset: str
    classes: list[str]
    experiments: list[ExperimentView]  # best first
    provenance: Mapping[str, Any]
    # Every group, best mean test accuracy first, when some configuration ran with 2+ seeds;
    # empty otherwise, and then the report shows no seed table.
    seed_groups: list[SeedGroup] = field(default_factory=list)
    # report.history.ExperimentHistory of each experiment with earlier runs, in rank order
    histories: list[Any] = field(default_factory=list)

    @property
    def best(self) -> ExperimentView:
        return self.experiments[0]


def settings_diff(settings: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The settings whose value differs from the defaults, by key in sorted order."""
    missing = object()
    return {
        key: settings.get(key)
        for key in sorted(set(settings) | set(defaults))
        if settings.get(key, missing) != defaults.get(key, missing)
    }


def _sorted_samples(indices: np.ndarray, preds: Mapping[str, np.ndarray], limit: int) -> list[Sample]:
    """The `limit` items among `indices` with the highest predicted-class probability.

    Ties go to the lower id, so the choice does not depend on row order.
    """
    conf = preds["proba"][indices, preds["predicted"][indices]]
    order = np.lexsort((preds["id"][indices], -conf))[:limit]
    chosen = indices[order]
    return [
        Sample(int(preds["id"][i]), int(preds["label"][i]), int(preds["predicted"][i]), float(conf[j]))
        for i, j in zip(chosen, order)
    ]


def _pairs(cm: np.ndarray, preds: Mapping[str, np.ndarray]) -> list[Pair]:
    support = cm.sum(axis=1)
    pairs = []
    for t, p, n in top_confusions(cm, N_PAIRS):
        idx = np.flatnonzero((preds["label"] == t) & (preds["predicted"] == p))
        pairs.append(Pair(t, p, n, n / support[t], _sorted_samples(idx, preds, N_PAIR_EXAMPLES)))
    return pairs


def _experiment_view(raw: Mapping[str, Any], defaults: Mapping[str, Any]) -> ExperimentView:
    name = str(raw["name"])
    metrics = raw["metrics"]
    preds = read_predictions(raw["predictions"], source=f"predictions of experiment {name!r}")
    k = preds["proba"].shape[1]
    cm = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    if cm.shape != (k, k):
        raise TableSchemaError(f"metrics of experiment {name!r}: confusion_matrix is {cm.shape}, predictions have {k} classes")
    correct = preds["predicted"] == preds["label"]
    bins = int(metrics.get("ece", {}).get("bins", 15))
    ids, correct_by_id = outcomes(preds)
    return ExperimentView(
        name=name,
        rank=0,
        metrics=metrics,
        history=list(raw.get("history") or []),
        settings=dict(raw.get("settings") or {}),
        differs=settings_diff(raw.get("settings") or {}, defaults),
        calibration=calibration_bins(preds["label"], preds["proba"], bins),
        mistakes=_sorted_samples(np.flatnonzero(~correct), preds, N_MISTAKES),
        pairs=_pairs(cm, preds),
        correct=correct_by_id,
        ids=ids,
    )


def outcomes(preds: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """The test item ids in order and whether each was predicted right: what accuracy_change pairs."""
    order = np.argsort(preds["id"], kind="stable")
    return preds["id"][order], (preds["predicted"] == preds["label"])[order]


def accuracy_change(
    ids: np.ndarray, correct: np.ndarray, base_ids: np.ndarray, base_correct: np.ndarray
) -> tuple[float, float, float] | None:
    """accuracy - base accuracy as (difference, lo, hi) with the paired bootstrap 95% interval
    the leaderboard shows; None when the two were not evaluated on the same test items."""
    if not np.array_equal(ids, base_ids):
        return None
    lo, hi = paired_difference_ci(correct, base_correct, seed=DIFF_SEED)
    return float(correct.mean() - base_correct.mean()), lo, hi


def _rank_key(view: ExperimentView) -> tuple:
    return leaderboard_key(view.name, view.metrics)


def leaderboard_key(name: str, metrics: Mapping[str, Any]) -> tuple:
    """Sort key of the leaderboard, best first: higher test accuracy, then lower log loss, then
    name for a stable order."""
    loss = metrics.get("log_loss")
    return (-float(metrics["test_accuracy"]), float("inf") if loss is None else float(loss), name)


def _spread(values: Sequence[Any]) -> Spread | None:
    if any(v is None for v in values):
        return None
    x = np.asarray(values, dtype=np.float64)
    return Spread(float(x.mean()), float(x.std(ddof=1)) if x.size > 1 else None, float(x.min()), float(x.max()))


def _without_seed(settings: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in settings.items() if k != "seed"}


def seed_groups(experiments: Sequence[ExperimentView], defaults: Mapping[str, Any]) -> list[SeedGroup]:
    """Group experiments that differ only by `seed`; [] unless some group has 2+ distinct seeds.

    Groups are ranked by mean test accuracy, then mean log loss, then first member's name.
    """
    by_settings: dict[str, list[ExperimentView]] = {}
    for exp in sorted(experiments, key=lambda e: e.name):
        by_settings.setdefault(json.dumps(_without_seed(exp.settings), sort_keys=True), []).append(exp)
    groups = []
    for members in by_settings.values():
        per_seed: dict[int, ExperimentView] = {}
        for exp in members:  # by name, so a repeated seed keeps its first member
            per_seed.setdefault(int(exp.settings.get("seed", defaults.get("seed", 0))), exp)
        runs = [per_seed[seed] for seed in sorted(per_seed)]
        groups.append(SeedGroup(
            differs=settings_diff(_without_seed(members[0].settings), _without_seed(defaults)),
            seeds=sorted(per_seed),
            members=[exp.name for exp in members],
            accuracy=_spread([exp.metrics["test_accuracy"] for exp in runs]),
            macro_f1=_spread([exp.metrics.get("macro_f1") for exp in runs]),
            log_loss=_spread([exp.metrics.get("log_loss") for exp in runs]),
        ))
    if all(len(group.seeds) < 2 for group in groups):
        return []
    return sorted(groups, key=lambda g: (-g.accuracy.mean, float("inf") if g.log_loss is None else g.log_loss.mean,
                                         g.members[0]))


def build_view(
    *, dataset: str, experiments: Sequence[Mapping[str, Any]], defaults: Mapping[str, Any],
    provenance: Mapping[str, Any], classes: Sequence[str] | None = None,
) -> ReportView:
    """Rank the experiments and derive everything the report shows about them."""
    if not experiments:
        raise ValueError("build_report needs at least one experiment")
    names = [str(e["name"]) for e in experiments]
    if len(set(names)) != len(names):
        raise ValueError(f"experiment names must be unique, got {names}")
    views = sorted((_experiment_view(e, defaults) for e in experiments), key=_rank_key)
    best = views[0]
    for rank, view in enumerate(views, start=1):
        view.rank = rank
        if rank > 1:
            view.vs_best = accuracy_change(view.ids, view.correct, best.ids, best.correct)
    if classes is None:
        classes = best.metrics.get("classes") or [str(i) for i in range(len(best.metrics["confusion_matrix"]))]
    return ReportView(dataset=dataset, classes=[str(c) for c in classes], experiments=views, provenance=provenance,
                      seed_groups=seed_groups(views, defaults))


# Text formatters shared by the HTML and Markdown writers; None (a key the metrics lack) is "n/a".
NA = "n/a"
# A class with no test images has no scores to show.
ABSENT = "absent"


def pct(x: float | None, digits: int = 2) -> str:
    return NA if x is None else f"{100 * x:.{digits}f}%"


def ci_pct(ci: Sequence[float] | None) -> str:
    return NA if not ci else f"{100 * ci[0]:.2f}–{100 * ci[1]:.2f}%"


def num(x: float | None, digits: int = 3) -> str:
    return NA if x is None else f"{x:.{digits}f}"


def count(n: int | None) -> str:
    return NA if n is None else f"{int(n):,}"


def seconds(s: float | None) -> str:
    if s is None:
        return NA
    if s < 120:
        return f"{s:.1f} s"
    minutes, rest = divmod(round(s), 60)
    return f"{minutes} min {rest:02d} s"


def points(x: float) -> str:
    """A difference of fractions in percentage points, signed."""
    return f"{100 * x:+.2f}"


def vs_best(view: ExperimentView) -> str:
    if view.rank == 1:
        return "best"
    return change_text(view.vs_best)


def change_text(change: tuple[float, float, float] | None) -> str:
    """An accuracy_change as `+0.40 [-0.10, +0.90]` (percentage points)."""
    if change is None:
        return NA
    diff, lo, hi = change
    return f"{points(diff)} [{points(lo)}, {points(hi)}]"


def within_noise(view: ExperimentView) -> bool:
    """True when the paired interval against the best includes 0: not clearly worse."""
    return view.vs_best is not None and view.vs_best[1] <= 0 <= view.vs_best[2]


def value_text(value: Any) -> str:
    """A settings value as a user would write it in config.yaml."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def settings_text(differs: Mapping[str, Any]) -> str:
    """key=value pairs as a user would write them; "none" for no difference."""
    return ", ".join(f"{k}={value_text(v)}" for k, v in differs.items()) or "none"


def differs_text(view: ExperimentView) -> str:
    return settings_text(view.differs)


def epochs_text(view: ExperimentView) -> str:
    return epochs_run_text(view.metrics, view.settings)


def epochs_run_text(metrics: Mapping[str, Any], settings: Mapping[str, Any]) -> str:
    """Epochs run, as `7 of 20` when early stopping ended training before the planned count."""
    run = metrics.get("epochs_run")
    planned = settings.get("epochs")
    if run is None:
        return NA
    if planned is not None and int(planned) > int(run):
        return f"{int(run)} of {int(planned)}"
    return str(int(run))


LEADERBOARD_COLUMNS = (
    "Experiment", "Test accuracy (95% CI)", "vs best, pts (paired 95% CI)", "Macro F1", "Log loss",
    "Parameters", "Epochs", "Training time", "Differs from defaults",
)
VS_BEST_COLUMN = 2


def leaderboard_row(view: ExperimentView) -> list[str]:
    """The leaderboard cells of one experiment, in LEADERBOARD_COLUMNS order."""
    m = view.metrics
    return [
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


SEED_TITLE = "Repeated over seeds"
SEED_COLUMNS = (
    "Differs from defaults (seed aside)", "n seeds", "Seeds", "Test accuracy, mean ± std", "Test accuracy, min–max",
    "Macro F1, mean ± std", "Log loss, mean ± std", "Experiments",
)
SEED_MEMBERS_COLUMN = len(SEED_COLUMNS) - 1


def spread_text(spread: Spread | None, fmt: Callable[[float], str]) -> str:
    """mean ± std in the metric's own format; the mean alone for a single seed."""
    if spread is None:
        return NA
    return fmt(spread.mean) if spread.std is None else f"{fmt(spread.mean)} ± {fmt(spread.std)}"


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
