"""What determines a trained model, and the run id that names it.

A run is one training of one set of settings on one prepared dataset by one version of the
training code. Its id is a digest of exactly those three things, computed when Snakemake
builds the job graph (from the config and the code on disk, before any job runs), so that
settings trained before map to the folder their model is already in.

The prepared data is identified by what makes it: the dataset (a known dataset's content is
fixed by its published checksums, whatever the source), for a custom dataset its source and
the digests of its local files, the `prepare` settings, and the code of the stages that
download, parse and prepare it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mnist_pipeline.data.datasets import get_dataset

ID_LENGTH = 12  # hex digits: 48 bits, no collision among any plausible number of runs
ID_PATTERN = f"[0-9a-f]{{{ID_LENGTH}}}"


def file_digest(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def data_identity(
    *, dataset: str, prepare: Mapping[str, Any], code: str, source: str | None = None,
    checksums: Mapping[str, str] | None = None, source_files: Iterable[str | Path] = (),
) -> dict[str, Any]:
    """What the prepared splits are made from, as a JSON-ready dict.

    `code` is the code digest of the download, parse and prepare stages (codedeps.py); `source_files` the
    local files a custom dataset's `source` holds (ignored for a known dataset).
    """
    identity: dict[str, Any] = {"dataset": dataset, "prepare": dict(prepare), "code": code}
    if get_dataset(dataset) is None:
        identity["source"] = source
        identity["checksums"] = dict(checksums or {})
        identity["files"] = {Path(path).name: file_digest(path) for path in source_files}
    return identity


def run_id(settings: Mapping[str, Any], data: Mapping[str, Any], code: str) -> str:
    """The id of the run these train settings, prepared data and training code make."""
    canonical = json.dumps({"settings": settings, "data": data, "code": code}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:ID_LENGTH]


def run_record(settings: Mapping[str, Any], data: Mapping[str, Any], code: str) -> dict[str, Any]:
    """{run, settings, data, code}: what a kept run records about its making (run.json)."""
    return {"run": run_id(settings, data, code), "settings": dict(settings), "data": dict(data), "code": code}
