"""Validate the workflow configuration and turn it into per-stage settings.

The JSON schema in workflow/schemas/ documents every key and its default (its train keys are
TrainSettings' own, which a test keeps equal); this module enforces it, checks every
experiment as a TrainSettings, and produces the canonical, builtin-only dicts that Snakemake
rules pass as `params`. Snakemake decides reruns from the `repr()` of those
values, so canonical here means: keys sorted, integers as int, numbers as float, whatever way
the user wrote them (`0.1`, `1e-1`, `"1e-1"` from a YAML 1.1 parser, `20.0` for an integer).
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.nn.settings import TrainSettings
from mnist_pipeline.sources import local_source_dir

_MISSING = object()
# Snakemake parses a `--config` value such as `train={batch_norm: false}` with YAML's base
# loader, which keeps every scalar a string. These are the YAML spellings of booleans and null,
# taken as such where the schema allows that type: spelling -> (JSON type, value).
_WORDS = {
    **{word: ("boolean", True) for word in ("true", "True", "TRUE")},
    **{word: ("boolean", False) for word in ("false", "False", "FALSE")},
    **{word: ("null", None) for word in ("null", "Null", "NULL", "~")},
}


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def resolve_config(config: Mapping[str, Any], schema: Mapping[str, Any], *, results_dir: str | Path | None = None) -> dict:
    """Check `config` against `schema`, fill defaults, canonicalize values.

    `results_dir` is where the workflow writes; a local `source` inside it is refused.
    Returns a new dict; the input is left alone. Raises ConfigError naming every bad key.
    """
    resolved = _coerce(copy.deepcopy(dict(config)), schema, schema)
    _validate(resolved, schema)
    _fill_defaults(resolved, schema, schema)
    _validate(resolved, schema)
    _check_dataset_source(resolved, results_dir)
    _check_class_names(resolved)
    _expand_sweep(resolved, schema)
    _validate(resolved, schema)
    return canonical(resolved)


def experiment_settings(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, dict]:
    """Experiment name -> its full training settings: schema defaults < `train` < overrides.

    Each is made into a TrainSettings, so a combination of values that cannot be trained
    (warmup_epochs >= epochs, ...) is refused here, naming the experiment and the key; the
    result is TrainSettings.as_dict(), the canonical form the train rule passes as params.
    """
    base = dict(config["train"])
    settings = {}
    # Overrides are validated without defaults, so only the keys a user wrote override `train`.
    for name, overrides in config["experiments"].items():
        try:
            settings[name] = TrainSettings.from_dict({**base, **overrides}).as_dict()
        except ConfigError as error:
            raise ConfigError(f"experiment {name!r} (`train` with its overrides): {error}") from None
    return settings


def canonical(value: Any) -> Any:
    """The same value with dict keys sorted at every depth, so equal configs have equal reprs."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def sweep_points(sweep: Mapping[str, Any] | None) -> dict[str, dict]:
    """Generated experiment name -> its overrides of `train`, for a `sweep` section.

    Grid keys vary in sorted order, so the names and their order do not depend on how the
    config file lists the keys; each name spells out the values that make it differ.
    """
    if not sweep:
        return {}
    grid = sweep.get("grid") or {}
    keys = sorted(grid)
    points = [dict(zip(keys, values, strict=False)) for values in itertools.product(*(grid[key] for key in keys))]
    if sweep.get("list"):
        points = [{**point, **extra} for point in points for extra in sweep["list"]]
    if sweep.get("seeds"):
        points = [{**point, "seed": seed} for point in points for seed in sweep["seeds"]]
    named: dict[str, dict] = {}
    for point in points:
        name = "_".join([sweep.get("prefix", "sweep"), *(f"{key}-{_spell(point[key])}" for key in sorted(point))])
        named.setdefault(name, point)
    return named


def _spell(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (list, tuple)):
        return "x".join(_spell(item) for item in value)
    if value is None:
        return "none"
    return str(value)


def _expand_sweep(config: dict, schema: Mapping[str, Any]) -> None:
    sweep = config.get("sweep")
    if not sweep:
        return
    train_keys = schema["$defs"]["train_keys"]
    for key, values in (sweep.get("grid") or {}).items():
        if key not in train_keys:
            raise ConfigError(f"config key 'sweep.grid.{key}': not a `train` key; known keys: {', '.join(sorted(train_keys))}")
        for i, value in enumerate(values):
            values[i] = _coerce(value, train_keys[key], schema)
            errors = list(jsonschema.Draft202012Validator(train_keys[key]).iter_errors(values[i]))
            if errors:
                raise ConfigError(f"config key 'sweep.grid.{key}[{i}]': {_explain(errors[0])}")
    for name, point in sweep_points(sweep).items():
        if name in config["experiments"]:
            raise ConfigError(f"config key 'sweep': generated experiment {name!r} is also listed under `experiments`")
        config["experiments"][name] = point


