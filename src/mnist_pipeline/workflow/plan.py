"""The runs a config makes: for each experiment, the run (runid.py) that its settings, the
prepared data and the training code make, as the workflow fixes them before any job starts.

The workflow asks this to name the run folders its jobs write; `mnist-pipeline runs --prune`
asks it to keep every run a plain `snakemake` would use now.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from mnist_pipeline.data.datasets import IDX_STEMS
from mnist_pipeline.data.sources import local_source_dir, locate_idx
from mnist_pipeline.runstore.ids import data_identity, run_record
from mnist_pipeline.workflow.codedeps import code_identity

# The stages whose code makes the prepared data, in the order their digests are joined.
DATA_STAGES = ("download", "parse", "prepare")


def planned_runs(config: Mapping[str, Any], experiments: Mapping[str, Mapping], stage_code: Callable[[str], str]) -> dict[str, dict]:
    """Experiment name -> the record of the run its settings make: `config` resolved
    (config.resolve_config), `experiments` its experiment_settings, `stage_code(stage)` the
    code digest of a stage's script ("train", "prepare", ...)."""
    upstream = "".join(stage_code(stage) for stage in DATA_STAGES)
    data = data_identity(
        dataset=config["dataset"],
        prepare=config["prepare"],
        code=hashlib.sha256(upstream.encode()).hexdigest(),
        source=config["source"],
        checksums=config["checksums"],
        source_files=source_files(config),
    )
    code = stage_code("train")
    return {name: run_record(settings, data, code) for name, settings in experiments.items()}


def checkout_stage_code(workdir: str | Path) -> Callable[[str], str]:
    """stage_code for the checkout in `workdir`: its workflow/scripts/ and the package in its src/,
    the code a `snakemake` there runs (whatever copy of the package is installed)."""
    workdir = Path(workdir)
    return lambda stage: code_identity(workdir / "workflow" / "scripts" / f"{stage}.py", workdir / "src" / "mnist_pipeline")


def source_files(config: Mapping[str, Any]) -> list[str]:
    """The files a local `source` directory gives the download (the same ones it picks), so
    that replacing them reruns it. A missing one is left for the download job to report."""
    directory = local_source_dir(config["dataset"], config["source"])
    if directory is None or not directory.is_dir():
        return []
    files = []
    for stem in IDX_STEMS:
        with contextlib.suppress(FileNotFoundError):
            files.append(str(locate_idx(directory, stem)))
    return files
