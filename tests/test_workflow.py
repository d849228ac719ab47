"""The whole workflow, run for real by Snakemake on a tiny synthetic IDX dataset.

Each test works in a private copy of the workflow, so results/ and .snakemake/ of the
repository are never touched.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from helpers import REPO, copy_workflow, leaderboard_rows, planned_jobs, snakemake, snakemake_command, workflow_env
from mnist_pipeline.locks import JOBS_LOCK_NAME, LOCK_NAME, locked_by_others
from mnist_pipeline.nn.model import load_model
from mnist_pipeline.nn.parallel import available_cores

pytestmark = pytest.mark.slow

TEST_CONFIG = REPO / "tests/workflow/synthetic.yaml"


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, synthetic_dir):
    """A workflow copy that has run to completion once on the synthetic dataset."""
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow"))
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--config", f"source={synthetic_dir}")
    return workdir, ("--configfile", str(TEST_CONFIG), "--config", f"source={synthetic_dir}")


def test_first_run_writes_every_documented_output(finished_run):
    workdir, _ = finished_run
    results = workdir / "results/synthetic"
    raw = sorted(p.name for p in (results / "raw").iterdir() if p.name.endswith(".gz"))
    assert raw == sorted(f"{s}.gz" for s in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))
    assert any((results / "parsed").iterdir())
    for split, rows in (("train", 480), ("val", 120), ("test", 200)):
        table = pq.read_table(results / "prepared" / f"{split}.parquet")
        assert {"id", "label", "pixels"} <= set(table.column_names) and len(table) == rows
        assert len(table.column("pixels")[0]) == 784
    for experiment in ("baseline", "narrow"):
        assert (results / experiment / "model.npz").stat().st_size > 0
        metrics = json.loads((results / experiment / "metrics.json").read_text())
        for key in ("test_accuracy", "val_accuracy", "per_class", "confusion_matrix", "epochs_run", "train_seconds", "n_parameters"):
            assert key in metrics, key
        assert 0.0 <= metrics["val_accuracy"] <= 1.0
        # The synthetic classes are separable: a trained network must get nearly all right.
        assert metrics["test_accuracy"] >= 0.9
        cm = np.array(metrics["confusion_matrix"])
        assert cm.shape == (10, 10) and cm.sum() == 200
        assert metrics["epochs_run"] == 3
    assert json.loads((results / "baseline/metrics.json").read_text())["n_parameters"] == 784 * 32 + 32 + 32 * 10 + 10
    html = (results / "report.html").read_text()
    assert "<html" in html.lower() and "http://" not in re.sub(r'xmlns="http://www.w3.org/[^"]*"', "", html)
    leaderboard = leaderboard_rows((results / "report.md").read_text())
    assert sum(line.split("|")[1].strip().strip("*`") in ("baseline", "narrow") for line in leaderboard) == 2
    for log in ("download", "parse", "prepare", "report"):
        assert (results / "logs" / f"{log}.log").is_file()


def test_second_run_schedules_nothing(finished_run):
    workdir, config = finished_run
    assert planned_jobs(workdir, *config) == {}


def test_train_value_change_reruns_only_training_onward(finished_run):
    workdir, config = finished_run
    assert planned_jobs(workdir, *config, "train={epochs: 4}") == {
        "train": 2, "evaluate": 2, "robustness": 2, "publish": 2, "publish_robustness": 2, "report": 1, "all": 1}


def test_experiment_override_reruns_only_that_experiment(finished_run):
    workdir, config = finished_run
    changed = planned_jobs(workdir, *config, "experiments={baseline: {}, narrow: {hidden: [8]}}")
    assert changed == {"train": 1, "evaluate": 1, "robustness": 1, "publish": 1, "publish_robustness": 1, "report": 1, "all": 1}


def test_adding_an_experiment_trains_only_that_one(finished_run):
    workdir, config = finished_run
    jobs = planned_jobs(workdir, *config, "experiments={baseline: {}, narrow: {hidden: [16]}, extra: {learning_rate: 0.02}}")
    assert jobs == {"train": 1, "evaluate": 1, "robustness": 1, "publish": 1, "publish_robustness": 1, "report": 1, "all": 1}


def test_a_sweep_adds_named_jobs_and_keeps_finished_experiments(finished_run):
    workdir, config = finished_run
    # Two seeds of one grid point: two new experiments beside the two finished ones.
    jobs = planned_jobs(workdir, *config, "sweep={grid: {hidden: [[8]]}, seeds: [0, 1]}")
    assert jobs == {"train": 2, "evaluate": 2, "robustness": 2, "publish": 2, "publish_robustness": 2, "report": 1, "all": 1}


def without_narrow(config: tuple[str, ...], tmp_path: Path) -> tuple[str, ...]:
    """The test arguments with a config file that lists only the `baseline` experiment."""
    # --config and --configfile merge dicts, so removing a key means editing the file.
    fewer = yaml.safe_load(TEST_CONFIG.read_text())
    del fewer["experiments"]["narrow"]
    (tmp_path / "fewer.yaml").write_text(yaml.safe_dump(fewer))
    return tuple(str(tmp_path / "fewer.yaml") if arg == str(TEST_CONFIG) else arg for arg in config)


def planned_train_threads(workdir, *args) -> dict[str, int]:
    """Experiment (or, for one not yet published, its run id) -> threads of its train job in a
    dry run (Snakemake prints `threads:` only above 1)."""
    out = snakemake(workdir, "--dry-run", "--forcerun", "train", *args).stdout
    published = {json.loads(path.read_text())["run"]: path.parent.name for path in (workdir / "results/synthetic").glob("*/run.json")}
    threads = {}
    for job in re.split(r"\n(?=(?:local)?rule )", out):
        if job.startswith("rule train:"):
            run = re.search(r"run=(\w+)", job).group(1)
            count = re.search(r"^\s+threads: (\d+)$", job, re.MULTILINE)
            threads[published.get(run, run)] = int(count.group(1)) if count else 1
    return threads


def test_a_lone_experiment_trains_on_every_core_and_a_sweep_shares_them(finished_run, tmp_path):
    workdir, config = finished_run
    lone_config = without_narrow(config, tmp_path)
    machine = available_cores()
    assert planned_train_threads(workdir, "--cores", "2", *lone_config) == {"baseline": min(2, machine)}
    # More cores than the machine has are not handed out.
    assert planned_train_threads(workdir, "--cores", str(machine + 3), *lone_config) == {"baseline": machine}
    # Two experiments share the cores: every core used once (as far as the machine has them), evenly.
    threads = planned_train_threads(workdir, "--cores", "4", *config)
    assert set(threads) == {"baseline", "narrow"}
    assert sum(threads.values()) == max(min(4, machine), 2) and max(threads.values()) - min(threads.values()) <= 1
    # More experiments than cores: one thread each.
    threads = planned_train_threads(workdir, "--cores", "2", *config, "sweep={grid: {hidden: [[8], [12]]}}")
    assert len(threads) == 4 and set(threads.values()) == {1}
    assert planned_train_threads(workdir, "--cores", "2", *config) == {"baseline": 1, "narrow": 1}


def test_runs_trained_before_take_no_cores_from_a_new_one(finished_run):
    workdir, config = finished_run
    # baseline and narrow are trained: the one new grid point trains alone, on every core.
    out = snakemake(workdir, "--dry-run", "--cores", "2", *config, "sweep={grid: {hidden: [[8]]}}").stdout
    train_jobs = [job for job in re.split(r"\n(?=(?:local)?rule )", out) if job.startswith("rule train:")]
    assert len(train_jobs) == 1
    expected = min(2, available_cores())
    count = re.search(r"^\s+threads: (\d+)$", train_jobs[0], re.MULTILINE)
    assert (int(count.group(1)) if count else 1) == expected


def test_the_model_records_its_thread_count(finished_run):
    workdir, _ = finished_run
    for experiment in ("baseline", "narrow"):
        # Two experiments on the tests' --cores 2: one thread each.
        assert load_model(workdir / f"results/synthetic/{experiment}/model.npz").metadata["threads"] == 1


def test_removing_an_experiment_rebuilds_only_the_report(finished_run, tmp_path):
    workdir, config = finished_run
    config = without_narrow(config, tmp_path)
    assert planned_jobs(workdir, *config) == {"report": 1, "all": 1}
    assert (workdir / "results/synthetic/narrow/model.npz").is_file()


def test_each_experiment_has_its_robustness_scores_beside_its_metrics(finished_run):
    workdir, _ = finished_run
    for name in ("baseline", "narrow"):
        scores = json.loads((workdir / "results/synthetic" / name / "robustness.json").read_text())
        assert len(scores["families"]) >= 10 and 0 <= scores["mean_corruption_accuracy"] <= 1
    assert "How it holds up" in (workdir / "results/synthetic/report.md").read_text()


def test_a_robustness_value_change_rescores_and_never_retrains(finished_run):
    workdir, config = finished_run
    assert planned_jobs(workdir, *config, "robustness={severities: 2}") == {
        "robustness": 2, "publish_robustness": 2, "report": 1, "all": 1}
    # Off: no scoring, and the report is rebuilt without its section.
    assert planned_jobs(workdir, *config, "robustness=null") == {"report": 1, "all": 1}


def test_prepare_value_change_reruns_prepare_onward_not_download_or_parse(finished_run):
    workdir, config = finished_run
    jobs = planned_jobs(workdir, *config, "prepare={val_fraction: 0.25, seed: 1}")
    assert jobs == {"prepare": 1, "train": 2, "evaluate": 2, "robustness": 2, "publish": 2, "publish_robustness": 2, "report": 1, "all": 1}


def test_same_values_written_another_way_is_no_change(finished_run):
    workdir, config = finished_run
    assert planned_jobs(workdir, *config, "prepare={seed: 1, val_fraction: 2e-1}") == {}


@contextmanager
def edited(path: Path):
    """`path` with a statement appended, restored afterwards: a change to what the code does
    (a comment would be none, see tests/test_workflow_code.py)."""
    original = path.read_text()
    try:
        path.write_text(original + "\nAN_EDIT = 1\n")
        yield
    finally:
        path.write_text(original)


def test_changing_a_package_module_reruns_the_stages_that_import_it(finished_run):
    """metrics.py is imported by evaluate and report (and publish, through runs.py), not by train."""
    workdir, config = finished_run
    with edited(workdir / "src/mnist_pipeline/evaluation/metrics.py"):
        assert planned_jobs(workdir, *config) == {"evaluate": 2, "publish": 2, "report": 1, "all": 1}


def test_snakemake_report_shows_the_outputs_with_their_captions(finished_run):
    workdir, config = finished_run
    target = workdir / "results/synthetic/snakemake-report.html"
    snakemake(workdir, *config, "--report", str(target))
    page = target.read_text(encoding="utf-8")
    assert "Training and validation cross-entropy" in page  # figures.rst, per figure
    assert "All experiments compared" in page  # the comparison figures of two experiments
    assert "self-contained page" in page and "Test-set metrics of experiment" in page


@pytest.mark.parametrize(
    "setting, words",
    [
        ("train={learning_rate: -0.5}", ["train.learning_rate"]),
        # Valid values alone; together (epochs 3 from the test config) a combination that cannot be trained.
        ("train={warmup_epochs: 3}", ["experiment 'baseline'", "warmup_epochs: 3", "fewer than epochs (3)"]),
    ],
)
def test_bad_config_stops_before_any_job_and_names_the_key(tmp_path, synthetic_dir, setting, words):
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "--configfile", str(TEST_CONFIG), "--config", f"source={synthetic_dir}", setting, check=False)
    assert result.returncode != 0
    for word in words:
        assert word in result.stdout + result.stderr
    assert not (workdir / "results").exists()


def test_lint_is_clean():
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint", "--snakefile", str(REPO / "Snakefile"), "--directory", str(REPO)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


# --- nothing verified lost, nothing hidden, nothing to type after a crash (issue #10) -------


def output_digests(results: Path) -> dict[str, str]:
    """SHA-256 of every output file; logs, benchmarks and the plan (runs/planned.json) record
    each attempt, so they are not outputs."""
    return {
        str(path.relative_to(results)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(results.rglob("*"))
        if path.is_file() and path.relative_to(results).parts[0] not in ("logs", "benchmarks")
        and path.relative_to(results).as_posix() != "runs/planned.json"
    }


def test_a_bad_source_beside_a_finished_run_loses_nothing(finished_run, tmp_path, synthetic_dir):
    workdir, config = finished_run
    results = workdir / "results/synthetic"
    before, planned = output_digests(results), planned_jobs(workdir, *config)
    assert any(name.startswith("raw/") for name in before) and "report.html" in before
    others = ("--configfile", str(TEST_CONFIG), "--config")
    # Refused by the config check, before any job: a mistyped path, and the run's own raw/.
    for source, problem in ((tmp_path / "mistyped", "does not exist"), ("results/synthetic/raw", "lies inside results/")):
        refused = snakemake(workdir, *others, f"source={source}", check=False)
        assert refused.returncode != 0
        assert f"config key 'source': '{source}' {problem}" in refused.stderr and "expected a directory" in refused.stderr
        assert "Job stats" not in refused.stdout + refused.stderr
    # A source whose download fails (a truncated file).
    broken = tmp_path / "broken"
    shutil.copytree(synthetic_dir, broken)
    image_file = broken / "train-images-idx3-ubyte.gz"
    image_file.write_bytes(image_file.read_bytes()[:1000])
    # Another source is a change that reruns everything for the dataset...
    assert planned_jobs(workdir, *others, f"source={broken}") == {
        "download": 1, "keep_download": 1, "parse": 1, "prepare": 1, "train": 2, "evaluate": 2, "robustness": 2, "publish": 2,
        "publish_robustness": 2, "report": 1, "all": 1}
    # ...but this one fails, saying why under Snakemake's error, and changes nothing.
    failed = snakemake(workdir, *others, f"source={broken}", check=False)
    assert failed.returncode != 0
    why = failed.stderr[failed.stderr.index("Error in rule download:"):]
    assert "Why it failed:\n  download (results/synthetic/logs/download.log):\n    DownloadError: could not fetch train-images-idx3-ubyte" in why
    assert "bad gzip stream" in why
    assert output_digests(results) == before
    assert not (results / ".download").exists()
    # Going back to the run's own source plans what it planned before (nothing, unless an
    # earlier test left a change): the failed attempt counts as no change.
    assert planned_jobs(workdir, *config) == planned
    assert "download" not in planned


def test_a_failed_training_says_why_at_the_terminal_and_keeps_the_published_model(finished_run):
    workdir, config = finished_run
    published = workdir / "results/synthetic/baseline/model.npz"
    before = published.read_bytes()
    failed = snakemake(workdir, *config, "train={learning_rate: 1e30, batch_norm: false, grad_clip: null}", check=False)
    assert failed.returncode != 0
    why = failed.stderr[failed.stderr.index("Error in rule train:"):]
    assert re.search(r"Why it failed:\n  runs/\w+/train \(results/synthetic/runs/\w+/train\.log\):\n"
                     r"    TrainingDivergedError: training diverged", why), why
    assert published.read_bytes() == before


def test_a_second_run_is_refused_while_one_is_going_and_a_dry_run_works(finished_run):
    workdir, config = finished_run
    # What the running snakemake holds: the run lock of its working directory.
    hold = "from mnist_pipeline.locks import claim_workdir; claim_workdir('.snakemake', 'results'); print(flush=True); input()"
    planned = planned_jobs(workdir, *config, "--forcerun", "report")
    holder = subprocess.Popen([sys.executable, "-c", hold], cwd=workdir, env=workflow_env(workdir), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        second = snakemake(workdir, *config, "--forcerun", "report", check=False)
        assert second.returncode != 0
        assert f"another snakemake run (process {holder.pid}) is working in {workdir}" in second.stderr
        assert "--unlock" not in second.stderr
        assert planned_jobs(workdir, *config, "--forcerun", "report") == planned and planned["report"] == 1
    finally:
        holder.kill()
        holder.wait()


def run_going(state: Path) -> bool:
    """Whether the run lock or a job's lock of that Snakemake state folder is held."""
    return any(locked_by_others(state / name) for name in (LOCK_NAME, JOBS_LOCK_NAME))


