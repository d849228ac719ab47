"""Where everything the workflow makes lives under results/: the one place that spells it.

The rules (through workflow/rules/common.smk), the app, the command line and the run store
all ask this module. A part may be a Snakemake wildcard ("{dataset}") as well as a name, so
the rules' patterns and the paths of one dataset come from the same methods:

    results/{dataset}/
        raw/                          the four IDX files (keep_download)
        .download/{digest}/           a download in progress (temporary)
        parsed/{name}                 the parsed arrays and dataset.json
        prepared/{split}.parquet      train, val, test
        runs/{run}/{file}             a trained model and what it was judged on (the run store)
        runs/current.json             which run each experiment uses now
        runs/planned.json             which runs the running workflow trains (progress.py)
        {experiment}/{file}           the published copy of an experiment's current run
        figures/                      the report's images
        report.html, report.md
        logs/{stage}.log, benchmarks/{stage}.tsv
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

RESULTS = "results"
# Where the front-ends (the command line and the app) look for results: `--results DIR` wins,
# then this variable (the app's tests set it, as AppTest cannot pass arguments), then RESULTS.
RESULTS_ENV = "MNIST_PIPELINE_RESULTS"
# Names a dataset folder holds besides its experiments' folders: no experiment may take one.
RESERVED = frozenset(
    {"raw", "parsed", "prepared", "runs", "figures", "logs", "benchmarks", "report.html", "report.md"}
)
# The run store's folder in a dataset's results, and the record of which run each experiment uses.
STORE = "runs"
CURRENT = "current.json"
# The files of one run, by their role (runstore/store.py keeps and publishes them).
RUN_FILES = {
    "model": "model.npz",
    "history": "history.json",
    "metrics": "metrics.json",
    "predictions": "predictions.parquet",
    "record": "run.json",
}


@dataclass(frozen=True)
class DatasetLayout:
    """The paths of one dataset's results: `results`/`dataset`. Methods return strings, which
    Snakemake patterns need, and which Path() takes as they are."""

    results: str | os.PathLike = RESULTS
    dataset: str = "{dataset}"

    @property
    def root(self) -> str:
        return f"{os.fspath(self.results)}/{self.dataset}"

    @property
    def raw(self) -> str:
        return f"{self.root}/raw"

    def staging(self, digest: str) -> str:
        return f"{self.root}/.download/{digest}"

    def parsed(self, name: str) -> str:
        return f"{self.root}/parsed/{name}"

    def prepared(self, split: str) -> str:
        return f"{self.root}/prepared/{split}.parquet"

    @property
    def runs(self) -> str:
        return f"{self.root}/{STORE}"

    def run(self, run: str = "{run}", leaf: str = "") -> str:
        return f"{self.runs}/{run}" + (f"/{leaf}" if leaf else "")

    def progress(self, run: str = "{run}") -> str:
        """The epoch records of a run's training (progress.py): a log of the train job."""
        return self.run(run, "progress.jsonl")

    def experiment(self, experiment: str = "{experiment}", leaf: str = "") -> str:
        return f"{self.root}/{experiment}" + (f"/{leaf}" if leaf else "")

    @property
    def current(self) -> str:
        return f"{self.runs}/{CURRENT}"

    @property
    def planned(self) -> str:
        return f"{self.runs}/planned.json"

    @property
    def figures(self) -> str:
        return f"{self.root}/figures"

    def report(self, suffix: str) -> str:
        return f"{self.root}/report.{suffix}"

    def trained(self, experiment: str) -> list[str]:
        """What training an experiment is for: its published model and metrics."""
        return [self.experiment(experiment, RUN_FILES[role]) for role in ("model", "metrics")]

    def final_outputs(self, experiments: Iterable[str]) -> list[str]:
        """What a run of the workflow is for (its default target): every experiment trained,
        and the report."""
        return [path for name in experiments for path in self.trained(name)] + [self.report("html"), self.report("md")]

    def log(self, stage: str) -> str:
        return f"{self.root}/logs/{stage}.log"

    def benchmark(self, stage: str) -> str:
        return f"{self.root}/benchmarks/{stage}.tsv"
