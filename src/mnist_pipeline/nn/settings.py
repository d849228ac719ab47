"""Check the training settings dict before any work starts.

The workflow validates the config against its JSON schema; this is the network's own guard
for callers that build settings by hand, and for the values that only make sense together.
Every problem is a ConfigError that names the key.
"""

from __future__ import annotations

import numbers

from mnist_pipeline.errors import ConfigError

ENUMS = {
    "model": ("mlp", "cnn"),
    "activation": ("relu", "leaky_relu", "tanh", "sigmoid"),
    "init": ("he", "glorot"),
    "optimizer": ("sgd", "momentum", "nesterov", "adam", "adamw"),
    "schedule": ("constant", "step", "cosine"),
}
POSITIVE_INTS = ("epochs", "batch_size", "step_epochs")
NON_NEGATIVE_INTS = ("warmup_epochs", "early_stopping", "seed")
# key -> (lowest, highest, lowest allowed, highest allowed)
RANGES = {
    "learning_rate": (0.0, float("inf"), False, False),
    "momentum": (0.0, 1.0, True, False),
    "dropout": (0.0, 1.0, True, False),
    "weight_decay": (0.0, float("inf"), True, False),
    "step_gamma": (0.0, 1.0, False, True),
    "label_smoothing": (0.0, 1.0, True, False),
}
KEYS = (
    *ENUMS, *POSITIVE_INTS, *NON_NEGATIVE_INTS, *RANGES,
    "hidden", "conv_channels", "batch_norm", "betas", "grad_clip",
)


def check_settings(settings: dict) -> None:
    """Raise ConfigError naming the first key that is missing or whose value cannot be honoured."""
    missing = [key for key in KEYS if key not in settings]
    if missing:
        raise ConfigError(f"training settings lack the key(s) {', '.join(missing)}")
    for key, allowed in ENUMS.items():
        if settings[key] not in allowed:
            _bad(key, settings[key], f"one of {', '.join(allowed)}")
    for key in POSITIVE_INTS:
        if not _is_int(settings[key]) or settings[key] < 1:
            _bad(key, settings[key], "an integer >= 1")
    for key in NON_NEGATIVE_INTS:
        if not _is_int(settings[key]) or settings[key] < 0:
            _bad(key, settings[key], "an integer >= 0")
    for key, (low, high, low_ok, high_ok) in RANGES.items():
        value = settings[key]
        if not _is_number(value) or not (
            (low < value or (low_ok and value == low)) and (value < high or (high_ok and value == high))
        ):
            _bad(key, value, f"a number in {'[' if low_ok else '('}{low:g}, {high:g}{']' if high_ok else ')'}")
    for key in ("hidden", "conv_channels"):
        sizes = settings[key]
        if not isinstance(sizes, (list, tuple)) or not all(_is_int(s) and s >= 1 for s in sizes):
            _bad(key, sizes, "a list of integers >= 1")
    if settings["model"] == "cnn" and not settings["conv_channels"]:
        _bad("conv_channels", settings["conv_channels"], "at least one block for model: cnn")
    if not isinstance(settings["batch_norm"], bool):
        _bad("batch_norm", settings["batch_norm"], "true or false")
    betas = settings["betas"]
    if not isinstance(betas, (list, tuple)) or len(betas) != 2 or not all(_is_number(b) and 0 <= b < 1 for b in betas):
        _bad("betas", betas, "two numbers in [0, 1)")
    clip = settings["grad_clip"]
    if clip is not None and not (_is_number(clip) and clip > 0):
        _bad("grad_clip", clip, "null or a number > 0")


def _is_int(value) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _bad(key: str, value, expected: str) -> None:
    raise ConfigError(f"{key}: {value!r} cannot be used; expected {expected}")