def test_a_run_killed_mid_training_continues_with_the_plain_command(tmp_path, synthetic_dir):
    """Also with results/ on another disk, linked in: the leftovers of the killed run lie outside
    the working directory once the link is resolved, and are still this run's to redo."""
    workdir = copy_workflow(tmp_path / "wf")
    (tmp_path / "other-disk/results").mkdir(parents=True)
    (workdir / "results").symlink_to(tmp_path / "other-disk/results")
    config = ("--configfile", str(TEST_CONFIG), "--config", f"source={synthetic_dir}", "train={epochs: 400}")
    terminal = tmp_path / "terminal.txt"
    with open(terminal, "w") as out:
        # Its own session: the kill takes the jobs too, as a power loss would.
        run = subprocess.Popen(snakemake_command(workdir, *config), cwd=workdir, env=workflow_env(workdir), stdout=out, stderr=out, start_new_session=True)
        try:
            runs, deadline = workdir / "results/synthetic/runs", time.monotonic() + 300
            while (not any("epoch 2/400" in log.read_text() for log in runs.glob("*/train.log"))
                   and run.poll() is None and time.monotonic() < deadline):
                time.sleep(0.02)
            # snakemake alone first: its jobs live on, and count as a run still going.
            os.kill(run.pid, signal.SIGKILL)
            run.wait()
            assert run_going(workdir / ".snakemake")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
    while run_going(workdir / ".snakemake") and time.monotonic() < deadline:
        time.sleep(0.02)
    results = workdir / "results/synthetic"
    # Killed while training, holding Snakemake's locks: what used to need --unlock.
    assert any((workdir / ".snakemake/locks").iterdir())
    assert not all((results / name / "model.npz").exists() for name in ("baseline", "narrow"))
    rerun = snakemake(workdir, *config)
    for name in ("baseline", "narrow"):
        assert json.loads((results / name / "metrics.json").read_text())["epochs_run"] == 400
        # The start says which run trains which experiment; then one line per epoch while it trains.
        run_id = re.search(rf"^Run (\w+) trains experiment\(s\): {name}$", rerun.stderr, re.M).group(1)
        assert re.search(rf"^train run {run_id}: epoch 400/400: train loss [\d.]+ accuracy [\d.]+, val loss", rerun.stderr, re.M)
    assert not (workdir / ".snakemake/locks").exists() and not list((workdir / ".snakemake/incomplete").iterdir())
    assert [p.name for p in results.rglob(".*") if p.name != ".snakemake_timestamp"] == []
    # The end of the run says what it achieved and where the report is.
    summary = rerun.stderr[rerun.stderr.index("Best of 2 experiments on synthetic"):]
    assert re.match(r"Best of 2 experiments on synthetic \(test accuracy, validation accuracy\):\n  1\. (baseline|narrow) +\d+\.\d\d%", summary)
    assert "Report: results/synthetic/report.html (and report.md beside it)" in summary
