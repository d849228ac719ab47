"""The run store: every trained model and its evaluation, kept under its run id.

Layout under results/{dataset}/:

    runs/{run}/model.npz, history.json                      written by train
    runs/{run}/metrics.json, predictions.parquet, run.json  written by evaluate (run.json last:
                                                            a folder without it is unfinished)
    runs/{run}/names/{experiment}                           empty; one per experiment name the
                                                            run was published under
    runs/current.json                                       the config the last report was built
                                                            for: its `train` defaults, and the
                                                            run each experiment uses
    {experiment}/model.npz, ... run.json                    copies of the experiment's current
                                                            run (publish): the paths README names

Copies, not links: a published file can then never alias a kept one, whatever writes to it.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import RunInProgressError
from mnist_pipeline.fileio import atomic_path, read_json, write_json
from mnist_pipeline.layout import CURRENT, RUN_FILES, STORE
from mnist_pipeline.locks import JOBS_LOCK_NAME, LOCK_NAME, claim_workdir, holder, locked_by_others
from mnist_pipeline.runstore.ids import ID_PATTERN

log = logging.getLogger(__name__)

NAMES = "names"


def store_dir(dataset_dir: str | Path) -> Path:
    return Path(dataset_dir) / STORE


def run_files(dataset_dir: str | Path, run: str) -> dict[str, str]:
    """Rule key -> path of each file of run `run` (see RUN_FILES)."""
    return {key: str(store_dir(dataset_dir) / run / leaf) for key, leaf in RUN_FILES.items()}


def is_trained(dataset_dir: str | Path, run: str) -> bool:
    """Whether run `run` has its model already (a run still to train has none)."""
    return Path(run_files(dataset_dir, run)["model"]).is_file()


def publish(inputs: Mapping[str, str | Path], outputs: Mapping[str, str | Path], experiment: str) -> None:
    """Copy a run's files (by RUN_FILES key) to the experiment's folder, and record that the
    experiment name used the run, so that its history can be told later."""
    for key in RUN_FILES:
        with atomic_path(outputs[key]) as tmp:
            shutil.copyfile(inputs[key], tmp)
    names = Path(inputs["record"]).parent / NAMES
    names.mkdir(exist_ok=True)
    (names / experiment).touch()


def write_current(path: str | Path, defaults: Mapping[str, Any], experiments: Mapping[str, str]) -> None:
    """Record which run each experiment of the config uses, and the config's `train` defaults."""
    write_json(path, {"defaults": dict(defaults), "experiments": dict(experiments)})


@dataclass
class KeptRun:
    """One finished run in the store."""

    id: str
    directory: Path
    record: dict[str, Any]  # run.json
    metrics: dict[str, Any]
    history: dict[str, Any]  # history.json: epochs, train_seconds, finished, ...
    names: list[str]  # experiment names it was published under, sorted
    current_for: list[str] = field(default_factory=list)  # experiments whose current run it is

    @property
    def settings(self) -> dict[str, Any]:
        return self.record["settings"]

    @property
    def finished(self) -> str:
        return str(self.record.get("finished") or self.history.get("finished") or "")

    @property
    def current(self) -> bool:
        return bool(self.current_for)

    @property
    def size(self) -> int:
        return folder_size(self.directory)

    def path(self, key: str) -> Path:
        return self.directory / RUN_FILES[key]


def folder_size(directory: Path) -> int:
    """Bytes of every file under `directory`."""
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def is_run_id(name: str) -> bool:
    return re.fullmatch(ID_PATTERN, name) is not None


def read_current(dataset_dir: str | Path) -> dict[str, Any]:
    """current.json ({defaults, experiments}), or an empty record when no report was built yet."""
    path = store_dir(dataset_dir) / CURRENT
    return read_json(path) if path.is_file() else {"defaults": {}, "experiments": {}}


def published_runs(dataset_dir: str | Path) -> dict[str, str]:
    """Experiment folder name -> the run its published copy came from."""
    found = {}
    for record in sorted(Path(dataset_dir).glob(f"*/{RUN_FILES['record']}")):
        run = read_json(record).get("run")
        if record.parent.name != STORE and isinstance(run, str):
            found[record.parent.name] = run
    return found


def current_runs(dataset_dir: str | Path) -> dict[str, str]:
    """Experiment -> run, for the experiments of the config last reported (or, before any
    report, for every published experiment)."""
    return read_current(dataset_dir)["experiments"] or published_runs(dataset_dir)


def protected_runs(dataset_dir: str | Path, runs: Iterable[KeptRun] = ()) -> set[str]:
    """Runs pruning must keep: those the last reported config uses, every run still published
    under an experiment folder (a newer config that has not reached its report yet), and those
    of `runs` awaiting their publish (awaiting_publish)."""
    return set(current_runs(dataset_dir).values()) | set(published_runs(dataset_dir).values()) | awaiting_publish(dataset_dir, runs)


def awaiting_publish(dataset_dir: str | Path, runs: Iterable[KeptRun]) -> set[str]:
    """The runs finished since the last report (runs/current.json) that no experiment has
    published: a workflow run publishes its runs only after it has trained and evaluated them
    (a minute later in a sweep), and one that stopped in between publishes them next time."""
    current = store_dir(dataset_dir) / CURRENT
    since = current.stat().st_mtime if current.is_file() else float("-inf")
    return {run.id for run in runs if not run.names and run.path("record").stat().st_mtime >= since}