def _check_dataset_source(config: Mapping[str, Any], results_dir: str | Path | None) -> None:
    """Refuse, before any job starts, a `source` the download stage could not use. A local one
    must exist, and must not lie among the outputs: a run replaces those, so the download
    would destroy the very files it copies."""
    source = config["source"]
    directory = local_source_dir(config["dataset"], source)
    if directory is None:
        return
    if not directory.is_dir():
        problem = "is not a directory" if directory.exists() else "does not exist"
        raise ConfigError(
            f"config key 'source': {source!r} {problem}; expected a directory (or file:// URL) holding"
            " the four IDX files, an http(s):// URL, or null for the dataset's own mirrors"
        )
    if results_dir is not None:
        results = Path(results_dir).resolve()
        if directory.resolve() == results or results in directory.resolve().parents:
            raise ConfigError(
                f"config key 'source': {source!r} lies inside {results_dir}/, which holds the pipeline's own"
                " outputs and is replaced by its runs; expected a directory outside it (copy the files elsewhere first)"
            )


def _check_class_names(config: Mapping[str, Any]) -> None:
    """A known dataset's classes are fixed (its confusion matrix is 10 x 10, as README's outputs say)."""
    from mnist_pipeline.datasets import get_dataset

    spec = get_dataset(config["dataset"])
    if spec is not None and config.get("class_names") is not None:
        raise ConfigError(
            f"config key 'class_names': {config['dataset']} has its own classes ({', '.join(spec.classes)});"
            " class_names is for custom datasets only: remove it, or use null"
        )


def _resolve_ref(node: Mapping[str, Any], root: Mapping[str, Any]) -> Mapping[str, Any]:
    while "$ref" in node:
        ref = node["$ref"]
        if not ref.startswith("#/"):
            raise ConfigError(f"schema reference {ref!r}: only local references are supported")
        target: Any = root
        for part in ref[2:].split("/"):
            target = target[part]
        node = target
    return node


def _types(node: Mapping[str, Any]) -> set[str]:
    declared = node.get("type", [])
    return {declared} if isinstance(declared, str) else set(declared)


def _coerce(value: Any, node: Mapping[str, Any], root: Mapping[str, Any]) -> Any:
    """Bring numbers to one spelling, and the words `--config` leaves as strings (false, null)
    to the values the schema asks for; leave anything else for validation."""
    node = _resolve_ref(node, root)
    types = _types(node)
    if isinstance(value, str) and value in _WORDS and _WORDS[value][0] in types:
        return _WORDS[value][1]
    if isinstance(value, str) and types & {"number", "integer"}:
        try:
            value = float(value)
        except ValueError:
            return value
    if isinstance(value, bool):
        return value
    if "integer" in types and isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if "number" in types and "integer" not in types and isinstance(value, int):
        return float(value)
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties")
        for key, item in value.items():
            child = props.get(key, extra if isinstance(extra, Mapping) else None)
            if child is not None:
                value[key] = _coerce(item, child, root)
    elif isinstance(value, list) and isinstance(node.get("items"), Mapping):
        value[:] = [_coerce(item, node["items"], root) for item in value]
    return value


def _fill_defaults(value: Any, node: Mapping[str, Any], root: Mapping[str, Any]) -> None:
    """Insert defaults for missing keys of `properties` (not of additionalProperties: those
    are experiment overrides, where a missing key means "as in `train`")."""
    node = _resolve_ref(node, root)
    if not isinstance(value, dict):
        return
    for key, child in node.get("properties", {}).items():
        # A default may sit beside a $ref (`train: {$ref: ..., default: {}}`): look before resolving.
        default = child.get("default", _resolve_ref(child, root).get("default", _MISSING))
        child = _resolve_ref(child, root)
        if key not in value and default is not _MISSING:
            value[key] = _coerce(copy.deepcopy(default), child, root)
        if key in value:
            _fill_defaults(value[key], child, root)


def _validate(config: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(map(str, e.absolute_path)))
    if not errors:
        return
    lines = []
    for error in errors:
        key = ".".join(str(part) for part in error.absolute_path) or "(top level)"
        lines.append(f"config key {key!r}: {_explain(error)}")
    raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _explain(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        return f"{error.message}; known keys here: {', '.join(known)}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(repr, error.validator_value))}"
    return error.message
