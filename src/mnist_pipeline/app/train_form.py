"""What the Train page's form asks for, derived from the description of the train settings.

`train_fields` is the one place that turns the settings' description (today the schema's
`train_keys`: type, enum, description) into form fields; the page lays the fields out and
`read_value` turns what was typed back into config values, leaving every judgement of them to
the workflow's own validation (config.resolve_config), so the page shows its messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mnist_pipeline.errors import ConfigError

#: kinds of field: a choice among fixed values, a tick box, one number, a list of numbers, or a number that may be left empty (null)
KINDS = ("choice", "boolean", "integer", "number", "list", "optional")


@dataclass(frozen=True)
class FormField:
    key: str
    kind: str
    default: Any
    help: str | None = None
    choices: tuple = ()


def _kind(key: str, node: Mapping[str, Any]) -> str:
    if "enum" in node:
        return "choice"
    declared = node.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    if "null" in types:
        return "optional"
    for kind in ("boolean", "integer", "number"):
        if types == {kind}:
            return kind
    if types == {"array"}:
        return "list"
    raise ValueError(f"train key {key!r}: no form field for type {declared!r}")


def train_fields(train_keys: Mapping[str, Mapping[str, Any]], defaults: Mapping[str, Any]) -> list[FormField]:
    """One field per train key, in the description's order, starting at `defaults` (the `train` section in force)."""
    return [
        FormField(key, _kind(key, node), defaults[key], node.get("description"), tuple(node.get("enum", ())))
        for key, node in train_keys.items()
    ]


def as_text(field: FormField, value: Any) -> str:
    """How a list or optional field shows `value` in a text box: `1024, 512`, or empty for null."""
    if value is None:
        return ""
    if field.kind == "list":
        return ", ".join(str(item) for item in value)
    return str(value)


def read_value(field: FormField, value: Any) -> Any:
    """The config value a widget's `value` stands for. Text boxes are read as YAML (`64, 32` as
    a list), so whatever was typed reaches the workflow's validation; only text that is not
    YAML at all is refused here."""
    if field.kind not in ("list", "optional"):
        return value
    text = str(value).strip()
    if field.kind == "optional" and not text:
        return None
    try:
        return yaml.safe_load(f"[{text}]" if field.kind == "list" else text)
    except yaml.YAMLError:
        expected = "numbers separated by commas" if field.kind == "list" else "a number, or nothing for null"
        raise ConfigError(f"train key {field.key!r}: cannot read {text!r}; expected {expected}") from None


def overrides(fields: Iterable[FormField], values: Mapping[str, Any]) -> dict[str, Any]:
    """The values that differ from the fields' defaults: what the new experiment overrides of `train`."""
    return {field.key: values[field.key] for field in fields if values[field.key] != field.default}
