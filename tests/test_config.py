import hashlib
from pathlib import Path

import pytest
import yaml

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.workflow.config import experiment_settings, keys_sorted, load_schema, load_yaml, resolve_config

REPO = Path(__file__).resolve().parents[1]
SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")


def shipped_config() -> dict:
    return yaml.safe_load((REPO / "config.yaml").read_text())


def test_shipped_config_is_valid_and_has_one_baseline_experiment():
    config = resolve_config(shipped_config(), SCHEMA)
    assert list(config["experiments"]) == ["baseline"]
    assert config["dataset"] == "mnist" and config["source"] is None
    # Every schema default is filled in, so a stage never guesses.
    assert set(config["train"]) == set(SCHEMA["$defs"]["train_keys"])


def test_same_value_written_another_way_gives_identical_settings():
    plain = shipped_config()
    other = shipped_config()
    other["prepare"]["val_fraction"] = "1e-1"  # what YAML 1.1 makes of `1e-1`
    other["train"]["epochs"] = float(other["train"]["epochs"])
    other["train"]["learning_rate"] = "2e-3"
    other["train"] = dict(reversed(list(other["train"].items())))
    a, b = resolve_config(plain, SCHEMA), resolve_config(other, SCHEMA)
    assert repr(a) == repr(b)
    assert repr(experiment_settings(a, SCHEMA)) == repr(experiment_settings(b, SCHEMA))


def test_experiment_overrides_only_the_keys_it_names():
    config = shipped_config()
    config["train"]["epochs"] = 7
    config["experiments"] = {"wide": {"hidden": [512]}, "baseline": {}}
    settings = experiment_settings(resolve_config(config, SCHEMA), SCHEMA)
    assert settings["wide"]["hidden"] == [512] and settings["wide"]["epochs"] == 7
    assert settings["baseline"]["hidden"] == [1024, 512]


@pytest.mark.parametrize(
    "path, value, words",
    [
        (("train", "optimizr"), "adam", ["train", "optimizr", "known keys"]),
        (("train", "learning_rate"), -1, ["train.learning_rate", "-1"]),
        (("train", "optimizer"), "rmsprop", ["train.optimizer", "'rmsprop'", "'adam'"]),
        (("prepare", "val_fraction"), 1.5, ["prepare.val_fraction", "1.5"]),
        (("experiments", "raw"), {}, ["experiments", "raw"]),
        (("experiments", "wide"), {"epochs": 0}, ["experiments.wide.epochs", "0"]),
        (("dataset",), "../etc", ["dataset", "../etc"]),
    ],
)
def test_bad_key_or_value_is_named(path, value, words):
    config = shipped_config()
    node = config
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    with pytest.raises(ConfigError) as info:
        resolve_config(config, SCHEMA)
    for word in words:
        assert word in str(info.value)


def test_unknown_dataset_needs_a_source(tmp_path):
    config = shipped_config()
    config["dataset"] = "my-digits"
    with pytest.raises(ConfigError, match="source"):
        resolve_config(config, SCHEMA)
    config["source"] = str(tmp_path)
    assert resolve_config(config, SCHEMA)["dataset"] == "my-digits"


@pytest.mark.parametrize("scheme", ["", "file://"])
def test_a_local_source_that_does_not_exist_is_refused(tmp_path, scheme):
    config = shipped_config()
    config["source"] = f"{scheme}{tmp_path / 'mistyped'}"
    with pytest.raises(ConfigError, match=r"'source': .*mistyped' does not exist; expected a directory"):
        resolve_config(config, SCHEMA)
    (tmp_path / "mistyped").write_text("a file")
    with pytest.raises(ConfigError, match="mistyped' is not a directory"):
        resolve_config(config, SCHEMA)


@pytest.mark.parametrize("inside", ["results/mnist/raw", "results", "./results/../results/mnist"])
def test_a_source_among_the_outputs_is_refused(tmp_path, monkeypatch, inside):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results/mnist/raw").mkdir(parents=True)
    config = shipped_config()
    config["source"] = inside
    with pytest.raises(ConfigError, match=r"'source': .* lies inside results/, .*expected a directory outside it"):
        resolve_config(config, SCHEMA, results_dir="results")
    config["source"] = str(tmp_path)  # the directory that holds results/ is not inside it
    assert resolve_config(config, SCHEMA, results_dir="results")["source"] == str(tmp_path)


