"""Damage a file as a failing disk or a stray edit would, keeping its times, so that nothing
but its content tells it from the file that was written (Snakemake compares times only)."""

from __future__ import annotations

import os
from pathlib import Path


def flip_bytes(path: Path, offset: int, count: int = 16) -> None:
    """Invert `count` bytes of `path` from `offset` (a negative offset counts from the end)."""
    path = Path(path)
    times = os.stat(path)
    data = bytearray(path.read_bytes())
    start = offset % len(data)
    for at in range(start, min(start + count, len(data))):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut `path` to the first `keep` of its bytes, as a copy that stopped half way."""
    path = Path(path)
    times = os.stat(path)
    os.truncate(path, int(path.stat().st_size * keep))
    os.utime(path, ns=(times.st_atime_ns, times.st_mtime_ns))
