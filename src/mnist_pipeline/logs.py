"""Logging for the workflow scripts: everything a stage says goes to its Snakemake log file."""

from __future__ import annotations

import logging
import sys


def log_to(path: str) -> None:
    """Send stderr (tracebacks, warnings) and the package's log records to `path`."""
    sys.stderr = open(path, "w", buffering=1, encoding="utf-8")  # noqa: SIM115 - lives as long as the job
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s", force=True)