def test_booleans_and_null_as_the_command_line_spells_them():
    # What Snakemake makes of --config train='{batch_norm: false, grad_clip: null}': strings.
    config = shipped_config()
    config["source"] = "null"
    config["train"].update(batch_norm="false", grad_clip="null")
    config["experiments"] = {"baseline": {"batch_norm": "True", "grad_clip": "~"}, "clipped": {"grad_clip": "1e-1"}}
    config["sweep"] = {"grid": {"batch_norm": ["true", "FALSE"], "grad_clip": ["null", "0.1"]}}
    resolved = resolve_config(config, SCHEMA)
    assert resolved["source"] is None
    assert resolved["train"]["batch_norm"] is False and resolved["train"]["grad_clip"] is None
    assert resolved["experiments"]["baseline"] == {"batch_norm": True, "grad_clip": None}
    assert resolved["experiments"]["clipped"] == {"grad_clip": 0.1}
    assert resolved["experiments"]["sweep_batch_norm-false_grad_clip-none"] == {"batch_norm": False, "grad_clip": None}
    assert resolved["experiments"]["sweep_batch_norm-true_grad_clip-0.1"] == {"batch_norm": True, "grad_clip": 0.1}


def test_a_word_is_not_taken_where_the_schema_does_not_allow_its_type():
    config = shipped_config()
    config["train"]["learning_rate"] = "null"  # not nullable
    config["train"]["batch_norm"] = "yes"  # not a YAML 1.2 boolean
    with pytest.raises(ConfigError) as info:
        resolve_config(config, SCHEMA)
    assert "'train.batch_norm': 'yes' is not of type 'boolean'" in str(info.value)
    assert "'train.learning_rate': 'null' is not of type 'number'" in str(info.value)


def test_canonical_sorts_keys_at_every_depth():
    assert list(keys_sorted({"b": {"d": 1, "c": 2}, "a": [{"z": 0, "y": 1}]})) == ["a", "b"]
    assert list(keys_sorted({"b": {"d": 1, "c": 2}})["b"]) == ["c", "d"]
    assert list(keys_sorted({"a": [{"z": 0, "y": 1}]})["a"][0]) == ["y", "z"]


def test_sweep_expands_grid_times_seeds_with_names_from_values():
    config = shipped_config()
    config["sweep"] = {"grid": {"learning_rate": [0.001, "3e-3"], "hidden": [[128], [256, 128]]}, "seeds": [0, 1]}
    resolved = resolve_config(config, SCHEMA)
    names = [name for name in resolved["experiments"] if name != "baseline"]
    assert len(names) == 8
    assert "sweep_hidden-256x128_learning_rate-0.003_seed-1" in names
    settings = experiment_settings(resolved, SCHEMA)["sweep_hidden-256x128_learning_rate-0.003_seed-1"]
    assert settings["hidden"] == [256, 128] and settings["learning_rate"] == 0.003 and settings["seed"] == 1
    # Listing the grid keys in another order names the same experiments.
    config["sweep"]["grid"] = dict(reversed(list(config["sweep"]["grid"].items())))
    assert list(resolve_config(config, SCHEMA)["experiments"]) == list(resolved["experiments"])


def test_sweep_list_combines_with_grid():
    config = shipped_config()
    config["sweep"] = {"prefix": "opt", "grid": {"epochs": [5]}, "list": [{"optimizer": "sgd", "learning_rate": 0.1}, {"optimizer": "adam"}]}
    names = set(resolve_config(config, SCHEMA)["experiments"]) - {"baseline"}
    assert names == {"opt_epochs-5_learning_rate-0.1_optimizer-sgd", "opt_epochs-5_optimizer-adam"}


@pytest.mark.parametrize(
    "sweep, words",
    [
        ({"grid": {"lr": [0.1]}}, ["sweep.grid.lr", "not a `train` key"]),
        ({"grid": {"learning_rate": [0.1, -1]}}, ["sweep.grid.learning_rate[1]", "-1"]),
        ({"grid": {"optimizer": ["adam", "lion"]}}, ["sweep.grid.optimizer[1]", "'lion'"]),
        ({"list": [{"epochz": 3}]}, ["sweep.list.0", "epochz"]),
    ],
)
def test_bad_sweep_is_named(sweep, words):
    config = shipped_config()
    config["sweep"] = sweep
    with pytest.raises(ConfigError) as info:
        resolve_config(config, SCHEMA)
    for word in words:
        assert word in str(info.value)


def test_a_config_of_only_a_dataset_gets_every_default():
    config = resolve_config({"dataset": "mnist"}, SCHEMA)
    assert config["prepare"] == {"seed": 0, "val_fraction": 0.1}
    assert list(config["experiments"]) == ["baseline"] and config["train"]["model"] == "mlp"


def test_shipped_train_values_are_the_schema_defaults():
    # config.yaml shows the training defaults a user is most likely to edit; they must be the
    # same values an empty `train:` gets, or the README and the schema would disagree.
    assert resolve_config(shipped_config(), SCHEMA)["train"] == resolve_config({"dataset": "mnist"}, SCHEMA)["train"]


