"""What the workflow prints when a run starts (the training plan, warnings) and when it ends:
why each failed stage failed, or the best experiments and where the report is. Snakemake itself
shows only "message: None" and a log path for a failed job, and nothing of what a finished run
achieved."""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterable, Mapping
from pathlib import Path

from mnist_pipeline.data.datasets import get_dataset
from mnist_pipeline.runstore.store import is_trained
from mnist_pipeline.workflow.logs import FAILED

SHOWN_EXPERIMENTS = 3


def failed_logs(log_dir: str | Path, since: float) -> list[tuple[str, Path, str]]:
    """(stage, log path, reason) for every stage log under `log_dir` written at or after `since` (a
    time.time() value) whose stage failed, in stage order; the stage is the log's path
    under `log_dir` without `.log` (and without a leading `logs/`), such as `download` or
    `runs/3f2a9c01d4e7/train`."""
    log_dir = Path(log_dir)
    found = []
    for log in sorted(log_dir.rglob("*.log")) if log_dir.is_dir() else []:
        # A second of slack: some filesystems keep whole-second times.
        if log.stat().st_mtime < since - 1:
            continue
        text = log.read_text(encoding="utf-8", errors="replace")
        at = text.rfind("\n" + FAILED)
        if at >= 0 or text.startswith(FAILED):
            stage = log.relative_to(log_dir).with_suffix("")
            # A dataset's stage logs sit in logs/, a run's in runs/<id>/: "download", "runs/<id>/train".
            if stage.parts[0] == "logs":
                stage = stage.relative_to("logs")
            found.append((stage.as_posix(), log, text[at + 1 + len(FAILED) :].strip()))
    return found


def failure_text(log_dir: str | Path, since: float) -> str:
    """The failure reasons as lines for the terminal, or "" when no stage recorded one."""
    failed = failed_logs(log_dir, since)
    if not failed:
        return ""
    lines = ["", "Why it failed:"]
    for stage, log, reason in failed:
        lines.append(f"  {stage} ({log}):")
        lines.append(textwrap.indent(reason, "    "))
    return "\n".join(lines) + "\n"


def training_plan_text(dataset_dir: str | Path, runs: Mapping[str, Mapping]) -> str:
    """One line per run that has no model yet: its id and the experiments it serves; "" when
    every run is trained. `runs` maps experiment name -> run record (with its "run" id)."""
    names_of: dict[str, list[str]] = {}
    for name, record in runs.items():
        if not is_trained(dataset_dir, record["run"]):
            names_of.setdefault(record["run"], []).append(name)
    return "".join(f"Run {run} trains experiment(s): {', '.join(names)}\n" for run, names in names_of.items())


def flip_warning_text(dataset: str, runs: Mapping[str, Mapping]) -> str:
    """A warning naming the experiments that mirror images (augment_flip) of a known dataset
    whose classes a mirror changes (digits, characters); "" when there are none."""
    spec = get_dataset(dataset)
    if spec is None or spec.mirror_keeps_class:
        return ""
    names = [name for name, record in runs.items() if record["settings"].get("augment_flip")]
    if not names:
        return ""
    return (
        f"Warning: experiment(s) {', '.join(names)} set augment_flip on {dataset}, whose classes a mirror "
        f"changes (a mirrored digit or character is not one); flips are for datasets such as fashion-mnist, "
        f"and here they usually cost accuracy\n"
    )


def summary_text(results: str | Path, dataset: str, experiments: Iterable[str]) -> str:
    """The leaderboard's best lines and the report's path, or "" when the run did not get as
    far as the report."""
    from mnist_pipeline.evaluation.report.comparison import leaderboard_key  # the report's own order

    base = Path(results) / dataset
    report = base / "report.html"
    names = list(experiments)
    files = [base / name / "metrics.json" for name in names]
    if not report.is_file() or not all(f.is_file() for f in files):
        return ""
    metrics = {name: json.loads(f.read_text(encoding="utf-8")) for name, f in zip(names, files, strict=False)}
    ranked = sorted(metrics, key=lambda name: leaderboard_key(name, metrics[name]))
    width = max(len(name) for name in ranked[:SHOWN_EXPERIMENTS])
    heading = f"Best of {len(ranked)} experiments on {dataset}" if len(ranked) > 1 else f"The experiment on {dataset}"
    lines = ["", f"{heading} (test accuracy, validation accuracy):"]
    for rank, name in enumerate(ranked[:SHOWN_EXPERIMENTS], start=1):
        m = metrics[name]
        lines.append(f"  {rank}. {name:<{width}}  {m['test_accuracy']:7.2%}  {m['val_accuracy']:7.2%}")
    if len(ranked) > SHOWN_EXPERIMENTS:
        lines.append(f"  ... and {len(ranked) - SHOWN_EXPERIMENTS} more on the report's leaderboard")
    lines.append(f"Report: {report} (and {report.with_suffix('.md').name} beside it)")
    return "\n".join(lines) + "\n"
