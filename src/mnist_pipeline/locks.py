"""One executing workflow run at a time per working directory, and a clean start after one that died.

The main snakemake process of a run that executes jobs holds an flock on
`.snakemake/mnist-pipeline.lock` for as long as it lives. The kernel drops it when the process
ends, however it ends (Ctrl-C, SIGKILL, power loss), so whoever can take it knows that no run
is going, and that what our stages left behind under results/ (temporary files) belongs to a
dead run. Snakemake's own leftovers are Snakemake's to clear, with its own mechanisms: the
workflow then calls what `--unlock` calls, and the workflow profile sets `--rerun-incomplete`.

Killing the snakemake process alone leaves its jobs running, writing the outputs a new run
would make again. So each job holds a shared lock on `.snakemake/mnist-pipeline.jobs.lock`
while it lives (join_as_job), and a new run refuses to start while any of them does.

Commands that only read (-n, --lint, --dag, --summary, --report) never claim anything: they
work beside a running run.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

from mnist_pipeline.errors import RunInProgressError

LOCK_NAME = "mnist-pipeline.lock"
JOBS_LOCK_NAME = "mnist-pipeline.jobs.lock"
# Temporary files our stages write beside their outputs, by where they sit under results/:
# the download's staging folder and its work folders, and fileio.atomic_path's files.
DEBRIS = ("*/.download", "*/.*.tmp", "*/.*.old-*", "**/.*.part")

# Lock file path -> its open descriptor: a lock taken stays held until the process ends.
_held: dict[Path, int] = {}


def claim_workdir(state_dir: str | Path, results_dir: str | Path) -> bool:
    """Take the run lock of the directory whose Snakemake state is `state_dir` and clear what a
    dead run of ours left in `results_dir`. True when this call took it, False when this process
    already held it; RunInProgressError when another run (or a job of a killed one) is going."""
    state_dir = Path(state_dir).absolute()
    lock = state_dir / LOCK_NAME
    if lock in _held:
        return False
    if not _take(lock):
        pid = holder(state_dir)
        raise RunInProgressError(
            f"another snakemake run{f' (process {pid})' if pid else ''} is working in {Path.cwd()}; one run at a"
            f" time writes to {results_dir}/. Wait for it to end, or stop it{f' (kill {pid})' if pid else ''}."
            " Commands that only read (-n, --dag, --summary, --report, --lint) work meanwhile."
        )
    if locked_by_others(state_dir / JOBS_LOCK_NAME):
        os.close(_held.pop(lock))
        raise RunInProgressError(
            f"jobs of a snakemake run that was killed are still running in {Path.cwd()}, writing to"
            f" {results_dir}/. Wait for them to end, or stop them (`fuser -k {state_dir / JOBS_LOCK_NAME}`)."
        )
    clear_dead_run(results_dir)
    return True


def join_as_job(state_dir: str | Path = ".snakemake") -> None:
    """Count this process, a job of the run working in the current directory, as part of that
    run until it ends, even if the snakemake process that started it is killed first."""
    path = Path(state_dir).absolute() / JOBS_LOCK_NAME
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


def clear_dead_run(results_dir: str | Path) -> None:
    """Remove the temporary files a run that died left under `results_dir`: call only while
    holding the run lock. A symlinked results folder is followed like any other."""
    results_dir = Path(results_dir)
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


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)
