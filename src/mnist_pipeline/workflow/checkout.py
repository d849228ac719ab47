"""The workflow the Train page drives: where it is, its config as Snakemake merges it, and the
file of experiments added in the app.

The app never edits config.yaml: what it adds goes to `experiments.yaml` beside it, which the
Snakefile merges over config.yaml as a --configfile would be merged. A plain `snakemake --cores 4`
therefore knows the app's experiments too, and deleting the file forgets them.
"""

from __future__ import annotations

import copy
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.fileio import atomic_path, read_json
from mnist_pipeline.layout import RESULTS, DatasetLayout
from mnist_pipeline.workflow.config import experiment_settings, load_schema, load_yaml, resolve_config

APP_EXPERIMENTS = "experiments.yaml"
# An entry's error fits beside its Remove button.
ENTRY_ERROR_CHARS = 300
SCHEMA = "workflow/schemas/config.schema.yaml"
HEADER = (
    "# Experiments added in the browser app (mnist-pipeline app, Train page); the Snakefile merges\n"
    "# this file over config.yaml. Edit it like config.yaml's `experiments`, or remove entries in the app.\n"
)


def merge_config(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict:
    """`over` merged into a copy of `base`, dicts key by key at every depth (Snakemake's update_config)."""
    merged = copy.deepcopy(dict(base))
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_config(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        return {}
    # Bounded as the workflow reads it: not UTF-8, not YAML or an alias bomb is one ConfigError.
    content = load_yaml(path)
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys, found {type(content).__name__}")
    return content


@dataclass(frozen=True)
class Workflow:
    """A checkout of the workflow: `workdir` holds the Snakefile, config.yaml and results/."""

    workdir: Path

    @property
    def results(self) -> Path:
        return self.workdir / RESULTS

    @property
    def experiments_file(self) -> Path:
        return self.workdir / APP_EXPERIMENTS

    def schema(self) -> dict:
        return load_schema(self.workdir / SCHEMA)

    def user_experiments(self) -> set[str]:
        """The experiment names config.yaml itself defines (the app leaves those alone)."""
        return set(_read_yaml(self.workdir / "config.yaml").get("experiments") or {})

    def app_experiments(self) -> dict[str, dict]:
        """Name -> overrides of `train`, as experiments.yaml holds them."""
        return dict(_read_yaml(self.experiments_file).get("experiments") or {})

    def config(self, added: Mapping[str, dict] | None = None, data: Mapping[str, Any] | None = None) -> dict:
        """config.yaml with experiments.yaml merged over it, the `added` experiments in it
        (each replacing an entry of its name, not merged into it) and `data` ({dataset, source},
        as a --config gives them) over it, unvalidated."""
        merged = merge_config(_read_yaml(self.workdir / "config.yaml"), _read_yaml(self.experiments_file))
        merged["experiments"] = {**(merged.get("experiments") or {}), **copy.deepcopy(dict(added or {}))}
        merged.update(data or {})
        return merged

    def resolved(self, added: Mapping[str, dict] | None = None, data: Mapping[str, Any] | None = None) -> dict:
        """The config as the workflow validates it; raises ConfigError with the workflow's messages."""
        return resolve_config(self.config(added, data), self.schema())

    def entry_error(self, name: str) -> str | None:
        """Why the app experiment `name` alone would make the workflow refuse its config, on one
        line (the reasons without their heading, at most ENTRY_ERROR_CHARS), or None when it is fine."""
        base = merge_config(_read_yaml(self.workdir / "config.yaml"), {})
        base["experiments"] = {**(base.get("experiments") or {}), name: self.app_experiments()[name]}
        try:
            resolve_config(base, self.schema())
        except ConfigError as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            if len(lines) > 1 and lines[0].endswith(":"):
                lines = lines[1:]
            text = "; ".join(lines)
            return text if len(text) <= ENTRY_ERROR_CHARS else text[: ENTRY_ERROR_CHARS - 1] + "…"
        return None

    def built_datasets(self) -> dict[str, Any]:
        """Dataset -> the source its raw files were taken from, for each dataset under results/
        that a download finished for (its raw/manifest.json)."""
        built = {}
        for manifest in sorted(self.results.glob("*/raw/manifest.json")):
            try:
                built[manifest.parent.parent.name] = read_json(manifest).get("source")
            except (OSError, ValueError, AttributeError):
                continue  # a damaged manifest: that dataset is rebuilt by the workflow, not offered
        return built

    def add_experiment(self, name: str, overrides: Mapping[str, Any], data: Mapping[str, Any] | None = None) -> dict:
        """Check experiment `name` with these overrides of `train` as the workflow would (on the
        dataset `data` chooses, see config), then write it to experiments.yaml (replacing an app
        experiment of that name). Returns its full training settings. Raises ConfigError,
        writing nothing, when the workflow would refuse it. Call under the app's run lock."""
        if name in self.user_experiments():
            raise ConfigError(
                f"experiment {name!r} is defined in config.yaml; the app adds and removes only its own "
                f"experiments ({APP_EXPERIMENTS}): choose another name"
            )
        schema = self.schema()
        resolved = resolve_config(self.config({name: dict(overrides)}, data), schema)
        experiments = self.app_experiments()
        # Replace rather than merge: the form's overrides are the whole of the new entry.
        experiments[name] = resolved["experiments"][name]
        self._write(experiments)
        return experiment_settings(resolved, schema)[name]

    def remove_experiment(self, name: str, data: Mapping[str, Any] | None = None) -> None:
        """Forget an app experiment: its entry in experiments.yaml and its published folder in
        the dataset `data` chooses (config.yaml's by default). Call under the app's run lock."""
        experiments = self.app_experiments()
        if name not in experiments:
            raise ConfigError(f"experiment {name!r} is not one the app added (not in {self.experiments_file})")
        dataset = dict(data or {}).get("dataset") or _read_yaml(self.workdir / "config.yaml").get("dataset")
        del experiments[name]
        self._write(experiments)
        shutil.rmtree(DatasetLayout(self.results, dataset).experiment(name), ignore_errors=True)

    def _write(self, experiments: Mapping[str, dict]) -> None:
        if not experiments:
            self.experiments_file.unlink(missing_ok=True)
            return
        with atomic_path(self.experiments_file) as tmp:
            tmp.write_text(HEADER + yaml.safe_dump({"experiments": dict(experiments)}, sort_keys=True), encoding="utf-8")


def find_workflow(results: str | Path) -> Workflow | None:
    """The workflow whose outputs `results` holds: its parent, when that has a Snakefile."""
    results = Path(results).resolve()
    if results.name != RESULTS or not (results.parent / "Snakefile").is_file():
        return None
    return Workflow(results.parent)


def outputs_of(config: Mapping[str, Any], experiment: str) -> list[str]:
    """What training `experiment` makes, relative to the workdir (the workflow's own targets)."""
    return DatasetLayout(RESULTS, config["dataset"]).trained(experiment)


def report_targets(workflow: Workflow, config: Mapping[str, Any], besides: str | None = None) -> list[str]:
    """The report's paths when every experiment but `besides` is trained already, else none: the
    report waits for all of them, and the app must not start training ones the user did not ask for."""
    others = [name for name in config["experiments"] if name != besides]
    if not all((workflow.workdir / path).is_file() for name in others for path in outputs_of(config, name)):
        return []
    layout = DatasetLayout(RESULTS, config["dataset"])
    return [layout.report("html"), layout.report("md")]


def run_targets(workflow: Workflow, config: Mapping[str, Any], experiment: str) -> list[str]:
    """Snakemake targets for training `experiment`: its outputs, and the report when it can be rebuilt."""
    return outputs_of(config, experiment) + report_targets(workflow, config, besides=experiment)