def test_unusable_source_is_refused_before_any_job():
    config = shipped_config()
    config["source"] = "ftp://mirror.example/mnist/"
    with pytest.raises(ConfigError, match="source.*unsupported scheme 'ftp'"):
        resolve_config(config, SCHEMA)


def test_train_params_keep_their_repr():
    # The train rule's params, and what run ids are made of: a change to this string (recorded
    # before TrainSettings made them, then with the augment_ keys added) retrains every model.
    settings = experiment_settings(resolve_config(shipped_config(), SCHEMA), SCHEMA)
    assert repr(settings) == (
        "{'baseline': {'activation': 'relu', 'augment_erase': 0.0, 'augment_flip': False, 'augment_shift': 0, 'batch_norm': True, 'batch_size': 128, 'betas': [0.9, 0.999], "
        "'conv_channels': [32, 64], 'dropout': 0.4, 'early_stopping': 0, 'epochs': 20, 'grad_clip': None, "
        "'hidden': [1024, 512], 'init': 'he', 'label_smoothing': 0.1, 'learning_rate': 0.002, 'model': 'mlp', "
        "'momentum': 0.9, 'optimizer': 'adamw', 'schedule': 'cosine', 'seed': 0, 'step_epochs': 10, "
        "'step_gamma': 0.1, 'warmup_epochs': 0, 'weight_decay': 0.01}}"
    )


@pytest.mark.parametrize(
    "train, experiments, sweep, words",
    [
        ({"warmup_epochs": 3}, {"short": {"epochs": 3}}, None, ["experiment 'short'", "warmup_epochs: 3", "fewer than epochs (3)"]),
        ({"schedule": "step"}, {"baseline": {}}, {"grid": {"epochs": [12, 6]}},
         ["experiment 'sweep_epochs-6'", "step_epochs: 10", "schedule: step"]),
    ],
)
def test_every_experiment_is_checked_as_a_whole(train, experiments, sweep, words):
    # Each value alone is valid; together with `train` (or a sweep point) they cannot be trained.
    config = {**shipped_config(), "experiments": experiments, "sweep": sweep}
    config["train"] = {**config["train"], **train}
    with pytest.raises(ConfigError) as info:
        experiment_settings(resolve_config(config, SCHEMA), SCHEMA)
    for word in words:
        assert word in str(info.value)


# --- names that cannot work, and configs too large to walk (issue 21) -----------------------


def name_of(length: int) -> str:
    """A valid name of `length` characters that repeats no part (Snakemake refuses those)."""
    return "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(length // 64 + 1))[:length]


def refusal(config: dict) -> str:
    with pytest.raises(ConfigError) as info:
        resolve_config(config, SCHEMA)
    return str(info.value)


def test_an_experiment_name_must_leave_room_for_the_suffixes_the_layout_adds():
    # results/{dataset}/logs/publish/{name}.log: a file name holds at most 255 bytes.
    config = {**shipped_config(), "experiments": {name_of(251): {}}}
    assert list(resolve_config(config, SCHEMA)["experiments"]) == [name_of(251)]
    message = refusal({**shipped_config(), "experiments": {name_of(252): {}}})
    assert "config key 'experiments'" in message and "252 characters long; expected at most 251" in message
    message = refusal({**shipped_config(), "experiments": {name_of(300): {}}})
    assert name_of(300) not in message and len(message) < 500


def test_a_dataset_name_must_fit_a_folder_name(tmp_path):
    config = {**shipped_config(), "source": str(tmp_path), "dataset": name_of(255)}
    assert resolve_config(config, SCHEMA)["dataset"] == name_of(255)
    message = refusal({**config, "dataset": name_of(300)})
    assert "config key 'dataset'" in message and "expected at most 255" in message and len(message) < 500


def test_a_name_a_sweep_makes_is_held_to_the_same_limit():
    config = {**shipped_config(), "sweep": {"prefix": name_of(240), "grid": {"hidden": [[1024, 512]]}}}
    message = refusal(config)
    assert "config key 'experiments'" in message and "expected at most 251" in message


@pytest.mark.parametrize("name", ["report.html", "report.md", "raw", "parsed", "prepared", "runs", "logs", "benchmarks", "figures"])
def test_an_experiment_cannot_take_a_name_the_results_layout_uses(name):
    message = refusal({**shipped_config(), "experiments": {name: {}}})
    assert f"config key 'experiments': {name!r} is a name results/{{dataset}}/ uses" in message


@pytest.mark.parametrize("name", [".download", ".hidden", "_comparison", "a/b", "../x", "a b", "été"])
def test_an_experiment_name_is_a_plain_file_name(name):
    assert f"config key 'experiments': {name!r} does not match" in refusal({**shipped_config(), "experiments": {name: {}}})


