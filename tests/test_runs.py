"""Run ids, the run store, run diffs, the `runs` command and the report's History, on runs written by hand."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from helpers import REPO, copy_workflow, snakemake
from mnist_pipeline.cli import main
from mnist_pipeline.data.tables import write_table
from mnist_pipeline.evaluation.metrics import paired_difference_ci, predictions_table, score_predictions
from mnist_pipeline.evaluation.report import build_report, figure_files
from mnist_pipeline.evaluation.rundiff import diff_runs
from mnist_pipeline.fileio import write_json
from mnist_pipeline.layout import RUN_FILES
from mnist_pipeline.locks import LOCK_NAME, locked_by_others
from mnist_pipeline.runstore.ids import data_identity, run_id, run_record
from mnist_pipeline.runstore.store import RunNotFound, prune, publish, read_store, resolve, run_files, write_current
from mnist_pipeline.workflow.config import experiment_settings, load_schema, resolve_config
from mnist_pipeline.workflow.plan import checkout_stage_code, planned_runs

SETTINGS = {"epochs": 3, "hidden": [32], "learning_rate": 0.01, "seed": 0}
DATA = {"dataset": "synthetic", "prepare": {"seed": 0, "val_fraction": 0.1}, "code": "c0"}
N_TEST = 300


# --- run ids ---------------------------------------------------------------------------------


def test_run_id_depends_on_settings_data_and_code_not_on_key_order():
    base = run_id(SETTINGS, DATA, "abc")
    assert run_id(dict(reversed(list(SETTINGS.items()))), DATA, "abc") == base
    assert run_id({**SETTINGS, "learning_rate": 0.02}, DATA, "abc") != base
    assert run_id(SETTINGS, {**DATA, "prepare": {"seed": 1, "val_fraction": 0.1}}, "abc") != base
    assert run_id(SETTINGS, DATA, "abd") != base
    assert len(base) == 12 and run_record(SETTINGS, DATA, "abc")["run"] == base


def test_data_identity_of_a_custom_dataset_follows_its_files_a_known_one_does_not(tmp_path):
    source = tmp_path / "train-images-idx3-ubyte.gz"
    source.write_bytes(b"one")
    known = dict(dataset="fashion-mnist", prepare={"seed": 0}, code="c", source="/somewhere", source_files=[source])
    assert data_identity(**known) == data_identity(**{**known, "source": "/elsewhere"})
    custom = dict(known, dataset="custom")
    before = data_identity(**custom)
    source.write_bytes(b"two")
    assert data_identity(**custom) != before


# --- a store written by hand -----------------------------------------------------------------


def fake_run(dataset_dir: Path, settings: dict, finished: str, correct: np.ndarray, names=("baseline",), record=None) -> str:
    """A finished run in the store as train and evaluate leave it, published under `names`
    (`record`: its run.json, by default that of `settings` on DATA)."""
    record = record or run_record(settings, DATA, "c0")
    files = run_files(dataset_dir, record["run"])
    labels = np.arange(N_TEST) % 10
    predicted = np.where(correct, labels, (labels + 1) % 10)
    proba = np.full((N_TEST, 10), 0.02, dtype=np.float32)
    proba[np.arange(N_TEST), predicted] = 0.82
    Path(files["model"]).parent.mkdir(parents=True)
    Path(files["model"]).write_bytes(b"model bytes")
    write_table(predictions_table(np.arange(N_TEST), labels, proba), files["predictions"])
    accuracy = float(correct.mean())
    metrics = score_predictions(labels, proba, classes=[str(k) for k in range(10)], n_bootstrap=50)
    write_json(files["metrics"], {**metrics, "val_accuracy": accuracy, "train_seconds": 1.5, "epochs_run": settings["epochs"]})
    write_json(files["history"], {"epochs": [{"epoch": e + 1, "val_accuracy": accuracy, "train_loss": 1.0 / (e + 1), "val_loss": 1.0 / (e + 1)} for e in range(settings["epochs"])],
                                  "finished": finished, "train_seconds": 1.5})
    write_json(files["record"], {**record, "finished": finished})
    for name in names:
        publish(files, {key: dataset_dir / name / leaf for key, leaf in RUN_FILES.items()}, name)
    return record["run"]


@pytest.fixture
def store(tmp_path):
    """synthetic: baseline tried with three learning rates (0.01 current), narrow once (current)."""
    dataset_dir = tmp_path / "results/synthetic"
    rng = np.random.default_rng(0)
    ids = {}
    for lr, day in ((0.03, "01"), (0.02, "02")):
        ids[lr] = fake_run(dataset_dir, {**SETTINGS, "learning_rate": lr}, f"2026-11-{day}T10:00:00+00:00", rng.random(N_TEST) < 0.8)
    ids["narrow"] = fake_run(dataset_dir, {**SETTINGS, "hidden": [8]}, "2026-11-03T10:00:00+00:00", rng.random(N_TEST) < 0.7, ("narrow",))
    ids[0.01] = fake_run(dataset_dir, SETTINGS, "2026-11-04T10:00:00+00:00", rng.random(N_TEST) < 0.9)
    write_current(dataset_dir / "runs/current.json", SETTINGS, {"baseline": ids[0.01], "narrow": ids["narrow"]})
    return dataset_dir, ids


def test_store_lists_finished_runs_newest_first_with_names_and_current(store):
    dataset_dir, ids = store
    (dataset_dir / "runs" / ("f" * 12)).mkdir()  # a run still training: no run.json yet
    runs = read_store(dataset_dir)
    assert [run.id for run in runs] == [ids[0.01], ids["narrow"], ids[0.02], ids[0.03]]
    assert [run.current_for for run in runs] == [["baseline"], ["narrow"], [], []]
    assert runs[2].names == ["baseline"] and runs[2].settings["learning_rate"] == 0.02


def test_publish_copies_every_run_file(store):
    dataset_dir, ids = store
    for leaf in RUN_FILES.values():
        assert (dataset_dir / "baseline" / leaf).read_bytes() == (dataset_dir / "runs" / ids[0.01] / leaf).read_bytes()


def test_resolve_by_name_name_back_and_id_prefix(store):
    dataset_dir, ids = store
    runs = read_store(dataset_dir)
    assert resolve(runs, "baseline").id == ids[0.01]
    assert resolve(runs, "baseline~1").id == ids[0.02]
    assert resolve(runs, "baseline~2").id == ids[0.03]
    assert resolve(runs, ids[0.03][:6]).id == ids[0.03]
    with pytest.raises(RunNotFound, match="only 3 kept run"):
        resolve(runs, "baseline~3")
    with pytest.raises(RunNotFound, match="'nothing'"):
        resolve(runs, "nothing")


def test_prune_keeps_current_runs_and_the_newest_n_per_experiment(store):
    dataset_dir, ids = store
    sizes = {run.id: run.size for run in read_store(dataset_dir)}
    pruned = prune(dataset_dir, keep=1)
    assert [run.id for run in pruned.removed] == [ids[0.03]] and pruned.freed == sizes[ids[0.03]]
    pruned = prune(dataset_dir, keep=0)
    assert [run.id for run in pruned.removed] == [ids[0.02]]
    assert sorted(run.id for run in read_store(dataset_dir)) == sorted([ids[0.01], ids["narrow"]])
    assert not any(path.name.endswith(".pruning") for path in (dataset_dir / "runs").iterdir())


def test_prune_keeps_a_run_published_after_the_last_report(store):
    dataset_dir, ids = store
    # A config that went back to lr 0.03 published it, and its report has not run yet.
    publish(run_files(dataset_dir, ids[0.03]), {key: dataset_dir / "baseline" / leaf for key, leaf in RUN_FILES.items()}, "baseline")
    prune(dataset_dir, keep=0)
    assert ids[0.03] in {run.id for run in read_store(dataset_dir)}


def test_prune_refuses_a_negative_count(store):
    with pytest.raises(ValueError, match="--keep"):
        prune(store[0], keep=-1)


def test_diff_gives_changed_settings_metrics_and_the_leaderboards_paired_interval(store):
    dataset_dir, ids = store
    runs = read_store(dataset_dir)
    a, b = resolve(runs, "baseline~1"), resolve(runs, "baseline")
    diff = diff_runs(a, b)
    assert diff.settings == {"learning_rate": (0.02, 0.01)}
    assert {"test_accuracy", "val_accuracy"} <= set(diff.metrics) and diff.same_data and diff.same_code
    assert "epochs_run" not in diff.metrics and "train_seconds" not in diff.metrics  # equal: not shown
    correct = {run.id: json.loads(run.path("metrics").read_text())["test_accuracy"] for run in (a, b)}
    change, lo, hi = diff.accuracy_change
    assert change == pytest.approx(correct[b.id] - correct[a.id])
    # The same interval as the leaderboard's: paired bootstrap with the report's seed (0).
    import pyarrow.parquet as pq

    def right(run):
        table = pq.read_table(run.path("predictions"))
        return table["predicted"].to_numpy() == table["label"].to_numpy()

    assert [lo, hi] == paired_difference_ci(right(b), right(a), seed=0)


# --- the command -----------------------------------------------------------------------------


def run_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["runs", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_runs_command_table_marks_current_and_shows_what_differs(store, capsys):
    results = store[0].parent
    code, out, _ = run_cli(capsys, "--results", str(results))
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith("synthetic: 4 kept run(s)")
    row = next(line for line in lines if store[1][0.02] in line)
    assert "learning_rate=0.02" in row and "yes" not in row
    row = next(line for line in lines if store[1]["narrow"] in line)
    assert "hidden=[8]" in row and "yes" in row


def test_runs_command_errors_name_the_problem(store, capsys):
    results = str(store[0].parent)
    assert run_cli(capsys, "--results", results, "--dataset", "mnist")[2].startswith("mnist-pipeline: error:")
    code, _, err = run_cli(capsys, "--results", results, "--keep", "1")
    assert code == 2 and "--prune needs --keep" in err
    code, _, err = run_cli(capsys, "--results", results, "--diff", "baseline", "nothing")
    assert code == 2 and "'nothing'" in err


def test_runs_diff_passes_over_a_dataset_with_no_kept_run_and_asks_which_of_two_that_have_some(store, capsys):
    # The README's offline quick start leaves results/mnist/runs/ behind, empty, from a download
    # that could not reach the network.
    results = store[0].parent
    (results / "mnist/runs").mkdir(parents=True)
    code, out, _ = run_cli(capsys, "--results", str(results), "--diff", "baseline~1", "baseline")
    assert code == 0 and "learning_rate: 0.02 -> 0.01" in out
    fake_run(results / "kmnist", SETTINGS, "2026-11-05T10:00:00+00:00", np.ones(N_TEST, bool))
    code, _, err = run_cli(capsys, "--results", str(results), "--diff", "baseline~1", "baseline")
    assert code == 2 and "runs of several datasets (kmnist, synthetic): say which with --dataset" in err


def test_runs_command_prune_says_what_it_freed(store, capsys):
    code, out, _ = run_cli(capsys, "--results", str(store[0].parent), "--prune", "--keep", "0")
    assert code == 0 and "removed 2 run(s)" in out and "MB" in out


# --- the report's History --------------------------------------------------------------------


def test_report_history_lists_earlier_runs_against_the_current_one(store, tmp_path):
    import pyarrow.parquet as pq

    from mnist_pipeline.evaluation.report.history import earlier_run_entries

    dataset_dir, ids = store
    runs = read_store(dataset_dir)
    current = resolve(runs, "baseline")
    experiments = [{"name": "baseline", "settings": current.settings, "metrics": current.metrics,
                    "history": current.history["epochs"], "predictions": pq.read_table(current.path("predictions"))}]
    out = tmp_path / "report"
    build_report(dataset="synthetic", experiments=experiments, defaults=SETTINGS, test_images=np.zeros((N_TEST, 28, 28), np.uint8),
                 provenance={}, out_html=out / "report.html", out_md=out / "report.md", figures_dir=out / "figures",
                 history={"baseline": earlier_run_entries(runs, "baseline")})
    history = (out / "report.md").read_text().split("## History", 1)[1]
    assert history.index(ids[0.02]) < history.index(ids[0.03])  # newest first
    assert "learning_rate=0.02" in history and "learning_rate=0.03" in history
    written = sorted(path.relative_to(out / "figures").as_posix() for path in (out / "figures").rglob("*.png"))
    assert written == sorted(figure_files(["baseline"], with_history=["baseline"]))
    assert 'href="#history"' in (out / "report.html").read_text()


def test_an_experiment_cannot_take_the_run_stores_folder_name():
    from helpers import REPO
    from mnist_pipeline.errors import ConfigError
    from mnist_pipeline.workflow.config import load_schema, resolve_config

    schema = load_schema(REPO / "workflow/schemas/config.schema.yaml")
    with pytest.raises(ConfigError, match="experiments"):
        resolve_config({"dataset": "fashion-mnist", "source": "/", "experiments": {"runs": {}}}, schema)


def test_a_damaged_run_is_left_out_and_named_not_fatal(store, caplog):
    dataset_dir, ids = store
    (dataset_dir / "runs" / ids[0.03] / "metrics.json").write_text("{not json")
    assert ids[0.03] not in {run.id for run in read_store(dataset_dir)}
    assert ids[0.03] in caplog.text and "not valid JSON" in caplog.text


def test_prune_finishes_what_an_interrupted_prune_left(store):
    dataset_dir, ids = store
    leftover = dataset_dir / "runs" / ".0123456789ab.pruning"
    leftover.mkdir()
    (leftover / "model.npz").write_bytes(b"x" * 1000)
    pruned = prune(dataset_dir, keep=5)
    assert pruned.removed == [] and pruned.freed == 1000 and not leftover.exists()


# --- pruning never loses a run the workflow needs (issue 21) ---------------------------------


def unpublished_run(dataset_dir: Path, lr: float, day: str) -> str:
    """A run trained and evaluated, not yet published: what a sweep leaves for a minute or
    more, and a run stopped between evaluate and publish for good."""
    return fake_run(dataset_dir, {**SETTINGS, "learning_rate": lr}, f"2026-11-{day}T10:00:00+00:00", np.ones(N_TEST, bool), names=())


def age(path: Path, seconds: float) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime - seconds, stat.st_mtime - seconds))


def test_prune_keeps_a_finished_run_not_yet_published(store):
    dataset_dir, ids = store
    waiting = unpublished_run(dataset_dir, 0.05, "05")  # finished after the last report
    pruned = prune(dataset_dir, keep=0)
    assert waiting not in {run.id for run in pruned.removed} and (dataset_dir / "runs" / waiting).is_dir()
    assert {run.id for run in pruned.removed} == {ids[0.02], ids[0.03]}


def test_a_run_left_unpublished_before_the_last_report_can_be_pruned(store):
    dataset_dir, ids = store
    orphan = unpublished_run(dataset_dir, 0.05, "05")
    age(dataset_dir / "runs" / orphan / "run.json", 3600)  # a report has been built since it finished
    assert orphan in {run.id for run in prune(dataset_dir, keep=0).removed}


@pytest.fixture
def workflow_store(store, synthetic_dir):
    """The store, in the results/ of a workflow checkout whose config trains other settings."""
    workdir = copy_workflow(store[0].parents[1])
    config = yaml.safe_load((REPO / "tests/workflow/synthetic.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump({**config, "source": str(synthetic_dir)}))
    return store


def holding(workdir: Path, code: str) -> subprocess.Popen:
    process = subprocess.Popen([sys.executable, "-c", code], cwd=workdir, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    return process


@pytest.mark.parametrize(
    "code, words",
    [
        ("from mnist_pipeline.locks import claim_workdir; claim_workdir('.snakemake', 'results')", ["a snakemake run (process {pid}) is working"]),
        ("import os; os.makedirs('.snakemake', exist_ok=True); from mnist_pipeline.locks import join_as_job; join_as_job()",
         ["jobs of a killed snakemake run are still running"]),
    ],
    ids=["run", "jobs-of-a-killed-run"],
)
def test_prune_refuses_while_a_run_is_going_and_removes_nothing(workflow_store, capsys, code, words):
    dataset_dir, ids = workflow_store
    workdir = dataset_dir.parents[1]
    unpublished_run(dataset_dir, 0.05, "05")
    before = sorted(path.name for path in (dataset_dir / "runs").iterdir())
    process = holding(workdir, code + "; print('held', flush=True); input()")
    try:
        code, out, err = run_cli(capsys, "--results", str(workdir / "results"), "--prune", "--keep", "0")
    finally:
        process.kill()
        process.wait()
    assert code == 2 and out == ""
    for word in words:
        assert word.format(pid=process.pid) in err
    assert f"in {workdir}: it may yet publish any kept run, so nothing was pruned. Prune when it has ended." in err
    assert sorted(path.name for path in (dataset_dir / "runs").iterdir()) == before
    # Once it has ended, pruning goes ahead, and holds the run lock while it removes.
    code, out, _ = run_cli(capsys, "--results", str(workdir / "results"), "--prune", "--keep", "0")
    assert code == 0 and "removed 2 run(s)" in out
    # flock locks belong to an open file, so this process's own lock counts here as another's.
    assert locked_by_others(workdir / ".snakemake" / LOCK_NAME)


def planned_by_the_workflow(workdir: Path) -> set[str]:
    """The run ids a dry run of the workflow in `workdir` plans to train."""
    out = snakemake(workdir, "--dry-run", "--forcerun", "train")
    return set(re.findall(r"run=([0-9a-f]{12})", out.stdout + out.stderr))


def test_prune_keeps_the_runs_the_config_makes_now(tmp_path, synthetic_dir, capsys):
    workdir = copy_workflow(tmp_path / "wd")
    config = yaml.safe_load((REPO / "tests/workflow/synthetic.yaml").read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump({**config, "source": str(synthetic_dir)}))
    # The app's experiments count too.
    (workdir / "experiments.yaml").write_text(yaml.safe_dump({"experiments": {"deep": {"hidden": [32, 16]}}}))
    schema = load_schema(workdir / "workflow/schemas/config.schema.yaml")
    resolved = resolve_config({**config, "source": str(synthetic_dir), "experiments": {**config["experiments"], "deep": {"hidden": [32, 16]}}}, schema)
    planned = planned_runs(resolved, experiment_settings(resolved, schema), checkout_stage_code(workdir))
    assert {record["run"] for record in planned.values()} == planned_by_the_workflow(workdir)
    # Say the config went back to settings trained long ago: their runs were published under
    # another name since, and the last report used others. A `snakemake` now would use them.
    dataset_dir = workdir / "results/synthetic"
    correct = np.ones(N_TEST, bool)
    for day, record in enumerate(sorted(planned.values(), key=lambda record: record["run"]), start=1):
        fake_run(dataset_dir, record["settings"], f"2026-11-0{day}T10:00:00+00:00", correct, names=("old",), record=record)
    other = fake_run(dataset_dir, SETTINGS, "2026-11-09T10:00:00+00:00", correct, names=("old",))
    write_current(dataset_dir / "runs/current.json", SETTINGS, {"old": other})
    code, out, _ = run_cli(capsys, "--results", str(workdir / "results"), "--prune", "--keep", "0")
    assert code == 0 and "removed 0 run(s)" in out
    assert sorted(run.id for run in read_store(dataset_dir)) == sorted({other} | {record["run"] for record in planned.values()})


def test_prune_refuses_when_the_config_cannot_be_read(workflow_store, capsys):
    dataset_dir, ids = workflow_store
    workdir = dataset_dir.parents[1]
    (workdir / "config.yaml").write_bytes(b"dataset: synthetic\nsource: caf\xe9\n")
    before = sorted(run.id for run in read_store(dataset_dir))
    code, _, err = run_cli(capsys, "--results", str(workdir / "results"), "--prune", "--keep", "0")
    assert code == 2 and f"cannot tell which runs the config in {workdir} uses, so nothing was pruned" in err
    assert "Traceback" not in err and sorted(run.id for run in read_store(dataset_dir)) == before
