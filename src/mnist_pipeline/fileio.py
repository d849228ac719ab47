"""Writing files so that a crash, a full disk or a Ctrl-C never leaves a half-written one.

Everything the package writes goes to a temporary file beside its destination and is renamed
over it only when complete: the rename is atomic on POSIX, so a reader (or the next Snakemake
stage) sees either the old file or the new one, never a mixture.

A file another stage reads back is also sealed: its digest goes beside it (`seal=True`, see
integrity.py), and the readers here that take `verify=True`, or always verify, refuse it when
its bytes are no longer the ones written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mnist_pipeline.errors import ChecksumError
from mnist_pipeline.integrity import digest_line, digest_path, file_digest, rebuild_hint, verified


@contextmanager
def atomic_path(path: str | Path, *, seal: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed.

    seal: also write the digest of what was written to `path`.sha256, right after `path` (see
    integrity.py): hashed from the temporary file, so it is of exactly the bytes written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    # mkstemp makes the file private (0600); give it the mode any other new file would get.
    os.fchmod(fd, 0o666 & ~_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        digest = file_digest(tmp) if seal else None
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    if digest is not None:
        # Two renames cannot be one: a crash between them leaves the old digest beside the new
        # file, which the reader refuses as changed, and Snakemake reruns the job that was cut short.
        _write_digest(path, digest)


def seal(path: str | Path) -> None:
    """Write the digest of `path` as it is now beside it, for a file written by code that does
    not seal its own (a model file: nn.modelfile writes it)."""
    _write_digest(path, file_digest(path))


def _write_digest(path: Path, digest: str) -> None:
    with atomic_path(digest_path(path)) as tmp:
        tmp.write_text(digest_line(path, digest), encoding="ascii")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_json(path: str | Path, data: Any, *, seal: bool = False) -> None:
    """Deterministic JSON: sorted keys, fixed indentation, trailing newline."""
    with atomic_path(path, seal=seal) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n", encoding="utf-8")


def read_json(path: str | Path, *, verify: bool = False) -> Any:
    """The JSON value in `path`; verify: refuse it unless its digest says it is as written (a
    ChecksumError, naming it)."""
    if verify:
        verified(path)
        try:
            return json.loads(Path(path).read_text(encoding="utf-8"))
        except ValueError as exc:  # its digest matches, so whatever wrote and sealed it was not write_json
            raise ChecksumError(f"{path}: corrupted: not JSON ({exc}); {rebuild_hint(path)}") from None
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def save_array(path: str | Path, array: Any, *, seal: bool = False) -> None:
    """np.save, atomically. The .npy format has no timestamps, so equal arrays give equal bytes."""
    import numpy as np

    with atomic_path(path, seal=seal) as tmp, open(tmp, "wb") as handle:
        np.save(handle, np.ascontiguousarray(array), allow_pickle=False)


def load_array(path: str | Path, mmap_mode: str | None = "r") -> Any:
    """An array `save_array(..., seal=True)` wrote, once verified (memory-mapped by default);
    ChecksumError naming the file for one that is not as written or not a .npy file."""
    import numpy as np

    verified(path)
    try:
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ChecksumError(f"{path}: corrupted: not a readable .npy array ({exc}); {rebuild_hint(path)}") from None


def copy_sealed(source: str | Path, destination: str | Path) -> None:
    """Copy a sealed file, checked, to `destination`, sealed in turn: a copy of a corrupted file
    is refused, never given a fresh digest."""
    verified(source)
    with atomic_path(destination, seal=True) as tmp:
        shutil.copyfile(source, tmp)
