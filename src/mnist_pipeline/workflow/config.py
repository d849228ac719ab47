"""Validate the workflow configuration and turn it into per-stage settings.

The JSON schema in workflow/schemas/ documents every key and its default (its train keys are
TrainSettings' own, which a test keeps equal); this module enforces it, checks every
experiment as a TrainSettings, and produces the canonical, builtin-only dicts that Snakemake
rules pass as `params`. Snakemake decides reruns from the `repr()` of those
values, so canonical here means: keys sorted, integers as int, numbers as float, whatever way
the user wrote them (`0.1`, `1e-1`, `"1e-1"` from a YAML 1.1 parser, `20.0` for an integer).

A config is bounded before anything walks it (check_size): YAML aliases make a few lines
stand for billions of values (an "alias bomb"), which validation, copying or printing would
expand. Error messages show values cut to a readable length. What Snakemake does with a
config file before this module sees it: docs/configuration-limits.md.
"""

from __future__ import annotations

import copy
import itertools
import math
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from mnist_pipeline.data.sources import local_source_dir
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.evaluation.corruptions import FAMILIES, check_families
from mnist_pipeline.layout import RESERVED
from mnist_pipeline.nn.settings import TrainSettings

_MISSING = object()
# Snakemake parses a `--config` value such as `train={batch_norm: false}` with YAML's base
# loader, which keeps every scalar a string. These are the YAML spellings of booleans and null,
# taken as such where the schema allows that type: spelling -> (JSON type, value).
_WORDS = {
    **{word: ("boolean", True) for word in ("true", "True", "TRUE")},
    **{word: ("boolean", False) for word in ("false", "False", "FALSE")},
    **{word: ("null", None) for word in ("null", "Null", "NULL", "~")},
}


# Far above any real config (the shipped one holds about 40 values, a 40-experiment sweep about
# 1,000 once resolved), far below what makes validation slow or a message long.
MAX_VALUES = 100_000
MAX_DEPTH = 16  # the deepest real key, sweep.grid.hidden[i][j], is 5 levels down
MAX_EXPERIMENTS = 1_000
MAX_YAML_BYTES = 1 << 20
# An error message shows at most this many problems, each value cut to a short repr.
MAX_PROBLEMS = 20
_SHOWN = reprlib.Repr()
_SHOWN.maxstring = _SHOWN.maxother = 160
_SHOWN.maxlist = _SHOWN.maxtuple = _SHOWN.maxdict = _SHOWN.maxset = 4
_SHOWN.maxlevel = 2


def load_schema(path: str | Path) -> dict:
    """The workflow's config schema, with the parts whose facts live in code filled in: the
    training keys from TrainSettings, the names an experiment may not take from the layout."""
    schema = load_yaml(path)
    keys = TrainSettings.json_schema()
    # The same dict wherever the file's YAML alias put the (empty) train_keys.
    schema["$defs"]["train_keys"].update(keys)
    schema["properties"]["experiments"]["propertyNames"]["not"] = {"enum": sorted(RESERVED)}
    return schema


