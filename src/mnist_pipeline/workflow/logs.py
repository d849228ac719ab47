"""Logging for the workflow scripts: everything a stage says goes to its Snakemake log file.

A stage that fails ends its log with one line starting with FAILED, then the exception's
own message, so that the workflow can show the reason at the terminal without the traceback
(terminal.py reads it back). That holds on a full disk too, where the log itself cannot grow.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback

FAILED = "FAILED: "
# The longest reason written when the log has to make room for it (see _make_room).
MAX_REASON = 2000


def log_to(path: str) -> None:
    """Send stderr (tracebacks, warnings) and the package's log records to `path`."""
    sys.stderr = open(path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
    sys.excepthook = _log_failure


def echo_to_terminal(logger: str, prefix: str) -> None:
    """Also show the records of `logger` on the job's own stderr (the terminal Snakemake runs
    in, or a cluster job's output file), each line led by `prefix`."""
    handler = logging.StreamHandler(sys.__stderr__)
    handler.setFormatter(logging.Formatter(f"{prefix}%(message)s"))
    logging.getLogger(logger).addHandler(handler)


def failure_reason(error: BaseException) -> str:
    """The exception in its own words: its type, then its message."""
    return f"{type(error).__name__}: {error}" if str(error) else type(error).__name__


def _log_failure(kind: type[BaseException], error: BaseException, tb) -> None:
    """The traceback and the FAILED line, in the log. When the log cannot take them (a full
    disk, a quota), its last lines make room for the FAILED line, and failing that the line
    goes to the job's own stderr. Never an error here: Python would print that one instead,
    as "Error in sys.excepthook ... lost sys.stderr", and the reason would be lost."""
    line = FAILED + failure_reason(error)
    try:
        traceback.print_exception(kind, error, tb)
        print(line, file=sys.stderr, flush=True)
        return
    except Exception as write_error:  # an OSError, most likely ENOSPC
        refused = getattr(write_error, "strerror", None) or str(write_error)
    log, sys.stderr = sys.stderr, sys.__stderr__
    # Closed first: its unwritten lines must not land after what _make_room writes.
    with contextlib.suppress(Exception):
        log.close()
    path = getattr(log, "name", None)
    if not (isinstance(path, str) and _make_room(path, refused, line)):
        with contextlib.suppress(Exception):
            print(line, file=sys.__stderr__, flush=True)


def _make_room(path: str, refused: str, line: str) -> bool:
    """Cut the log at a block boundary far enough back that the blocks freed hold a note and
    `line` (cut to MAX_REASON characters), and write them there; the whole log goes if that
    is not enough. False when even that cannot be written."""
    if len(line) > MAX_REASON:
        line = line[:MAX_REASON] + "..."
    text = f"\n(the log could not take more: {refused}; its last lines were cut to make room for the reason)\n{line}\n".encode()
    try:
        fd = os.open(path, os.O_WRONLY)
    except OSError:
        return False
    try:
        stat = os.fstat(fd)
        block = stat.st_blksize or 4096
        for keep in dict.fromkeys((max(0, stat.st_size - len(text)) // block * block, 0)):
            try:
                os.ftruncate(fd, keep)
                os.lseek(fd, keep, os.SEEK_SET)
                written = 0
                while written < len(text):
                    written += os.write(fd, text[written:])
                return True
            except OSError:
                continue
        return False
    finally:
        os.close(fd)
