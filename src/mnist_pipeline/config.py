"""Validate the workflow configuration and turn it into per-stage settings.

The JSON schema in workflow/schemas/ is the single place where keys, their documentation and
their defaults live; this module enforces it and produces the canonical, builtin-only dicts
that Snakemake rules pass as `params`. Snakemake decides reruns from the `repr()` of those
values, so canonical here means: keys sorted, integers as int, numbers as float, whatever way
the user wrote them (`0.1`, `1e-1`, `"1e-1"` from a YAML 1.1 parser, `20.0` for an integer).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mnist_pipeline.errors import ConfigError


def load_schema(path: str | Path) -> dict:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle)


def resolve_config(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict:
    """Check `config` against `schema`, fill defaults, canonicalize values.

    Returns a new dict; the input is left alone. Raises ConfigError naming every bad key.
    """
    resolved = _coerce(copy.deepcopy(dict(config)), schema, schema)
    _validate(resolved, schema)
    _fill_defaults(resolved, schema, schema)
    _validate(resolved, schema)
    _check_dataset_source(resolved)
    return canonical(resolved)


def experiment_settings(config: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, dict]:
    """Experiment name -> its full training settings: schema defaults < `train` < overrides."""
    base = dict(config["train"])
    # Overrides are validated without defaults, so only the keys a user wrote override `train`.
    return {name: canonical({**base, **overrides}) for name, overrides in config["experiments"].items()}


def canonical(value: Any) -> Any:
    """The same value with dict keys sorted at every depth, so equal configs have equal reprs."""
    if isinstance(value, Mapping):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [canonical(item) for item in value]
    return value


def _check_dataset_source(config: Mapping[str, Any]) -> None:
    from mnist_pipeline.datasets import KNOWN_DATASETS

    if config["dataset"] not in KNOWN_DATASETS and config["source"] is None:
        raise ConfigError(
            f"config key 'source': dataset {config['dataset']!r} is not a known dataset "
            f"({', '.join(sorted(KNOWN_DATASETS))}), so `source` must name a directory or URL holding its four IDX files"
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
    """Bring numbers to one spelling, guided by the schema; leave anything else for validation."""
    node = _resolve_ref(node, root)
    types = _types(node)
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
        child = _resolve_ref(child, root)
        if key not in value and "default" in child:
            value[key] = _coerce(copy.deepcopy(child["default"]), child, root)
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