@pytest.mark.parametrize("key, name", [("experiments", "a" * 20), ("experiments", "run" + "01" * 20), ("dataset", "x" + "ab" * 20)])
def test_a_name_snakemake_takes_for_a_runaway_wildcard_is_refused(tmp_path, key, name):
    config = {**shipped_config(), "source": str(tmp_path)}
    config[key] = {name: {}} if key == "experiments" else name
    assert f"config key {key!r}: {name!r} ends in" in refusal(config)
    assert resolve_config({**config, key: {name[:-2] + "zz": {}} if key == "experiments" else name[:-2] + "zz"}, SCHEMA)


def alias_bomb(levels: int, width: int = 9) -> str:
    """YAML of a few hundred bytes under train.hidden whose lists, with aliases followed, hold width**levels values."""
    lines = ["train:", "  hidden:", f"    - &l0 [{', '.join(['1'] * width)}]"]
    lines += [f"    - &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_in_bounded_time_and_memory_naming_the_key():
    import time
    import tracemalloc

    bomb = yaml.safe_load(alias_bomb(12))  # 9**12 = 282 billion values once expanded; a few objects loaded
    config = {**shipped_config(), "train": {**shipped_config()["train"], **bomb["train"]}}
    tracemalloc.start()
    started = time.perf_counter()
    message = refusal(config)
    seconds, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert "more than 100,000 values" in message and "train.hidden" in message and "alias" in message
    assert seconds < 5 and peak < 100e6 and len(message) < 500


def test_a_bomb_below_the_bound_gives_a_short_message():
    # 9**5 = 59,049 values: within the bound, so validated, and refused for what it is.
    bomb = yaml.safe_load(alias_bomb(5))
    message = refusal({**shipped_config(), "train": {**shipped_config()["train"], **bomb["train"]}})
    assert "config key 'train.hidden.0'" in message and "is not of type 'integer'" in message
    assert len(message) < 2000


def test_deep_nesting_and_huge_sweeps_are_refused_naming_the_key():
    deep: list = [1]
    for _ in range(20):
        deep = [deep]
    message = refusal({**shipped_config(), "train": {"hidden": deep}})
    assert "key 'train.hidden[0][0]" in message and "nested more than 16 levels" in message
    sweep = {"grid": {"epochs": list(range(1, 101)), "seed": list(range(100))}}
    assert "config key 'sweep': makes 10,000 experiments" in refusal({**shipped_config(), "sweep": sweep})


def test_many_problems_and_long_values_make_a_bounded_message(tmp_path):
    config = {**shipped_config(), **{f"unknown_{i}": i for i in range(500)}}
    config["experiments"] = {f"bad name {i}": {"epochs": -i} for i in range(500)}
    message = refusal(config)
    assert "... and " in message and "more problems" in message and len(message) < 5000
    message = refusal({**shipped_config(), "source": str(tmp_path / ("x" * 5000))})
    assert "config key 'source'" in message and "(5,0" in message and "File name too long" in message and len(message) < 600


# --- YAML files the project reads itself (config.load_yaml) ---------------------------------


def test_load_yaml_reads_a_config_file(tmp_path):
    path = tmp_path / "experiments.yaml"
    path.write_text("experiments:\n  wide: {hidden: [2048]}\n", encoding="utf-8")
    assert load_yaml(path) == {"experiments": {"wide": {"hidden": [2048]}}}


@pytest.mark.parametrize(
    "content, words",
    [
        (b"dataset: mnist\nexperiments:\n  caf\xe9: {}\n", ["byte 0xe9 at line 3, column 6 is not UTF-8", "expected UTF-8"]),
        (b"experiments: [\n", ["not valid YAML"]),
        (alias_bomb(12).encode(), ["more than 100,000 values", "train.hidden"]),
        (b"train: {hidden: " + b"[" * 1000 + b"]" * 1000 + b"}\n", ["nested"]),
        (b"#" * (2 << 20), ["bytes; expected a config file of at most"]),
    ],
    ids=["not-utf8", "not-yaml", "alias-bomb", "deep", "huge"],
)
def test_load_yaml_refuses_a_bad_file_naming_it(tmp_path, content, words):
    path = tmp_path / "experiments.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_yaml(path)
    assert str(info.value).startswith(f"{path}: ") and len(str(info.value)) < 1000
    for word in words:
        assert word in str(info.value)


def test_an_unknown_corruption_family_is_refused_with_the_config():
    """Where every other key is checked, so the app's Train refuses it as the workflow does."""
    config = {"source": "/", "robustness": {"families": ["translate", "fog"]}}
    with pytest.raises(ConfigError, match="'robustness.families': unknown corruption family 'fog'; known: gaussian_noise"):
        resolve_config(config, SCHEMA)
    assert resolve_config({"source": "/", "robustness": None}, SCHEMA)["robustness"] is None