def claim_for_pruning(workdir: str | Path, results: str | Path) -> None:
    """Take the run lock of the workflow in `workdir`, as a run of it does (locks.py), so that no
    run starts while runs are removed; until this process ends. RunInProgressError, naming the
    process, while a run is going: it may yet publish runs it has trained, or any run kept."""
    state = Path(workdir) / ".snakemake"
    busy = _busy(state)
    if busy is None:
        try:
            claim_workdir(state, results)
            return
        except RunInProgressError:  # one started since we looked
            busy = _busy(state) or "a snakemake run started"
    raise RunInProgressError(
        f"{busy} in {workdir}: it may yet publish any kept run, so nothing was pruned. Prune when it has ended."
    )


def _busy(state: Path) -> str | None:
    if locked_by_others(state / LOCK_NAME):
        pid = holder(state)
        return f"a snakemake run{f' (process {pid})' if pid else ''} is working"
    if locked_by_others(state / JOBS_LOCK_NAME):
        return f"jobs of a killed snakemake run are still running (`fuser {state / JOBS_LOCK_NAME}` lists them)"
    return None


def read_store(dataset_dir: str | Path) -> list[KeptRun]:
    """Every finished run of a dataset, newest first (by finish time, then id)."""
    store = store_dir(dataset_dir)
    current = current_runs(dataset_dir)
    runs = []
    for directory in sorted(store.iterdir()) if store.is_dir() else []:
        if not (is_run_id(directory.name) and all((directory / RUN_FILES[key]).is_file() for key in ("record", "metrics", "history"))):
            continue
        try:
            record, metrics, history = (read_json(directory / RUN_FILES[key]) for key in ("record", "metrics", "history"))
        except ValueError as error:
            # One damaged run must not hide the others, nor stop the report that lists them.
            log.warning("%s: a file of this run is not valid JSON (%s); the run is left out", directory, error)
            continue
        names = directory / NAMES
        runs.append(KeptRun(
            id=directory.name,
            directory=directory,
            record=record,
            metrics=metrics,
            history=history,
            names=sorted(path.name for path in names.iterdir()) if names.is_dir() else [],
            current_for=sorted(name for name, run in current.items() if run == directory.name),
        ))
    runs.sort(key=lambda run: run.id)
    runs.sort(key=lambda run: run.finished, reverse=True)
    return runs


def datasets(results: str | Path) -> list[str]:
    """Names of the datasets under `results` that have a run store."""
    return sorted(path.parent.name for path in Path(results).glob(f"*/{STORE}") if path.is_dir())


def earlier_runs(runs: Iterable[KeptRun], experiment: str) -> list[KeptRun]:
    """The runs once published under `experiment` that are not its current run, newest first."""
    return [run for run in runs if experiment in run.names and experiment not in run.current_for]


class RunNotFound(LookupError):
    """A run reference (id, id prefix, experiment or experiment~N) matches no kept run."""


def resolve(runs: list[KeptRun], ref: str) -> KeptRun:
    """The run `ref` names: a run id or a unique prefix of one (4+ digits), an experiment name
    (its current run, else the newest it used), or `experiment~N` (its Nth run before that)."""
    name, _, back = ref.partition("~")
    if back and not back.isdigit():
        raise RunNotFound(f"{ref!r}: after ~ comes a number of runs back, e.g. baseline~1")
    used = [run for run in runs if name in run.names or name in run.current_for]
    if used:
        current = [run for run in used if name in run.current_for]
        ordered = current + [run for run in used if run not in current]
        steps = int(back or 0)
        if steps >= len(ordered):
            raise RunNotFound(f"{ref!r}: experiment {name!r} has only {len(ordered)} kept run(s)")
        return ordered[steps]
    matches = [run for run in runs if len(ref) >= 4 and run.id.startswith(ref)]
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise RunNotFound(f"{ref!r}: ambiguous, it starts {len(matches)} run ids ({', '.join(r.id for r in matches)})")
    raise RunNotFound(f"{ref!r}: no kept run has this id (or id prefix of 4+ digits) and no experiment this name")


@dataclass(frozen=True)
class Pruned:
    removed: list[KeptRun]
    freed: int  # bytes
    kept: int


def prune(dataset_dir: str | Path, keep: int, needed: Iterable[str] = ()) -> Pruned:
    """Remove all but the newest `keep` runs per experiment name among the runs that are not
    current; a run stays when any of its names keeps it, and protected runs (protected_runs,
    and the `needed` ones: those the config makes now) always stay. Call it holding the run
    lock (claim_for_pruning), or runs a workflow run has not published yet may go."""
    if keep < 0:
        raise ValueError(f"--keep must be 0 or more, got {keep}")
    runs = read_store(dataset_dir)
    protected = protected_runs(dataset_dir, runs) | set(needed)
    candidates = [run for run in runs if run.id not in protected]
    kept_ids = set(protected)
    by_name: dict[str, list[KeptRun]] = {}
    for run in candidates:  # newest first, so each list is too
        for name in run.names or [""]:
            by_name.setdefault(name, []).append(run)
    for members in by_name.values():
        kept_ids.update(run.id for run in members[:keep])
    removed = [run for run in candidates if run.id not in kept_ids]
    for run in removed:
        # Renamed first, so that a crash half way never leaves a half-deleted run that looks kept.
        os.replace(run.directory, run.directory.with_name(f".{run.id}.pruning"))
    freed = 0
    for doomed in store_dir(dataset_dir).glob(".*.pruning"):  # this prune's, and any an interrupted one left
        freed += folder_size(doomed)
        shutil.rmtree(doomed)
    return Pruned(removed=removed, freed=freed, kept=len(runs) - len(removed))
