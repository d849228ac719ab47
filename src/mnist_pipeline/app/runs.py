"""The app's Snakemake runs, seen from the app: start one, follow it, stop it, explain a failure.

A run is a detached `mnist_pipeline.app.runner` process (see there); everything the page shows
is read back from files, so the page can be left, reloaded or opened in a second tab:

    results/.app/run.json     the last run: experiment, targets, pid, started, state, returncode
    results/.app/run.log      Snakemake's output
    results/{dataset}/runs/{run}/train.log   the train job's log: one line per epoch
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mnist_pipeline.app.runner import LOCK
from mnist_pipeline.app.workflow import Workflow
from mnist_pipeline.fileio import read_json
from mnist_pipeline.runlock import locked_by_others
from mnist_pipeline.runs import store_dir

STATE_DIR = ".app"
# nn/train.py logs each epoch as "epoch 3/20: train loss 0.5123 accuracy 0.8150, val loss 0.4702 accuracy 0.8322, lr ...".
EPOCH_LINE = re.compile(
    r"epoch (?P<epoch>\d+)/(?P<epochs>\d+): train loss (?P<train_loss>\S+) accuracy (?P<train_accuracy>[^,\s]+), "
    r"val loss (?P<val_loss>\S+) accuracy (?P<val_accuracy>[^,\s]+)"
)
# The workflow's line at the start of a run (terminal.training_plan_text).
PLAN_LINE = re.compile(r"^Run (?P<run>\w+) trains experiment\(s\): (?P<names>.+)$", re.MULTILINE)
STEPS_LINE = re.compile(r"(\d+) of (\d+) steps \(\d+%\) done")
FAILED_JOB_LOG = re.compile(r"^\s*log: (\S+) \(check log file\(s\) for error details\)", re.MULTILINE)
NOTHING_TO_DO = "Nothing to be done"
TAIL_LINES = 20
# Processes this app started, kept so that they are reaped when they end (no zombies).
_children: list[subprocess.Popen] = []


def snakemake_command(targets: list[str], cores: int | None = None) -> list[str]:
    # --rerun-incomplete: a stopped run leaves its job's outputs marked incomplete; the next run redoes them.
    return [sys.executable, "-m", "snakemake", "--cores", str(cores or os.cpu_count() or 1), "--rerun-incomplete", *targets]


def epochs_in_log(text: str) -> list[dict[str, Any]]:
    """The epochs a train log reports so far: epoch, epochs, train/val loss and accuracy per line."""
    rows = []
    for match in EPOCH_LINE.finditer(text):
        row = {key: float(value) for key, value in match.groupdict().items()}
        row["epoch"], row["epochs"] = int(row["epoch"]), int(row["epochs"])
        rows.append(row)
    return rows


def steps_done(output: str) -> tuple[int, int] | None:
    """(done, total) of the last Snakemake progress line, None before the first job ends."""
    found = STEPS_LINE.findall(output)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def failure_reason(output: str, workdir: Path) -> str:
    """Why a run failed: the end of the failed job's log, which says what was wrong, after the
    lines where Snakemake names the job; without a failed job (a config refused before any job
    started) the end of Snakemake's own output."""
    logs = FAILED_JOB_LOG.findall(output)
    if not logs:
        return tail(output)
    start = output.find("Error in rule")
    parts = [output[start:].splitlines()[0] if start >= 0 else ""]
    for log in dict.fromkeys(logs):
        path = workdir / log
        parts.append(f"{log}:\n" + (tail(path.read_text(encoding="utf-8", errors="replace")) if path.is_file() else "(no log written)"))
    return "\n\n".join(part for part in parts if part)


@dataclass(frozen=True)
class Run:
    """What run.json says about the last run, and whether its runner still holds the lock."""

    record: dict[str, Any]
    alive: bool

    @property
    def state(self) -> str:
        """running, done, failed, stopped, or lost (the runner died without recording an outcome)."""
        if self.record["state"] == "running" and not self.alive:
            return "lost"
        return self.record["state"]

    @property
    def experiment(self) -> str:
        return self.record["experiment"]


class Runs:
    """The app runs of one workflow (one results directory)."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.state_dir = workflow.results / STATE_DIR

    def busy(self) -> bool:
        """Whether a run holds the lock now."""
        return locked_by_others(self.state_dir / LOCK)

    def last(self) -> Run | None:
        path = self.state_dir / "run.json"
        if not path.is_file():
            return None
        return Run(read_json(path), self.busy())

    def output(self) -> str:
        path = self.state_dir / "run.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""

    def start(self, experiment: str, targets: list[str], *, title: str = "", cores: int | None = None, timeout: float = 30.0) -> Run:
        """Start Snakemake on `targets` in a detached runner; return once it holds the lock.
        `experiment` is the one it trains ("" for a run that trains none, described by `title`).

        Raises RuntimeError when another run holds it (the runner then exits at once)."""
        for child in list(_children):
            if child.poll() is not None:
                _children.remove(child)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        spec = {"id": uuid.uuid4().hex, "experiment": experiment, "title": title or experiment, "targets": targets, "state_dir": str(self.state_dir),
                "workdir": str(self.workflow.workdir), "command": snakemake_command(targets, cores)}
        with open(self.state_dir / "runner.log", "w", encoding="utf-8") as log:
            child = subprocess.Popen([sys.executable, "-m", "mnist_pipeline.app.runner", json.dumps(spec)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True, cwd=self.workflow.workdir)
        _children.append(child)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.last()
            if run is not None and run.record["id"] == spec["id"]:
                return run
            if child.poll() is not None:
                why = (self.state_dir / "runner.log").read_text(encoding="utf-8", errors="replace").strip()
                raise RuntimeError(f"the run did not start: {why or f'exit status {child.returncode}'}")
            time.sleep(0.05)
        raise RuntimeError(f"the run did not start within {timeout:.0f} s (see {self.state_dir / 'runner.log'})")

    def stop(self) -> bool:
        """Ask the running run to stop, as Ctrl-C would; False when none is running."""
        run = self.last()
        if run is None or run.state != "running":
            return False
        try:
            os.killpg(run.record["pid"], signal.SIGINT)
        except ProcessLookupError:
            return False
        return True

    def train_log(self, dataset: str, experiment: str) -> Path | None:
        """The train rule's `log:` (workflow/rules/train.smk) of the run that trains
        `experiment`, whose id the workflow prints as the run starts; None before that, or
        when this run trains nothing for it."""
        for match in PLAN_LINE.finditer(self.output()):
            if experiment in match["names"].split(", "):
                return store_dir(self.workflow.results / dataset) / match["run"] / "train.log"
        return None

    def epochs(self, run: Run, dataset: str) -> list[dict[str, Any]]:
        """The epochs the run's experiment has finished: from its train log when this run wrote
        it, else from the history.json of the model it left (trained before, nothing to redo)."""
        log = self.train_log(dataset, run.experiment)
        if log is not None and log.is_file() and log.stat().st_mtime >= run.record["started"]:
            return epochs_in_log(log.read_text(encoding="utf-8", errors="replace"))
        history = self.workflow.results / dataset / run.experiment / "history.json"
        if not history.is_file():
            return []
        rows = read_json(history)["epochs"]
        return [{**row, "epochs": len(rows)} for row in rows]
