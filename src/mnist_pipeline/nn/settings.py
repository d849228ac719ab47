"""The training settings: one typed, immutable object holding every key's default, allowed
values and help, and the rules between keys.

    TrainSettings(hidden=[64], epochs=1)       # every other key at its default

Making one checks every value and every rule between values and raises ConfigError naming the
key, the value and what was expected, so the network's modules take it and trust it. Values
are stored canonically (counts as int, rates as float, sizes as tuples), so the same settings
written another way (`0.1` or `1e-1`, `20` or `20.0`, a list or a tuple) are equal, hash
equal and give the same `as_dict()`.

`describe()` lists every key as a form needs it, `json_schema()` writes the same facts as the
workflow schema's train keys (a test keeps config.schema.yaml equal to it), `as_dict()` and
`from_dict()` convert to and from the JSON form the workflow and the model file hold.
"""

import dataclasses
import functools
import math
import numbers
import types
import typing
from collections.abc import Mapping
from typing import Any, Literal

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.nn.augment import Augmentation

# JSON Schema's names for the bounds a number, or each item of a list, must keep.
BOUND_KEYWORDS = ("minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum")


def _key(default: Any, help: str, *, min_items: int = 0, **bounds: float) -> Any:
    """A settings field: its default, one line of help, and bounds named as in BOUND_KEYWORDS."""
    return dataclasses.field(default=default, metadata={"help": help, "min_items": min_items,
                                                        "bounds": types.MappingProxyType(bounds)})


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """How to build and train one network; see the module docstring."""

    model: Literal["mlp", "cnn"] = _key("mlp", "mlp is a stack of dense layers; cnn puts conv-pool blocks before them.")
    hidden: tuple[int, ...] = _key(
        (1024, 512), "Sizes of the hidden dense layers (after the conv blocks for a cnn).", minimum=1)
    conv_channels: tuple[int, ...] = _key(
        (32, 64), "cnn only. Output channels of each 3x3 conv + 2x2 max-pool + activation block.",
        min_items=1, minimum=1)
    activation: Literal["relu", "leaky_relu", "tanh", "sigmoid"] = _key(
        "relu", "Activation after each hidden layer and conv block.")
    dropout: float = _key(0.4, "Dropout rate after each hidden activation; 0 turns it off.", minimum=0, exclusiveMaximum=1)
    batch_norm: bool = _key(True, "Batch normalisation before each hidden activation.")
    init: Literal["he", "glorot"] = _key("he", "Initial weights: he suits relu-like activations, glorot tanh and sigmoid.")
    epochs: int = _key(20, "Passes over the training set.", minimum=1)
    batch_size: int = _key(
        128, "Examples per step; 1 is online SGD, one at least the training set's size full-batch gradient descent.",
        minimum=1)
    optimizer: Literal["sgd", "momentum", "nesterov", "adam", "adamw"] = _key(
        "adamw", "Update rule; adamw is Adam with decoupled weight decay.")
    learning_rate: float = _key(0.002, "Learning rate after warm-up, before the schedule decays it.", exclusiveMinimum=0)
    momentum: float = _key(0.9, "For momentum and nesterov.", minimum=0, exclusiveMaximum=1)
    betas: tuple[float, float] = _key(
        (0.9, 0.999), "For adam and adamw: decay rates of the gradient's running mean and square.",
        minimum=0, exclusiveMaximum=1)
    weight_decay: float = _key(0.01, "L2 penalty (decoupled for adamw).", minimum=0)
    schedule: Literal["constant", "step", "cosine"] = _key(
        "cosine", "Learning rate after warm-up: constant, step decay, or cosine decay towards zero.")
    warmup_epochs: int = _key(
        0, "Epochs of linear learning-rate warm-up before the schedule; fewer than epochs.", minimum=0)
    step_epochs: int = _key(10, "step schedule only. Multiply the rate by step_gamma every this many epochs.", minimum=1)
    step_gamma: float = _key(0.1, "step schedule only. The factor of each step.", exclusiveMinimum=0, maximum=1)
    label_smoothing: float = _key(
        0.1, "Weight of the uniform distribution mixed into the one-hot targets.", minimum=0, exclusiveMaximum=1)
    grad_clip: float | None = _key(
        None, "Clip the global gradient norm to this value; null turns it off.", exclusiveMinimum=0)
    early_stopping: int = _key(
        0, "Stop after this many epochs without a lower validation loss and restore the best weights; 0 turns it off.",
        minimum=0)
    augment_shift: int = _key(
        0, "Move each training image by up to this many pixels in each direction, anew every epoch; 0 turns it off.",
        minimum=0)
    augment_flip: bool = _key(
        False, "Mirror half the training images left-right, anew every epoch: right for clothes, wrong for digits.")
    augment_erase: float = _key(
        0.0, "Probability of blanking one random rectangle (2-25% of the area) of each training image; 0 turns it off.",
        minimum=0, maximum=1)
    seed: int = _key(0, "Seed of the initial weights, the batch order, dropout and augmentation.", minimum=0)

    def __post_init__(self) -> None:
        for setting in self.describe():
            object.__setattr__(self, setting.name, setting.canonical(getattr(self, setting.name)))
        self._check_rules()

    @property
    def augmentation(self) -> Augmentation:
        """What the trainer does to each training batch (nothing when every augment_ key is off)."""
        return Augmentation(shift=self.augment_shift, flip=self.augment_flip, erase=self.augment_erase)

    def _check_rules(self) -> None:
        """The rules between keys, which no single key's bounds can say."""
        if self.warmup_epochs >= self.epochs:
            _refuse("warmup_epochs", self.warmup_epochs,
                    f"fewer than epochs ({self.epochs}), to leave epochs for the schedule")
        if self.schedule == "step" and self.warmup_epochs + self.step_epochs >= self.epochs:
            _refuse("step_epochs", self.step_epochs,
                    f"fewer than epochs - warmup_epochs ({self.epochs - self.warmup_epochs}) with schedule: step, "
                    f"or the learning rate never steps down")

    @classmethod
    @functools.cache
    def describe(cls) -> tuple["Setting", ...]:
        """Every key, in order, with its kind, default, help, choices and bounds (for a form)."""
        hints = typing.get_type_hints(cls)
        return tuple(Setting.of(field, hints[field.name]) for field in dataclasses.fields(cls))

    @classmethod
    def json_schema(cls) -> dict[str, dict]:
        """Key -> its JSON Schema, as the workflow schema's `$defs.train_keys` holds it."""
        return {setting.name: setting.json_schema() for setting in cls.describe()}

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainSettings":
        """Settings from a mapping such as `as_dict()` gives; keys it leaves out take their default."""
        known = [setting.name for setting in cls.describe()]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(f"unknown training key(s) {', '.join(unknown)}; known keys: {', '.join(known)}")
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """Builtins only, keys sorted, lists for sizes: equal settings have equal reprs and JSON."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in sorted(dataclasses.asdict(self).items())}


@dataclasses.dataclass(frozen=True)
class Setting:
    """One training key as a form or a schema needs it."""

    name: str
    kind: str  # "choice", "bool", "int", "float", or "list" (of `item`)
    default: Any  # as TrainSettings holds it: a tuple for sizes, None for "off"
    help: str
    choices: tuple[str, ...] = ()
    item: str | None = None  # a list's item kind, "int" or "float"
    length: int | None = None  # a list's fixed length
    min_items: int = 0
    nullable: bool = False
    bounds: Mapping[str, float] = dataclasses.field(default_factory=dict)  # of the number, or of each item

    @classmethod
    def of(cls, field: dataclasses.Field, hint: Any) -> "Setting":
        """Read a TrainSettings field: its type hint says the kind, its metadata the rest."""
        facts = {"name": field.name, "default": field.default, "help": field.metadata["help"],
                 "min_items": field.metadata["min_items"], "bounds": field.metadata["bounds"]}
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is Literal:
            return cls(kind="choice", choices=args, **facts)
        if origin is tuple:
            length = None if args[-1] is Ellipsis else len(args)
            return cls(kind="list", item=args[0].__name__, length=length, **facts)
        if origin is types.UnionType and type(None) in args:
            (inner,) = (arg for arg in args if arg is not type(None))
            return cls(kind=inner.__name__, nullable=True, **facts)
        return cls(kind=hint.__name__, **facts)

    def canonical(self, value: Any) -> Any:
        """`value` in its one spelling; ConfigError naming the key if it cannot be used."""
        if value is None and self.nullable:
            return value
        if self.kind == "list":
            if (isinstance(value, (list, tuple)) and len(value) >= self.min_items
                    and self.length in (None, len(value))):
                items = tuple(_number(self.item, item, self.bounds) for item in value)
                if None not in items:
                    return items
        elif self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
        elif self.kind == "bool":
            if isinstance(value, bool):
                return value
        else:
            number = _number(self.kind, value, self.bounds)
            if number is not None:
                return number
        _refuse(self.name, value, self.expected())

    def expected(self) -> str:
        """What a value must be, in words."""
        if self.kind == "choice":
            return f"one of {', '.join(self.choices)}"
        if self.kind == "bool":
            return "true or false"
        if self.kind == "list":
            noun = {"int": "integer", "float": "number"}[self.item]
            if self.length is not None:
                return f"{self.length} {noun}s{_range_words(self.bounds)}"
            least = "at least one " if self.min_items == 1 else ""
            return f"a list of {least}{noun if least else noun + 's'}{_range_words(self.bounds)}"
        words = f"{'an integer' if self.kind == 'int' else 'a number'}{_range_words(self.bounds)}"
        return f"null or {words}" if self.nullable else words

    def json_schema(self) -> dict[str, Any]:
        if self.kind == "choice":
            schema: dict[str, Any] = {"enum": list(self.choices)}
        elif self.kind == "list":
            schema = {"type": "array", "items": {"type": _JSON_TYPES[self.item], **self.bounds}}
            if self.length is not None:
                schema.update(minItems=self.length, maxItems=self.length)
            elif self.min_items:
                schema["minItems"] = self.min_items
        else:
            kind = _JSON_TYPES[self.kind]
            schema = {"type": [kind, "null"] if self.nullable else kind, **self.bounds}
        default = list(self.default) if isinstance(self.default, tuple) else self.default
        return {**schema, "description": self.help, "default": default}


_JSON_TYPES = {"bool": "boolean", "int": "integer", "float": "number"}


def _number(kind: str, value: Any, bounds: Mapping[str, float]) -> int | float | None:
    """`value` as a finite int or float within `bounds`, or None if it is not one."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        return None
    if kind == "int":
        if not (isinstance(value, numbers.Integral) or float(value).is_integer()):
            return None
        value = int(value)
    else:
        value = float(value)
    inside = (
        value >= bounds.get("minimum", -math.inf) and value > bounds.get("exclusiveMinimum", -math.inf)
        and value <= bounds.get("maximum", math.inf) and value < bounds.get("exclusiveMaximum", math.inf)
    )
    return value if inside else None


_LOW = {"minimum": "[", "exclusiveMinimum": "("}
_HIGH = {"maximum": "]", "exclusiveMaximum": ")"}
_ALONE = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def _range_words(bounds: Mapping[str, float]) -> str:
    """" in [0, 1)", " > 0" or "" for no bounds."""
    low = [(_LOW[key], value) for key, value in bounds.items() if key in _LOW]
    high = [(_HIGH[key], value) for key, value in bounds.items() if key in _HIGH]
    if low and high:
        return f" in {low[0][0]}{low[0][1]:g}, {high[0][1]:g}{high[0][0]}"
    return "".join(f" {_ALONE[key]} {value:g}" for key, value in bounds.items())


def _refuse(key: str, value: Any, expected: str) -> typing.NoReturn:
    raise ConfigError(f"{key}: {value!r} cannot be used; expected {expected}")
