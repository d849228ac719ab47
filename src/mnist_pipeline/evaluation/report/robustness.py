"""The report's "How it holds up": each experiment's accuracy on corrupted copies of the test
images (mnist_pipeline.evaluation.robustness writes one robustness.json per experiment), its words and
tables, shared by the HTML and Markdown writers. Absent when no experiment has a result.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from mnist_pipeline.evaluation.corruptions import FAMILIES, corrupt
from mnist_pipeline.evaluation.report.formatting import NA, count, pct
from mnist_pipeline.evaluation.report.view import ExperimentView

TITLE = "How it holds up"
ANCHOR = "robustness"
EXAMPLE_ID = 0  # the test image the example strip corrupts


@dataclass(frozen=True)
class RobustnessView:
    """The experiments with a result, best first, and what their results were scored on."""

    experiments: list[ExperimentView]
    families: list[str]  # in the order the results list them
    severities: list[int]
    seed: int
    n_images: int
    n_test: int


def robustness_view(experiments: Sequence[ExperimentView]) -> RobustnessView | None:
    """The section's content, or None when no experiment has a robustness result."""
    scored = [exp for exp in experiments if exp.robustness]
    if not scored:
        return None
    first = scored[0].robustness
    families = list(dict.fromkeys(f for exp in scored for f in exp.robustness["families"]))
    severities = sorted({s for exp in scored for s in exp.robustness["severities"]})
    return RobustnessView(scored, families, severities, int(first.get("seed", 0)), int(first.get("n_images", 0)),
                          int(first.get("n_test", 0)))


def corruption_examples(images: np.ndarray, view: RobustnessView) -> tuple[np.ndarray, list[str]]:
    """(uint8 (n_families, 1 + n_severities, H, W), family names): test image EXAMPLE_ID clean and
    under every family and severity the results name, with their seed; families this version
    cannot apply are left out."""
    image = np.asarray(images[EXAMPLE_ID : EXAMPLE_ID + 1], dtype=np.uint8)
    families = [family for family in view.families if family in FAMILIES]
    strips = [np.concatenate([image, *(corrupt(image, family, s, view.seed) for s in view.severities)]) for family in families]
    return np.stack(strips) if strips else np.zeros((0, 1 + len(view.severities), *image.shape[1:]), np.uint8), families


def describe(family: str) -> str:
    """What a family does, in words; its name for one this version does not know."""
    spec = FAMILIES.get(family)
    return spec.description if spec else family


def group(family: str) -> str:
    spec = FAMILIES.get(family)
    return spec.group if spec else NA


def severity_range(severities: Sequence[int]) -> str:
    return f"severity {severities[0]}" if len(severities) == 1 else f"severities {severities[0]}–{severities[-1]}"


def note(view: RobustnessView) -> str:
    images = (f"all {count(view.n_test)} test images" if view.n_images >= view.n_test
              else f"{count(view.n_images)} of the {count(view.n_test)} test images, drawn with seed {view.seed}")
    return (
        f"Accuracy on corrupted copies of {images}: {len(view.families)} corruption families after MNIST-C "
        f"(Mu and Gilmer, 2019), each at {severity_range(view.severities)}, from mild to strong. Mean corruption "
        "accuracy is the mean over every family and severity; the relative drop is how far below clean accuracy "
        "it lies, as a share of clean accuracy on the same images. Images, severities and random draws are the same "
        "for every experiment, so a gap between two experiments is the models' doing. MNIST-C's fog and spatter "
        "are left out: brightness, contrast and patches measure what they do to these images."
    )


def leaderboard_cell(exp: ExperimentView) -> tuple[str, str]:
    """(mean corruption accuracy, its drop from clean) as the leaderboard writes them."""
    result = exp.robustness
    if not result:
        return NA, ""
    drop = result.get("relative_drop")
    return pct(result["mean_corruption_accuracy"]), ("" if drop is None else f"{pct(drop, 1)} below clean")


def key_numbers(exp: ExperimentView) -> list[tuple[str, str]]:
    """The experiment's own summary of its result: the mean and the worst family."""
    if not exp.robustness:
        return []
    worst = exp.robustness["worst_family"]
    return [("Mean corruption accuracy", pct(exp.robustness["mean_corruption_accuracy"])),
            ("Worst corruption", f"{worst} ({pct(family_mean(exp, worst))})")]


def family_mean(exp: ExperimentView, family: str) -> float | None:
    values = exp.robustness["accuracy"].get(family)
    return None if values is None else sum(values) / len(values)


def worst_sentence(exp: ExperimentView) -> str:
    """The family this experiment holds up worst against, named in words."""
    result = exp.robustness
    family = result["worst_family"]
    levels = result["severities"]
    return (
        f"{exp.name} holds up worst against {family} ({describe(family)}): {pct(family_mean(exp, family), 1)} "
        f"on average over {severity_range(levels)}, against {pct(result['clean_accuracy'], 1)} on the same images clean."
    )


SUMMARY_COLUMNS = ("Experiment", "Clean accuracy", "Mean corruption accuracy", "Relative drop", "Worst family",
                   "Worst family's accuracy")


def summary_rows(view: RobustnessView) -> list[list[str]]:
    rows = []
    for exp in view.experiments:
        result = exp.robustness
        drop = result.get("relative_drop")
        worst = result["worst_family"]
        rows.append([exp.name, pct(result["clean_accuracy"]), pct(result["mean_corruption_accuracy"]),
                     NA if drop is None else pct(drop, 1), worst, pct(family_mean(exp, worst))])
    return rows


def family_columns(view: RobustnessView) -> list[str]:
    levels = " / ".join(map(str, view.severities))
    return ["Corruption", "Group", "What it does (at each severity)", *(f"{exp.name} ({levels})" for exp in view.experiments)]


def family_rows(view: RobustnessView) -> list[list[str]]:
    """One row per family: its group and description, then each experiment's accuracy at every severity."""
    rows = []
    for family in view.families:
        cells = []
        for exp in view.experiments:
            values = exp.robustness["accuracy"].get(family)
            cells.append(NA if values is None else " / ".join(f"{100 * v:.1f}" for v in values))
        rows.append([family, group(family), describe(family), *cells])
    return rows


FAMILY_TITLE = "Accuracy per corruption and severity"
FAMILY_NOTE = "Accuracy in percent at each severity, mild to strong, on the same corrupted images for every experiment."
GLOSSARY = (
    ("Mean corruption accuracy", "Accuracy on corrupted copies of the test images, averaged over every corruption "
                                 "family and severity (How it holds up); below it, how far that lies below clean "
                                 "accuracy on the same images, as a share of it."),
)
