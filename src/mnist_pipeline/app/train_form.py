"""What the Train page's form asks for, derived from the description of the train settings.

`train_fields` is the one place that turns the settings' description (`TrainSettings.describe()`:
kind, choices, help) into form fields; the page lays the fields out and
`read_value` turns what was typed back into config values, leaving every judgement of them to
the workflow's own validation (config.resolve_config), so the page shows its messages.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.nn.settings import Setting, TrainSettings


@dataclass(frozen=True)
class FormField:
    key: str
    kind: str
    default: Any
    help: str | None = None
    choices: tuple = ()


#: a setting's kind -> the form field's kind (a nullable number is an optional field)
_FIELD_KINDS = {"choice": "choice", "bool": "boolean", "int": "integer", "float": "number", "list": "list"}


def _kind(setting: Setting) -> str:
    if setting.nullable:
        return "optional"
    if setting.kind not in _FIELD_KINDS:
        raise ValueError(f"train key {setting.name!r}: no form field for kind {setting.kind!r}")
    return _FIELD_KINDS[setting.kind]


def train_fields(defaults: Mapping[str, Any], settings: Iterable[Setting] | None = None) -> list[FormField]:
    """One field per training setting, in `TrainSettings.describe()`'s order (or `settings`'),
    starting at `defaults` (the `train` section in force)."""
    described = TrainSettings.describe() if settings is None else settings
    return [FormField(setting.name, _kind(setting), defaults[setting.name], setting.help, tuple(setting.choices))
            for setting in described]


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
