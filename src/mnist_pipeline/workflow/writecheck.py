"""Whether a run can write where its jobs will, asked when it starts, before any job.

Snakemake removes a job's old outputs itself, just before the job runs, and a folder that
refuses (write-protected, immutable, on a read-only mount) stops it there with a traceback of
its own: after the training before it has run, with no word on what to fix. Asked first, the
same folder is one line naming it and what to do, and nothing has run.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

# os.access asks for the effective user where it can, as the jobs' writes will.
_EFFECTIVE = os.access in os.supports_effective_ids


@dataclass(frozen=True)
class Unwritable:
    """A path the run must change and cannot: a folder it must make or remove files in, or a
    file it must replace; `stages` are the jobs' rules that write there."""

    path: Path
    stages: tuple[str, ...]


def unwritable(targets: Iterable[tuple[str, str | os.PathLike]]) -> list[Unwritable]:
    """The paths among those that `targets` ((stage, path it writes) pairs: outputs, logs and
    benchmarks of the jobs to run) need changed and cannot be: the folder each goes in (or its
    nearest existing ancestor: Snakemake makes the rest), and, for an existing folder output,
    every folder and file under it (it is removed whole). Sorted by path, stages by name."""
    stages_of: dict[Path, set[str]] = {}
    for stage, target in targets:
        for path in _changed_by(Path(target)):
            stages_of.setdefault(path, set()).add(stage)
    return [Unwritable(path, tuple(sorted(stages_of[path]))) for path in sorted(stages_of) if not _can_change(path)]


def unwritable_text(problems: Iterable[Unwritable]) -> str:
    """The problems as lines for the terminal, ending the run as a failed stage's reasons do."""
    lines = ["", "Why it failed:"]
    for problem in problems:
        kind = "folder" if problem.path.is_dir() else "file"
        lines.append(f"  {', '.join(problem.stages)} ({problem.path}):")
        lines.append(
            f"    this {kind} is write-protected (or immutable, or on a read-only mount), and the run must change it."
            " Make it writable (chmod u+w; chattr -i if lsattr shows an i) and run again. No job was started."
        )
    return "\n".join(lines) + "\n"


def _changed_by(target: Path) -> Iterable[Path]:
    if target.is_dir() and not target.is_symlink():
        yield target.parent
        for folder, _, files in os.walk(target):
            yield Path(folder)
            yield from (Path(folder) / name for name in files)
        return
    folder = target.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    yield folder


def _can_change(path: Path) -> bool:
    # A folder needs write (and search) permission for files to be made and removed in it; a
    # file under a folder output needs it too, since an immutable file cannot be removed.
    mode = os.W_OK | os.X_OK if path.is_dir() else os.W_OK
    return os.access(path, mode, effective_ids=_EFFECTIVE)
