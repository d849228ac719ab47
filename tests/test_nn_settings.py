"""TrainSettings: defaults, checks, canonical values, the rules between keys, and the schema it writes."""

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.nn import TrainSettings, fit
from mnist_pipeline.workflow.config import load_schema

REPO = Path(__file__).resolve().parents[1]


def test_the_workflow_schema_takes_its_train_keys_from_train_settings():
    """One home per default: the schema file holds no copy of the train keys, and the schema the
    workflow validates with has exactly what TrainSettings says, in `train` and in overrides."""
    written = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert written["$defs"]["train_keys"] == {}
    schema, expected = load_schema(REPO / "workflow/schemas/config.schema.yaml"), TrainSettings.json_schema()
    for section in ("train_keys", "train", "train_overrides"):
        keys = schema["$defs"][section] if section == "train_keys" else schema["$defs"][section]["properties"]
        assert keys == expected and list(keys) == list(expected), section


def test_fit_runs_from_the_installed_package_alone(tmp_path):
    # The package copied on its own, run from an unrelated directory: no workflow file is in reach.
    shutil.copytree(REPO / "src/mnist_pipeline", tmp_path / "site/mnist_pipeline",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (tmp_path / "elsewhere").mkdir()
    program = textwrap.dedent("""
        import numpy as np
        from mnist_pipeline.nn import TrainSettings, fit
        rng = np.random.default_rng(0)
        x_train, y_train = rng.standard_normal((64, 20), dtype=np.float32), rng.integers(0, 10, 64)
        x_val, y_val = x_train[:16], y_train[:16]
        result = fit(TrainSettings(hidden=[64], epochs=1), x_train, y_train, x_val, y_val)
        print(result.epochs_run, result.model.architecture["layers"][0]["n_out"])
    """)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", program], cwd=tmp_path / "elsewhere", env=env,
                          capture_output=True, text=True, check=True)
    assert done.stdout.split() == ["1", "64"]


def test_every_key_not_given_is_at_its_default():
    settings = TrainSettings(hidden=[64], epochs=1)
    for setting in TrainSettings.describe():
        if setting.name not in ("hidden", "epochs"):
            assert getattr(settings, setting.name) == setting.default, setting.name
    assert settings.hidden == (64,) and settings.epochs == 1


def test_the_same_value_written_another_way_is_the_same_settings():
    plain = TrainSettings(epochs=20, hidden=[256, 128], learning_rate=0.1, dropout=0.0, grad_clip=1.0, betas=[0.9, 0.99])
    other = TrainSettings(epochs=20.0, hidden=(np.int64(256), 128.0), learning_rate=1e-1, dropout=0, grad_clip=1,
                          betas=(np.float64(0.9), 0.99))
    assert plain == other and hash(plain) == hash(other)
    assert repr(plain.as_dict()) == repr(other.as_dict())
    assert type(other.epochs) is int and type(other.hidden[0]) is int and type(other.dropout) is float
    assert type(other.grad_clip) is float


def test_as_dict_is_sorted_builtins_and_round_trips():
    settings = TrainSettings(model="cnn", conv_channels=[8], grad_clip=2.5)
    values = settings.as_dict()
    assert list(values) == sorted(values)
    assert values["conv_channels"] == [8] and values["betas"] == [0.9, 0.999]
    assert TrainSettings.from_dict(values) == settings
    assert TrainSettings.from_dict({}) == TrainSettings()


def test_settings_are_immutable():
    settings = TrainSettings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.epochs = 3
    changed = dataclasses.replace(settings, epochs=3)
    assert changed.epochs == 3 and settings.epochs == 20


@pytest.mark.parametrize(
    "key,value,expected",
    [("optimizer", "rmsprop", "one of sgd, momentum, nesterov, adam, adamw"), ("learning_rate", 0, "a number > 0"),
     ("epochs", 0, "an integer >= 1"), ("epochs", 2.5, "an integer >= 1"), ("hidden", [0], "a list of integers >= 1"),
     ("hidden", 64, "a list of integers >= 1"), ("batch_norm", "yes", "true or false"), ("betas", [0.9], "2 numbers in [0, 1)"),
     ("betas", [0.9, 1.0], "2 numbers in [0, 1)"), ("grad_clip", -1.0, "null or a number > 0"),
     ("dropout", 1.0, "a number in [0, 1)"), ("model", "rnn", "one of mlp, cnn"), ("seed", -1, "an integer >= 0"),
     ("conv_channels", [], "a list of at least one integer >= 1"), ("step_gamma", 0, "a number in (0, 1]"),
     ("learning_rate", float("inf"), "a number > 0"), ("learning_rate", "0.1", "a number > 0"),
     ("weight_decay", float("nan"), "a number >= 0"), ("epochs", True, "an integer >= 1")],
)
def test_a_bad_value_is_refused_naming_key_value_and_what_was_expected(key, value, expected):
    with pytest.raises(ConfigError) as info:
        TrainSettings(**{key: value})
    assert str(info.value) == f"{key}: {value!r} cannot be used; expected {expected}"


def test_warmup_must_leave_epochs_for_the_schedule():
    assert TrainSettings(epochs=3, warmup_epochs=2).warmup_epochs == 2
    with pytest.raises(ConfigError, match=r"^warmup_epochs: 3 cannot be used; expected fewer than epochs \(3\)"):
        TrainSettings(epochs=3, warmup_epochs=3)


def test_a_step_schedule_must_step_within_the_epochs():
    assert TrainSettings(schedule="step", epochs=5, warmup_epochs=1, step_epochs=3).step_epochs == 3
    with pytest.raises(ConfigError, match=r"^step_epochs: 4 cannot be used; expected fewer than epochs - warmup_epochs \(4\)"):
        TrainSettings(schedule="step", epochs=5, warmup_epochs=1, step_epochs=4)
    # Other schedules ignore step_epochs, so the default of 10 does not stand in the way of 5 epochs.
    assert TrainSettings(schedule="cosine", epochs=5).step_epochs == 10


def test_an_unknown_key_is_named_with_the_known_ones():
    with pytest.raises(ConfigError, match=r"unknown training key\(s\) lr, optimiser; known keys: model, hidden"):
        TrainSettings.from_dict({"lr": 0.1, "optimiser": "sgd", "epochs": 2})


def test_describe_gives_a_form_every_key_with_default_help_and_choices():
    described = {setting.name: setting for setting in TrainSettings.describe()}
    assert list(described) == [field.name for field in dataclasses.fields(TrainSettings)]
    assert all(setting.help for setting in described.values())
    assert described["optimizer"].kind == "choice" and described["optimizer"].choices == ("sgd", "momentum", "nesterov", "adam", "adamw")
    assert described["hidden"].kind == "list" and described["hidden"].item == "int" and described["hidden"].default == (1024, 512)
    assert described["betas"].length == 2 and described["betas"].item == "float"
    assert described["grad_clip"].nullable and described["grad_clip"].kind == "float"
    assert described["dropout"].bounds == {"minimum": 0, "exclusiveMaximum": 1}
    assert described["batch_norm"].kind == "bool" and described["epochs"].kind == "int"
    assert {key: setting.default for key, setting in described.items()} == dataclasses.asdict(TrainSettings())


def test_fit_takes_settings_not_a_dict():
    x, y = np.zeros((4, 3), np.float32), np.zeros(4, int)
    with pytest.raises(TypeError, match="TrainSettings.from_dict"):
        fit(TrainSettings().as_dict(), x, y, x, y)
