"""The app's Train page: the form built from the schema, experiments.yaml, and runs of the real
workflow started, followed and stopped from the app (AppTest here, Chromium in test_app_train_browser)."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from streamlit.testing.v1 import AppTest

from helpers import REPO, copy_workflow, planned_jobs, snakemake
from mnist_pipeline.app.invocations import Invocations, steps_done, why_it_failed
from mnist_pipeline.app.train_form import FormField, as_text, overrides, read_value, train_fields
from mnist_pipeline.errors import ConfigError, RunInProgressError
from mnist_pipeline.layout import RESULTS_ENV
from mnist_pipeline.nn import TrainSettings, fit
from mnist_pipeline.nn.settings import Setting
from mnist_pipeline.nn.train import epoch_text
from mnist_pipeline.workflow.checkout import find_workflow, merge_config, run_targets
from mnist_pipeline.workflow.config import load_schema, resolve_config
from mnist_pipeline.workflow.progress import EpochRecords, planned_run, read_epochs, write_plan

APP = REPO / "src/mnist_pipeline/app/streamlit_app.py"
SCHEMA = load_schema(REPO / "workflow/schemas/config.schema.yaml")
TINY_TRAIN = {"hidden": [16], "batch_norm": False, "dropout": 0.0, "epochs": 3, "batch_size": 32,
              "optimizer": "adam", "learning_rate": 0.01}


def app_workflow(directory: Path, synthetic_dir: Path, **train) -> Path:
    """A workflow copy whose config.yaml trains tiny models on the synthetic dataset."""
    workdir = copy_workflow(directory)
    config = yaml.safe_load((workdir / "config.yaml").read_text())
    config.update(dataset="synthetic", source=str(synthetic_dir), prepare={"val_fraction": 0.2, "seed": 1},
                  train={**config["train"], **TINY_TRAIN, **train}, experiments={"baseline": {}})
    (workdir / "config.yaml").write_text(yaml.safe_dump(config))
    return workdir


# --- the form's fields ------------------------------------------------------------------------


def test_every_train_key_becomes_a_field_of_its_kind():
    keys = SCHEMA["$defs"]["train_keys"]
    defaults = resolve_config({"source": "/"}, SCHEMA)["train"]
    fields = {field.key: field for field in train_fields(defaults)}
    assert list(fields) == list(keys)
    assert fields["optimizer"].kind == "choice" and fields["optimizer"].choices == tuple(keys["optimizer"]["enum"])
    assert fields["hidden"].kind == "list" and fields["hidden"].default == keys["hidden"]["default"]
    assert fields["betas"].kind == "list" and fields["batch_norm"].kind == "boolean"
    assert fields["epochs"].kind == "integer" and fields["learning_rate"].kind == "number"
    assert fields["grad_clip"].kind == "optional" and fields["grad_clip"].default is None
    assert fields["dropout"].help == keys["dropout"]["description"]
    with pytest.raises(ValueError, match="'odd'"):
        train_fields({"odd": {}}, [Setting("odd", "dict", {}, "a mapping")])


def test_text_fields_read_as_yaml_so_the_workflow_judges_them():
    sizes, clip = FormField("hidden", "list", [64]), FormField("grad_clip", "optional", None)
    assert as_text(sizes, [256, 128]) == "256, 128" and read_value(sizes, "256, 128") == [256, 128]
    assert read_value(sizes, "") == [] and read_value(sizes, "64, big") == [64, "big"]
    assert as_text(clip, None) == "" and read_value(clip, " ") is None and read_value(clip, "1.5") == 1.5
    with pytest.raises(ConfigError, match="train key 'hidden': cannot read '64, \\['; expected numbers separated by commas"):
        read_value(sizes, "64, [")
    fields = [FormField("epochs", "integer", 20), FormField("hidden", "list", [64])]
    assert overrides(fields, {"epochs": 20, "hidden": [32]}) == {"hidden": [32]}


# --- experiments.yaml -------------------------------------------------------------------------


@pytest.mark.slow
def test_experiments_file_is_checked_written_and_read_by_the_workflow(tmp_path, synthetic_dir):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    assert find_workflow(workdir / "results") is not None and find_workflow(tmp_path) is None
    workflow = find_workflow(workdir / "results")
    settings = workflow.add_experiment("wide", {"hidden": [64], "learning_rate": "1e-2"})
    assert settings["hidden"] == [64] and settings["epochs"] == TINY_TRAIN["epochs"]
    assert workflow.app_experiments() == {"wide": {"hidden": [64], "learning_rate": 0.01}}
    # Training a name again replaces its settings: what is left at the default is no longer overridden.
    workflow.add_experiment("wide", {"hidden": [64], "epochs": 9})
    assert workflow.add_experiment("wide", {"hidden": [64]})["learning_rate"] == TINY_TRAIN["learning_rate"]
    assert workflow.app_experiments() == {"wide": {"hidden": [64]}}
    # The workflow's own message, and nothing written.
    bad = merge_config(workflow.config(), {"experiments": {"neg": {"learning_rate": -1.0}}})
    with pytest.raises(ConfigError) as expected:
        resolve_config(bad, SCHEMA)
    with pytest.raises(ConfigError) as refused:
        workflow.add_experiment("neg", {"learning_rate": -1.0})
    assert str(refused.value) == str(expected.value) and "experiments.neg.learning_rate" in str(refused.value)
    with pytest.raises(ConfigError, match="'baseline' is defined in config.yaml"):
        workflow.add_experiment("baseline", {})
    assert set(workflow.app_experiments()) == {"wide"}
    # A plain snakemake run knows the app's experiment: only it is trained new after baseline
    # is (both are scored for robustness: the report needs it, baseline's metrics did not).
    snakemake(workdir, "results/synthetic/baseline/metrics.json")
    assert planned_jobs(workdir) == {"all": 1, "train": 1, "evaluate": 1, "robustness": 2, "publish": 1, "publish_robustness": 2, "report": 1}
    assert run_targets(workflow, workflow.resolved(), "wide") == [
        "results/synthetic/wide/model.npz", "results/synthetic/wide/metrics.json",
        "results/synthetic/report.html", "results/synthetic/report.md"]
    (workdir / "results/synthetic/wide").mkdir()
    workflow.remove_experiment("wide")
    assert not workflow.experiments_file.exists() and not (workdir / "results/synthetic/wide").exists()
    # Nothing of wide's is planned; baseline's robustness was never scored, so it is.
    assert planned_jobs(workdir) == {"all": 1, "robustness": 1, "publish_robustness": 1, "report": 1}
    with pytest.raises(ConfigError, match="not one the app added"):
        workflow.remove_experiment("baseline")


# --- following a run ----------------------------------------------------------------------------


def test_epoch_records_are_what_fit_reports_and_the_log_line_says_the_same(tmp_path, caplog):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 5)).astype(np.float32), rng.integers(0, 3, 64)
    settings = TrainSettings(hidden=[4], epochs=2, batch_norm=False)
    with caplog.at_level(logging.INFO, logger="mnist_pipeline.nn.train"):
        result = fit(settings, x, y, x, y, n_classes=3, on_epoch=EpochRecords(tmp_path / "progress.jsonl"))
    rows = read_epochs(tmp_path / "progress.jsonl")
    assert rows == [{**kept, "epochs": 2} for kept in result.history]
    # The train log and the terminal show the same records, made into lines for people.
    assert [epoch_text(row) for row in rows] == [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert steps_done("1 of 5 steps (20%) done\nx\n3 of 5 steps (60%) done") == (3, 5) and steps_done("") is None


def test_a_half_written_last_record_is_left_for_later(tmp_path):
    path = tmp_path / "progress.jsonl"
    path.write_text('{"epoch": 1}\n{"epoch": 2, "train_lo')
    assert read_epochs(path) == [{"epoch": 1}]
    assert read_epochs(tmp_path / "missing.jsonl") == []


def test_the_plan_names_the_run_that_trains_each_experiment(tmp_path):
    runs = {"a": {"run": "111111111111"}, "b": {"run": "222222222222"}, "c": {"run": "111111111111"}}
    write_plan(tmp_path / "planned.json", runs, untrained={"111111111111"})
    assert planned_run(tmp_path / "planned.json", "c") == "111111111111"
    assert planned_run(tmp_path / "planned.json", "b") is None  # trained before: nothing to follow
    assert planned_run(tmp_path / "missing.json", "a") is None


def test_a_failed_run_is_explained_by_the_reason_its_stage_recorded(tmp_path):
    logs = tmp_path / "results/synthetic/runs/0123456789ab"
    logs.mkdir(parents=True)
    (logs / "train.log").write_text("Traceback\n  ...\nFAILED: TrainingDivergedError: training diverged: lower learning_rate\n")
    output = "Error in rule train:\n    jobid: 3\nShutting down, this might take some time.\n"
    reason = why_it_failed(output, tmp_path / "results/synthetic", since=0)
    assert reason.startswith("Why it failed:") and "runs/0123456789ab/train" in reason
    assert reason.rstrip().endswith("TrainingDivergedError: training diverged: lower learning_rate")
    # Refused before any job: no stage failed, so the end of Snakemake's own output says why.
    assert why_it_failed("Building DAG\nWorkflowError: invalid configuration: bad key\n", tmp_path / "none", since=0).endswith("bad key")


@pytest.mark.slow
def test_one_run_at_a_time_stop_then_continue(tmp_path, synthetic_dir, monkeypatch):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    workflow = find_workflow(workdir / "results")
    workflow.add_experiment("long", {"hidden": [256, 256], "epochs": 400})
    invocations = Invocations(workflow)
    targets = run_targets(workflow, workflow.resolved(), "long")
    invocations.start("long", targets)
    written = workflow.experiments_file.read_bytes()
    with pytest.raises(RunInProgressError, match="a run is in progress"):
        invocations.start("long", targets, prepare=lambda: workflow.add_experiment("refused", {"hidden": [8]}))
    assert workflow.experiments_file.read_bytes() == written  # the refused start wrote nothing
    # The page says so too, and adds nothing.
    at = train_page(workdir / "results", monkeypatch)
    at.text_input(key="experiment_name").input("second")
    next(b for b in at.button if b.label == "Train").click().run()
    assert "A run is in progress" in at.warning[0].value and set(workflow.app_experiments()) == {"long"}
    deadline = time.monotonic() + 120
    while not invocations.epochs(invocations.last(), "synthetic"):
        assert invocations.last().state == "running" and time.monotonic() < deadline, invocations.output()
        time.sleep(0.2)
    assert invocations.stop()
    while invocations.last().state == "running":
        assert time.monotonic() < deadline + 60, invocations.output()
        time.sleep(0.2)
    assert invocations.last().state == "stopped" and not invocations.busy()
    assert not (workdir / "results/synthetic/long/model.npz").exists()
    # The next run continues without --unlock, and finishes what was stopped.
    workflow.add_experiment("long", {"hidden": [256, 256], "epochs": 2})
    invocations.start("long", targets)
    while invocations.last().state == "running":
        assert time.monotonic() < deadline + 180, invocations.output()
        time.sleep(0.2)
    assert invocations.last().state == "done", invocations.output()
    assert [row["epoch"] for row in invocations.epochs(invocations.last(), "synthetic")] == [1, 2]


# --- the page, through AppTest ----------------------------------------------------------------


def train_page(results: Path, monkeypatch) -> AppTest:
    monkeypatch.setenv(RESULTS_ENV, str(results))
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    at.radio(key="page").set_value("Train").run()
    assert not at.exception
    return at


def test_the_form_shows_every_key_at_its_default_with_its_help(tmp_path, synthetic_dir, monkeypatch):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir, optimizer="sgd")
    at = train_page(workdir / "results", monkeypatch)
    train = find_workflow(workdir / "results").resolved()["train"]
    keys = SCHEMA["$defs"]["train_keys"]
    assert at.selectbox(key="train_optimizer").value == "sgd" and at.selectbox(key="train_optimizer").options == keys["optimizer"]["enum"]
    assert at.text_input(key="train_hidden").value == "16" and at.text_input(key="train_betas").value == "0.9, 0.999"
    assert at.number_input(key="train_learning_rate").value == train["learning_rate"]
    assert at.number_input(key="train_epochs").value == 3 and at.checkbox(key="train_batch_norm").value is False
    assert at.text_input(key="train_grad_clip").value == ""
    assert at.number_input(key="train_dropout").help == keys["dropout"]["description"]
    widgets = {w.key for w in [*at.selectbox, *at.text_input, *at.number_input, *at.checkbox]}
    assert {f"train_{key}" for key in keys} <= widgets


def test_a_bad_value_is_refused_with_the_workflows_message(tmp_path, synthetic_dir, monkeypatch):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    at = train_page(workdir / "results", monkeypatch)
    at.text_input(key="experiment_name").input("fast")
    at.number_input(key="train_learning_rate").set_value(-0.5)
    at.text_input(key="train_hidden").input("64, 0")
    next(b for b in at.button if b.label == "Train").click().run()
    config = merge_config(find_workflow(workdir / "results").config(), {"experiments": {"fast": {"learning_rate": -0.5, "hidden": [64, 0]}}})
    with pytest.raises(ConfigError) as expected:
        resolve_config(config, SCHEMA)
    assert not at.exception and "refuses these settings" in at.error[0].value and at.code[0].value == str(expected.value)
    assert "experiments.fast.hidden.1" in at.code[0].value and "experiments.fast.learning_rate" in at.code[0].value
    assert not (workdir / "experiments.yaml").exists() and not (workdir / "results/.app/run.json").exists()


def test_without_a_workflow_beside_the_results_the_page_says_so(tmp_path, monkeypatch):
    (tmp_path / "results").mkdir()
    at = train_page(tmp_path / "results", monkeypatch)
    assert "Training needs the workflow" in at.info[0].value


def wait_for_end(invocations: Invocations, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while invocations.last() is None or invocations.last().state == "running":
        assert time.monotonic() < deadline, invocations.output()
        time.sleep(0.2)


@pytest.mark.slow
def test_a_failed_run_shows_why_in_the_page(tmp_path, synthetic_dir, monkeypatch):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    at = train_page(workdir / "results", monkeypatch)
    at.text_input(key="experiment_name").input("explodes")
    at.selectbox(key="train_optimizer").select("sgd")
    at.number_input(key="train_learning_rate").set_value(1e6)
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not at.error
    wait_for_end(Invocations(find_workflow(workdir / "results")))
    at.run()
    assert "The run of explodes failed" in at.error[0].value
    why = at.code[0].value
    assert why.startswith("Why it failed:\n  runs/") and "/train.log):" in why
    assert "TrainingDivergedError: training diverged" in why


def test_an_app_experiment_is_removed_in_the_app(tmp_path, synthetic_dir, monkeypatch):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    workflow = find_workflow(workdir / "results")
    workflow.add_experiment("gone", {"hidden": [4]})
    workflow.add_experiment("kept", {"hidden": [8]})
    (workdir / "results/synthetic/gone").mkdir(parents=True)
    (workdir / "results/synthetic/gone/model.npz").write_bytes(b"")
    at = train_page(workdir / "results", monkeypatch)
    at.button(key="remove_gone").click().run()
    assert not at.exception
    assert set(workflow.app_experiments()) == {"kept"} and not (workdir / "results/synthetic/gone").exists()
    assert [b.key for b in at.button if b.key and b.key.startswith("remove_")] == ["remove_kept"]
    # baseline and kept are untrained: the report cannot be rebuilt, so no run was started.
    assert Invocations(workflow).last() is None


def test_a_run_whose_runner_died_is_reported_lost(tmp_path, synthetic_dir):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    invocations = Invocations(find_workflow(workdir / "results"))
    invocations.state_dir.mkdir(parents=True)
    # run.json still says running, but no process holds the lock: the runner was killed.
    (invocations.state_dir / "run.json").write_text('{"experiment": "x", "state": "running", "pid": 999999999, "started": 0}')
    assert invocations.last().state == "lost" and not invocations.stop()


def test_an_invalid_workflow_config_is_shown_not_trained_on(tmp_path, synthetic_dir, monkeypatch):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    with open(workdir / "config.yaml", "a") as config:
        config.write("epochz: 3\n")
    at = train_page(workdir / "results", monkeypatch)
    assert "config is invalid" in at.error[0].value and "'epochz'" in at.code[0].value
    assert not any(b.label == "Train" for b in at.button)


def test_two_tabs_pressing_train_at_once_start_one_run_and_write_one_entry(tmp_path, synthetic_dir):
    """Both write experiments.yaml and start under the run lock: one starts, the other is refused
    having written nothing, and the entry of the one that runs is the one in the file."""
    import threading

    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    workflow = find_workflow(workdir / "results")
    invocations = Invocations(workflow)
    outcome: dict[str, object] = {}
    barrier = threading.Barrier(2)

    def press(name: str) -> None:
        barrier.wait()
        try:
            invocations.start(name, run_targets(workflow, workflow.resolved({name: {"hidden": [4]}}), name),
                       prepare=lambda: workflow.add_experiment(name, {"hidden": [4]}))
            outcome[name] = "started"
        except RunInProgressError:
            outcome[name] = "refused"

    tabs = [threading.Thread(target=press, args=(name,)) for name in ("left", "right")]
    for tab in tabs:
        tab.start()
    for tab in tabs:
        tab.join()
    assert sorted(outcome.values()) == ["refused", "started"], outcome
    started = next(name for name, result in outcome.items() if result == "started")
    assert set(workflow.app_experiments()) == {started}
    assert invocations.last().experiment == started
    wait_for_end(invocations)
    assert invocations.last().state == "done", invocations.output()


def test_the_train_page_trains_the_dataset_chosen_on_screen(tmp_path, synthetic_dir, monkeypatch):
    """config.yaml names one dataset, results/ holds another built from its own source (as after
    `snakemake --config dataset=... source=...`): the page offers both, with their sources,
    and Train runs the chosen one."""
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    snakemake(workdir, "--config", "dataset=digits", f"source={synthetic_dir}", "--", "results/digits/raw")
    at = train_page(workdir / "results", monkeypatch)
    choice = at.selectbox(key="train_dataset")
    assert choice.options == [f"digits (from {synthetic_dir})", f"synthetic (from {synthetic_dir})"]
    assert choice.value == "synthetic"  # config.yaml's, with no model shown
    choice.select("digits").run()
    at.text_input(key="experiment_name").input("tiny")
    next(b for b in at.button if b.label == "Train").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    invocations = Invocations(find_workflow(workdir / "results"))
    command = invocations.last().record["command"]
    assert command[command.index("--config") + 1:command.index("--")] == ["dataset=\"digits\"", f"source={json.dumps(str(synthetic_dir))}"]
    assert "results/digits/tiny/model.npz" in command
    wait_for_end(invocations)
    assert invocations.last().state == "done", invocations.output()
    assert (workdir / "results/digits/tiny/metrics.json").is_file()


def test_a_bad_entry_in_the_experiments_file_shows_one_line_beside_remove(tmp_path, synthetic_dir, monkeypatch):
    workdir = app_workflow(tmp_path / "wf", synthetic_dir)
    (workdir / "experiments.yaml").write_text("experiments:\n  good: {hidden: [8]}\n  bad: {learning_rate: -1}\n")
    at = train_page(workdir / "results", monkeypatch)
    assert not at.exception
    assert "config is invalid" in at.error[0].value  # nothing can be trained until it is fixed
    lines = [e.value for e in at.error[1:]]
    assert len(lines) == 1 and "experiments.bad.learning_rate" in lines[0] and "\n" not in lines[0]
    assert [b.key for b in at.button if b.key and b.key.startswith("remove_")] == ["remove_bad", "remove_good"]
    at.button(key="remove_bad").click().run()
    assert not at.exception and set(find_workflow(workdir / "results").app_experiments()) == {"good"}
    assert at.selectbox(key="train_dataset").value == "synthetic"  # the form is back