def load_yaml(path: str | Path) -> Any:
    """The content of a YAML (or JSON) file such as config.yaml or experiments.yaml, checked as
    resolve_config checks a config: a ConfigError naming the file when it is not UTF-8 text,
    not YAML, larger than MAX_YAML_BYTES, or beyond MAX_VALUES / MAX_DEPTH once its aliases
    are followed. Never a traceback, and memory bounded by the file's size."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_YAML_BYTES:
            raise ConfigError(f"{path}: {size:,} bytes; expected a config file of at most {MAX_YAML_BYTES:,} bytes")
        data = path.read_bytes()
    except OSError as error:
        raise ConfigError(f"{path}: cannot be read ({error.strerror or error})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        column = error.start - (data.rfind(b"\n", 0, error.start) + 1) + 1
        raise ConfigError(
            f"{path}: byte {data[error.start]:#04x} at line {line}, column {column} is not UTF-8;"
            " expected UTF-8 text (save the file as UTF-8)"
        ) from None
    try:
        content = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {_cut(str(error), 500)}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be read; expected a config at most {MAX_DEPTH} levels deep") from None
    check_size(content, str(path))
    return content


def check_size(value: Any, where: str = "the config") -> None:
    """Refuse, naming the key, a value of more than MAX_VALUES values or MAX_DEPTH levels once
    YAML aliases are followed (each alias counts as a copy of what it stands for, as it would
    be validated and copied). Stops counting at the bound: bounded time whatever the value."""
    count = 0
    stack: list[tuple[Any, tuple]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        count += 1
        if count > MAX_VALUES:
            raise ConfigError(
                f"{where}: more than {MAX_VALUES:,} values (counting what each YAML alias *name repeats),"
                f" the limit reached under key {_key_text(_up_to_an_item(path))!r}; expected a plain config, not anchors"
                " repeated inside each other"
            )
        if len(path) > MAX_DEPTH:
            raise ConfigError(f"{where}: key {_key_text(path)!r} is nested more than {MAX_DEPTH} levels deep; expected a plain config")
        if isinstance(node, Mapping):
            stack.extend((item, (*path, key)) for key, item in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((item, (*path, i)) for i, item in enumerate(node))


def _up_to_an_item(path: tuple) -> tuple:
    """The keys of `path` down to its first list item: what a user wrote, not where in the repeats."""
    items = [i for i, part in enumerate(path) if isinstance(part, int)]
    return path[: items[0] + 1] if items else path


def _key_text(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{_cut(str(part), 40)}"
    return text or "(top level)"


def shown(value: Any) -> str:
    """`value` for an error message: its repr, cut to a few dozen characters and items."""
    text = _SHOWN.repr(value)
    if isinstance(value, str) and len(value) > _SHOWN.maxstring:
        text += f" ({len(value):,} characters)"
    return text


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit:,} more characters)"


def resolve_config(config: Mapping[str, Any], schema: Mapping[str, Any], *, results_dir: str | Path | None = None) -> dict:
    """Check `config` against `schema`, fill defaults, canonicalize values.

    `results_dir` is where the workflow writes; a local `source` inside it is refused.
    Returns a new dict; the input is left alone. Raises ConfigError naming every bad key.
    """
    check_size(config)
    resolved = _coerce(copy.deepcopy(dict(config)), schema, schema)
    _validate(resolved, schema)
    _fill_defaults(resolved, schema, schema)
    _validate(resolved, schema)
    _check_dataset_source(resolved, results_dir)
    _check_class_names(resolved)
    _expand_sweep(resolved, schema)
    _validate(resolved, schema)
    _check_names(resolved)
    if resolved["robustness"] is not None:
        check_families(resolved["robustness"]["families"] or FAMILIES)
    return keys_sorted(resolved)


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
            raise ConfigError(f"experiment {name!r} (`train` with its overrides): {_cut(str(error), 2000)}") from None
    return settings


def keys_sorted(value: Any) -> Any:
    """The same value with dict keys sorted at every depth, so equal configs have equal reprs."""
    if isinstance(value, Mapping):
        return {key: keys_sorted(value[key]) for key in sorted(value)}
    if isinstance(value, (list, tuple)):
        return [keys_sorted(item) for item in value]
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
    grid = sweep.get("grid") or {}
    made = math.prod(len(values) for values in grid.values()) * max(1, len(sweep.get("list") or [])) * max(1, len(sweep.get("seeds") or []))
    if made + len(config["experiments"]) > MAX_EXPERIMENTS:
        raise ConfigError(
            f"config key 'sweep': makes {made:,} experiments (besides the {len(config['experiments']):,} under `experiments`);"
            f" expected at most {MAX_EXPERIMENTS:,} in all, each a model to train"
        )
    for key, values in grid.items():
        if key not in train_keys:
            raise ConfigError(f"config key 'sweep.grid.{_cut(key, 60)}': not a `train` key; known keys: {', '.join(sorted(train_keys))}")
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
    try:
        problem = "" if directory.is_dir() else "is not a directory" if directory.exists() else "does not exist"
    except OSError as error:  # a path too long for the file system, say
        problem = f"cannot be looked up ({error.strerror})"
    if problem:
        raise ConfigError(
            f"config key 'source': {shown(source)} {problem}; expected a directory (or file:// URL) holding"
            " the four IDX files, an http(s):// URL, or null for the dataset's own mirrors"
        )
    if results_dir is not None:
        results = Path(results_dir).resolve()
        if directory.resolve() == results or results in directory.resolve().parents:
            raise ConfigError(
                f"config key 'source': {shown(source)} lies inside {results_dir}/, which holds the pipeline's own"
                " outputs and is replaced by its runs; expected a directory outside it (copy the files elsewhere first)"
            )


def _check_names(config: Mapping[str, Any]) -> None:
    """Refuse names Snakemake itself cannot use as wildcard values: one that ends in a part
    repeated 20 times or more (`aaaaaaaaaaaaaaaaaaaa`) stops it with PeriodicWildcardError, which
    guards against rules that feed themselves. The schema has already ruled out the names the
    file system or the results layout cannot take."""
    from snakemake.io import PeriodicityDetector

    detector = PeriodicityDetector()
    names = [("dataset", config["dataset"])] + [("experiments", name) for name in config["experiments"]]
    for key, name in names:
        repeated = detector.is_periodic(name)
        if repeated is not None:
            raise ConfigError(
                f"config key {key!r}: {shown(name)} ends in {repeated!r} repeated 20 times or more, which Snakemake"
                " refuses in a name (it takes such a name for a rule feeding itself); expected another name"
            )


def _check_class_names(config: Mapping[str, Any]) -> None:
    """A known dataset's classes are fixed (its confusion matrix is 10 x 10, as README's outputs say)."""
    from mnist_pipeline.data.datasets import get_dataset

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
    for error in errors[:MAX_PROBLEMS]:
        key = _cut(".".join(str(part) for part in error.absolute_path), 120) or "(top level)"
        lines.append(f"config key {key!r}: {_explain(error)}")
    if len(errors) > MAX_PROBLEMS:
        lines.append(f"... and {len(errors) - MAX_PROBLEMS:,} more problems")
    raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def _explain(error: jsonschema.ValidationError) -> str:
    """What is wrong and what was expected, with the value cut short (jsonschema's own message
    spells it out whole: a long list or string would make it as long)."""
    value = shown(error.instance)
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unexpected = [shown(key) for key in error.instance if key not in known]
        more = f" and {len(unexpected) - 5:,} more" if len(unexpected) > 5 else ""
        return f"unknown key(s) {', '.join(unexpected[:5])}{more}; known keys here: {', '.join(known)}"
    if error.validator == "enum":
        return f"{value} is not one of {', '.join(map(repr, error.validator_value))}"
    # In this schema only names have these two: they become file and folder names (see the schema).
    if error.validator == "maxLength":
        return (
            f"{value} is {len(error.instance):,} characters long; expected at most {error.validator_value}: a name"
            " becomes a file or folder name under results/, and a file name holds at most 255 bytes"
        )
    if error.validator == "not" and "enum" in error.validator_value:
        return (
            f"{value} is a name results/{{dataset}}/ uses for its own files ({', '.join(error.validator_value['enum'])});"
            " expected another name"
        )
    whole = repr(error.instance)
    message = value + error.message[len(whole) :] if error.message.startswith(whole) else error.message
    return _cut(message, 300)
