"""Telling a file a stage reads back from the one the stage before wrote.

Each artifact a stage hands on (parsed arrays, prepared splits, a run's files) carries a
digest beside it: `<file>.sha256`, one line in `sha256sum` format, written by fileio right
after the file itself (`atomic_path(..., seal=True)`). A reader passes the file through
`verified` before using it, so a flipped bit, a truncation or an edit is refused, naming the
file and how to rebuild it, instead of training on wrong pixels or labels. Snakemake cannot
see such damage: it compares times, and a changed file may keep its mtime.

Hashing reads the whole file once (the reader then finds it in the page cache), at 1-1.5 GB/s
on a 2-core VM: 33 ms for Fashion-MNIST's largest artifact, parsed/train-images.npy (47 MB),
24 ms for prepared/train.parquet (25 MB), against 1.5 s to decode that split.
"""

from __future__ import annotations

import hashlib
import re
import shlex
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import ChecksumError, PipelineError

DIGEST_SUFFIX = ".sha256"
_DIGEST_LINE = re.compile(r"([0-9a-f]{64})  \S.*\n")


def digest_path(path: str | Path) -> Path:
    """Where the digest of `path` is kept: beside it, named `<file name>.sha256`."""
    path = Path(path)
    return path.with_name(path.name + DIGEST_SUFFIX)


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of the bytes of `path`."""
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def digest_line(path: str | Path, digest: str) -> str:
    """The digest file's text: `sha256sum -c` checks it, run in the file's folder."""
    return f"{digest}  {Path(path).name}\n"


def rebuild_hint(path: str | Path) -> str:
    """How to get a good copy of a workflow file: deleted, it is an output Snakemake is missing,
    so the next run remakes it with the job that wrote it (and reruns what was built from it)."""
    return (
        f"to rebuild it, delete it and run the workflow again: rm {shlex.quote(str(path))} && snakemake --cores 4"
        " (with the --config or --configfile you ran it with)"
    )


def verified(path: str | Path) -> Path:
    """`path`, once its bytes are found to be the ones its writer recorded in its digest file.

    ChecksumError naming the file, and how to rebuild it, when they differ, when there is no
    digest file, or when the digest file is not one; FileNotFoundError when there is no file.
    """
    path = Path(path)
    sidecar = digest_path(path)
    try:
        recorded = sidecar.read_bytes()
    except FileNotFoundError:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such file") from None
        raise ChecksumError(
            f"{path}: cannot be checked: it has no digest file {sidecar.name} beside it, so a corrupted or changed copy"
            f" could not be told from the one the pipeline wrote; {rebuild_hint(path)}"
        ) from None
    match = _DIGEST_LINE.fullmatch(recorded.decode("ascii", errors="replace"))
    if match is None:
        raise ChecksumError(f"{path}: corrupted: its digest file {sidecar.name} is not one SHA-256 line; {rebuild_hint(path)}")
    actual = file_digest(path)
    if actual != match.group(1):
        raise ChecksumError(
            f"{path}: corrupted: its bytes changed since it was written (SHA-256 {actual[:16]}..., but {sidecar.name}"
            f" recorded {match.group(1)[:16]}...); {rebuild_hint(path)}"
        )
    return path


def check_class_indices(labels: Any, n_classes: int | None, source: str | Path, error: type[PipelineError]) -> None:
    """`error` naming `source` unless every label is a class index, 0 <= label < n_classes
    (only 0 <= label when the classes are not known)."""
    import numpy as np  # here, so that fileio, which imports this module, stays light

    labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        raise error(f"{source}: labels are {labels.dtype}, expected integer class indices; {rebuild_hint(source)}")
    stray = labels < 0 if n_classes is None else (labels < 0) | (labels >= n_classes)
    if stray.any():
        at = int(np.flatnonzero(stray)[0])
        allowed = "is negative" if n_classes is None else f"is outside the class range [0, {n_classes})"
        raise error(
            f"{source}: corrupted: label {int(labels[at])} at row {at} {allowed} ({int(stray.sum())} such labels);"
            f" {rebuild_hint(source)}"
        )
