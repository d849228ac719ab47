"""One workflow run at a time per working directory, and a clean start after one that died.

The main snakemake process holds an flock on `.snakemake/mnist-pipeline.lock` for as long as
it lives. The kernel drops it when the process ends, however it ends (Ctrl-C, SIGKILL, power
loss), so whoever can take it knows that no run is going, and that what Snakemake and our
stages left behind belongs to a dead run: Snakemake's lock files (which would stop the next
run until `--unlock`), its incomplete-output markers (`--rerun-incomplete`), the outputs
those markers name (half written) and our own temporary files under results/.

Killing the snakemake process alone leaves its jobs running, writing the outputs a new run
would make again. So each job holds a shared lock on `.snakemake/mnist-pipeline.jobs.lock`
while it lives (join_run), and a new run refuses to start while any of them does.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from base64 import urlsafe_b64decode
from pathlib import Path

from mnist_pipeline.errors import RunInProgressError

LOCK_NAME = "mnist-pipeline.lock"
JOBS_LOCK_NAME = "mnist-pipeline.jobs.lock"
# Temporary files our stages write beside their outputs, by where they sit under results/:
# the download's staging folder and its work folders, and fileio.atomic_path's files.
DEBRIS = ("*/.download", "*/.*.tmp", "*/.*.old-*", "**/.*.part")

# Lock file path -> its open descriptor: a lock taken stays held until the process ends.
_held: dict[Path, int] = {}


def claim_workdir(state_dir: str | Path, results_dir: str | Path, *, dry_run: bool = False) -> bool:
    """Take the run lock of the directory whose Snakemake state is `state_dir` and clear what a
    dead run left there and in `results_dir`. When a run (or a job of a killed one) is still
    going, raises RunInProgressError, or for a dry run returns False having changed nothing."""
    state_dir = Path(state_dir)
    if _take(state_dir / LOCK_NAME):
        if not locked_by_others(state_dir / JOBS_LOCK_NAME):
            clear_dead_run(state_dir, results_dir)
            return True
        os.close(_held.pop(state_dir / LOCK_NAME))
        if dry_run:
            return False
        raise RunInProgressError(
            f"jobs of a snakemake run that was killed are still running in {Path.cwd()}, writing to"
            f" {results_dir}/. Wait for them to end, or stop them (`fuser -k {state_dir / JOBS_LOCK_NAME}`)."
        )
    if dry_run:
        return False
    pid = holder(state_dir)
    raise RunInProgressError(
        f"another snakemake run{f' (process {pid})' if pid else ''} is working in {Path.cwd()}; one run at a"
        f" time writes to {results_dir}/. Wait for it to end, or stop it{f' (kill {pid})' if pid else ''}."
        " `snakemake --dry-run` works meanwhile."
    )


def run_in_progress(state_dir: str | Path) -> bool:
    """Whether another process holds the run lock of `state_dir`, or a job of a run is still
    going: a workflow run is writing to its results."""
    return any(path not in _held and locked_by_others(path) for path in (Path(state_dir) / LOCK_NAME, Path(state_dir) / JOBS_LOCK_NAME))


def join_run(state_dir: str | Path = ".snakemake") -> None:
    """Count this process, a job of the run working in the current directory, as part of that
    run until it ends, even if the snakemake process that started it is killed first."""
    path = Path(state_dir) / JOBS_LOCK_NAME
    if path in _held or not path.parent.is_dir():
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a new run checks for jobs, a moment
    except OSError:  # a filesystem without locks: the job runs all the same
        os.close(fd)
        return
    _held[path] = fd


def holder(state_dir: str | Path) -> int | None:
    """The process id the lock holder wrote, if it is there."""
    try:
        return int((Path(state_dir) / LOCK_NAME).read_text().strip())
    except (OSError, ValueError):
        return None


def clear_dead_run(state_dir: str | Path, results_dir: str | Path) -> None:
    """Remove what a run that died left: call only while holding the run lock."""
    state_dir, results_dir = Path(state_dir), Path(results_dir)
    shutil.rmtree(state_dir / "locks", ignore_errors=True)
    _redo_incomplete(state_dir / "incomplete")
    for pattern in DEBRIS:
        for path in results_dir.glob(pattern) if results_dir.is_dir() else []:
            _remove(path)


def locked_by_others(path: Path) -> bool:
    """Whether some process holds a lock on `path` (then it cannot be locked exclusively)."""
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # also releases the lock if it was taken
    return False


def _take(path: Path) -> bool:
    if path in _held:
        return True
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return False
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    _held[path] = fd
    return True


def _redo_incomplete(markers: Path) -> None:
    """What `--rerun-incomplete` does, done up front: delete each output a dead job had begun
    (so that it is made again) and its marker. A marker that names an external (cluster) job
    is left to Snakemake, which may still find that job running."""
    if not markers.is_dir():
        return
    workdir = Path.cwd().resolve()
    for marker in [p for p in markers.rglob("*") if p.is_file()]:
        output = _marked_output(marker, markers)
        if output is None or _external_job(marker):
            continue
        target = (workdir / output).resolve()
        if target == workdir or workdir not in target.parents:
            continue  # only outputs of this working directory
        _remove(target)
        marker.unlink(missing_ok=True)


def _marked_output(marker: Path, markers: Path) -> str | None:
    # Snakemake names a marker by the urlsafe base64 of the output's path, split into
    # folder-sized pieces; every piece but the last starts with "@".
    pieces = [part.removeprefix("@") for part in marker.relative_to(markers).parts]
    try:
        return urlsafe_b64decode("".join(pieces)).decode()
    except (ValueError, UnicodeDecodeError):
        return None  # not a marker (Snakemake's own migration flag, say)


def _external_job(marker: Path) -> bool:
    try:
        return bool(json.loads(marker.read_text() or "{}").get("external_jobid"))
    except (OSError, ValueError, AttributeError):
        return False


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
