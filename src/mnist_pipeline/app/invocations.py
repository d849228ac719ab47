"""The app's Snakemake invocations (not "runs": a run is a trained model), seen from the app:
start one, follow it, stop it, explain a failure.

A run is a detached `mnist_pipeline.app.runner` process (see there); everything the page shows
is read back from files, so the page can be left, reloaded or opened in a second tab:

    results/.app/run.json     the last run: experiment, targets, pid, started, state, returncode
    results/.app/run.log      Snakemake's output, shown as it is
    results/{dataset}/runs/planned.json, runs/{run}/progress.jsonl
                              which run trains which experiment, and its epochs (progress.py)
    results/{dataset}/**/*.log                     each stage's log, ending in FAILED: if it failed
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
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from mnist_pipeline.app.runner import LOCK, hold_lock
from mnist_pipeline.errors import RunInProgressError
from mnist_pipeline.fileio import read_json
from mnist_pipeline.layout import DatasetLayout
from mnist_pipeline.locks import locked_by_others
from mnist_pipeline.workflow.checkout import Workflow
from mnist_pipeline.workflow.progress import planned_run, read_epochs
from mnist_pipeline.workflow.terminal import failure_text

STATE_DIR = ".app"
# Snakemake's own progress line and its word for a run with nothing to do: the only things read
# from its output, which has no other record of them.
STEPS_LINE = re.compile(r"(\d+) of (\d+) steps \(\d+%\) done")
NOTHING_TO_DO = "Nothing to be done"
TAIL_LINES = 20
# Processes this app started, kept so that they are reaped when they end (no zombies).
_children: list[subprocess.Popen] = []


def snakemake_command(targets: list[str], cores: int | None = None, data: Mapping[str, Any] | None = None) -> list[str]:
    """The command a user would type: `data` ({dataset, source}) goes in as --config values."""
    config = ["--config", *(f"{key}={json.dumps(value)}" for key, value in data.items())] if data else []
    # --rerun-incomplete: a stopped run leaves its job's outputs marked incomplete; the next run redoes them.
    return [sys.executable, "-m", "snakemake", "--cores", str(cores or os.cpu_count() or 1), "--rerun-incomplete", *config,
            "--", *targets]


def steps_done(output: str) -> tuple[int, int] | None:
    """(done, total) of the last Snakemake progress line, None before the first job ends."""
    found = STEPS_LINE.findall(output)
    return (int(found[-1][0]), int(found[-1][1])) if found else None


def tail(text: str, lines: int = TAIL_LINES) -> str:
    return "\n".join([line for line in text.splitlines() if line.strip()][-lines:])


def why_it_failed(output: str, dataset_dir: Path, since: float) -> str:
    """Why a run failed: each failed stage's own reason (the FAILED line its log ends with, as
    the terminal shows them), or without one (a config refused before any job started) the
    end of Snakemake's output."""
    return failure_text(dataset_dir, since).strip() or tail(output)


@dataclass(frozen=True)
class Invocation:
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


class Invocations:
    """The app's Snakemake invocations in one workflow (one results directory)."""

    def __init__(self, workflow: Workflow) -> None:
        self.workflow = workflow
        self.state_dir = workflow.results / STATE_DIR

    def busy(self) -> bool:
        """Whether a run holds the lock now."""
        return locked_by_others(self.state_dir / LOCK)

    def last(self) -> Invocation | None:
        path = self.state_dir / "run.json"
        if not path.is_file():
            return None
        return Invocation(read_json(path), self.busy())

    def output(self) -> str:
        path = self.state_dir / "run.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""

    @contextmanager
    def locked(self) -> Iterator[TextIO]:
        """The app's run lock, held while the body changes what a run would read (experiments.yaml).
        Raises RunInProgressError, having done nothing, when a run holds it."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        lock = hold_lock(self.state_dir / LOCK)
        if lock is None:
            raise RunInProgressError("a run is in progress: wait for it to finish, or stop it, then try again")
        try:
            yield lock
        finally:
            lock.close()

    def start(self, experiment: str, targets: list[str], *, title: str = "", cores: int | None = None,
              data: Mapping[str, Any] | None = None, prepare: Callable[[], Any] | None = None, timeout: float = 30.0) -> Invocation:
        """Start Snakemake on `targets` in a detached runner; return once it runs. `experiment` is
        the one it trains ("" for a run that trains none, described by `title`); `data` the
        dataset and source to run on, when not config.yaml's.

        `prepare` (writing experiments.yaml, say) runs under the same lock that the runner then
        holds for the whole run: nothing can be written or started in between, and when another
        run holds the lock, RunInProgressError is raised before `prepare` writes anything. Whatever
        `prepare` raises stops the start. RuntimeError when the runner does not start."""
        for child in list(_children):
            if child.poll() is not None:
                _children.remove(child)
        with self.locked() as lock:
            if prepare is not None:
                prepare()
            spec = {"id": uuid.uuid4().hex, "experiment": experiment, "title": title or experiment, "targets": targets,
                    "state_dir": str(self.state_dir), "workdir": str(self.workflow.workdir),
                    "command": snakemake_command(targets, cores, data), "lock_fd": lock.fileno()}
            with open(self.state_dir / "runner.log", "w", encoding="utf-8") as log:
                child = subprocess.Popen([sys.executable, "-m", "mnist_pipeline.app.runner", json.dumps(spec)],
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True, cwd=self.workflow.workdir, pass_fds=[lock.fileno()])
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

    def progress_file(self, invocation: Invocation, dataset: str) -> Path | None:
        """The epoch records of the run that `invocation` set out to train for its experiment, from the
        plan the workflow wrote as it started; None before that, or when it trains nothing."""
        layout = DatasetLayout(self.workflow.results, dataset)
        plan = Path(layout.planned)
        if not plan.is_file() or plan.stat().st_mtime < invocation.record["started"] - 1:
            return None
        trained = planned_run(plan, invocation.experiment)
        return None if trained is None else Path(layout.progress(trained))

    def epochs(self, invocation: Invocation, dataset: str) -> list[dict[str, Any]]:
        """The epochs the invocation's experiment has finished: from the records its training
        writes, else from the history.json of the model it left (trained before, nothing to redo)."""
        progress = self.progress_file(invocation, dataset)
        if progress is not None:
            return read_epochs(progress)
        history = Path(DatasetLayout(self.workflow.results, dataset).experiment(invocation.experiment, "history.json"))
        if not history.is_file():
            return []
        rows = read_json(history)["epochs"]
        return [{**row, "epochs": len(rows)} for row in rows]
