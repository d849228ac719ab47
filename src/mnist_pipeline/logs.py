"""Logging for the workflow scripts: everything a stage says goes to its Snakemake log file.

A stage that fails ends its log with one line starting with FAILED, then the exception's
own message, so that the workflow can show the reason at the terminal without the traceback
(terminal.py reads it back).
"""

from __future__ import annotations

import logging
import sys
import traceback

FAILED = "FAILED: "


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
    traceback.print_exception(kind, error, tb)
    print(FAILED + failure_reason(error), file=sys.stderr, flush=True)
