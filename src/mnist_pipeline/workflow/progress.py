"""What a running workflow reports as data, for the app (and anyone else) to follow.

    runs/planned.json            run id -> the experiments it serves, for the runs the last
                                 executing workflow run set out to train
    runs/{run}/progress.jsonl    one JSON record per finished epoch (a log of the train job)

(paths under results/{dataset}/, from layout.DatasetLayout's `planned` and `progress`).

The lines the terminal and the train log show are made from the same records
(nn.train.epoch_text), so the two can never disagree, and nothing has to read the text back.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mnist_pipeline.fileio import read_json, write_json


class EpochRecords:
    """Appends each epoch record to a JSON-lines file as it comes (fit's on_epoch), flushed at
    once so that a reader sees every finished epoch. Starts the file anew."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.write_text("", encoding="utf-8")

    def __call__(self, record: Mapping[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as out:
            out.write(json.dumps(dict(record), sort_keys=True) + "\n")


def read_epochs(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The epoch records written so far; a last line still being written is left for later."""
    path = Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return records


def write_plan(path: str | os.PathLike, runs: Mapping[str, Mapping[str, Any]], untrained: set[str]) -> None:
    """The runs an executing workflow run sets out to train: run id -> its experiments.
    `runs` maps experiment name -> run record (with its "run" id)."""
    plan: dict[str, list[str]] = {}
    for name, record in runs.items():
        if record["run"] in untrained:
            plan.setdefault(record["run"], []).append(name)
    write_json(path, {"runs": plan})


def planned_run(path: str | os.PathLike, experiment: str) -> str | None:
    """The id of the run that trains `experiment` in the plan at `path`, if any."""
    path = Path(path)
    if not path.is_file():
        return None
    for run, names in read_json(path)["runs"].items():
        if experiment in names:
            return run
    return None
