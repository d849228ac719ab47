"""Kept runs, for real: train, change a setting, train, go back; then list, compare and prune.

One experiment on the synthetic dataset keeps the three Snakemake runs short.
"""

from __future__ import annotations

import json

import pytest
import yaml

from helpers import REPO, copy_workflow, planned_jobs, snakemake
from mnist_pipeline.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def went_back(tmp_path_factory, synthetic_dir):
    """A workflow copy that trained baseline, then baseline with learning_rate 0.02, then went
    back to the first settings; with what each step planned and published."""
    root = tmp_path_factory.mktemp("runs")
    config = yaml.safe_load((REPO / "tests/workflow/synthetic.yaml").read_text())
    config["experiments"] = {"baseline": {}}
    (root / "one.yaml").write_text(yaml.safe_dump(config))
    workdir = copy_workflow(root / "wf")
    args = ("--configfile", str(root / "one.yaml"), "--config", f"source={synthetic_dir}")
    changed = (*args, "train={learning_rate: 0.02}")
    published = workdir / "results/synthetic/baseline/metrics.json"
    snakemake(workdir, *args)
    first = published.read_bytes()
    first_run = json.loads((workdir / "results/synthetic/baseline/run.json").read_text())["run"]
    snakemake(workdir, *changed)
    second = published.read_bytes()
    back_plan = planned_jobs(workdir, *args)
    snakemake(workdir, *args)
    return {"workdir": workdir, "args": args, "first": first, "second": second, "first_run": first_run,
            "back_plan": back_plan, "back": published.read_bytes()}


def runs_cli(capsys, *args: str) -> str:
    code = main(["runs", *args])
    out = capsys.readouterr()
    assert code == 0, out.err
    return out.out


def test_going_back_trains_nothing_and_restores_the_first_metrics(went_back):
    assert went_back["second"] != went_back["first"]
    assert went_back["back_plan"] == {"publish": 1, "publish_robustness": 1, "report": 1, "all": 1}
    assert went_back["back"] == went_back["first"]


def test_runs_json_lists_both_runs_and_marks_the_current_one(went_back, capsys):
    results = went_back["workdir"] / "results"
    listed = json.loads(runs_cli(capsys, "--results", str(results), "--json"))
    assert len(listed) == 2 and {entry["experiment"] for entry in listed} == {"baseline"}
    current = [entry for entry in listed if entry["current"]]
    assert [entry["run"] for entry in current] == [went_back["first_run"]]
    assert sorted(entry["settings"]["learning_rate"] for entry in listed) == [0.01, 0.02]
    assert listed[0]["finished"] >= listed[1]["finished"]  # newest first
    for entry in listed:
        assert 0.0 <= entry["test_accuracy"] <= 1.0 and entry["bytes"] > 0


def test_diff_names_the_changed_setting_and_the_paired_accuracy_change(went_back, capsys):
    results = str(went_back["workdir"] / "results")
    text = runs_cli(capsys, "--results", results, "--diff", "baseline~1", "baseline")
    assert "learning_rate: 0.02 -> 0.01" in text
    assert "paired bootstrap 95% interval over the same 200 test images" in text
    diff = json.loads(runs_cli(capsys, "--results", results, "--json", "--diff", "baseline~1", "baseline"))
    assert diff["settings"] == {"learning_rate": [0.02, 0.01]} and diff["same_data"] and diff["same_code"]
    lo, hi = diff["accuracy_change"]["ci95"]
    assert lo <= diff["accuracy_change"]["difference"] <= hi


def test_report_history_shows_the_earlier_settings(went_back):
    report = (went_back["workdir"] / "results/synthetic/report.md").read_text()
    history = report.split("## History", 1)[1]
    assert "learning_rate=0.02" in history
    assert (went_back["workdir"] / "results/synthetic/figures/baseline/history.png").is_file()


def test_info_names_the_run_a_published_model_came_from(went_back, capsys):
    assert main(["info", str(went_back["workdir"] / "results/synthetic/baseline/model.npz")]) == 0
    assert f"run: {went_back['first_run']}" in capsys.readouterr().out


# Last: it removes the earlier run that the tests above read.
def test_prune_keep_0_leaves_the_current_run_and_nothing_to_redo(went_back, capsys):
    workdir = went_back["workdir"]
    out = runs_cli(capsys, "--results", str(workdir / "results"), "--prune", "--keep", "0")
    assert "removed 1 run(s)" in out and "freed" in out
    store = workdir / "results/synthetic/runs"
    assert sorted(path.name for path in store.iterdir() if path.is_dir()) == [went_back["first_run"]]
    assert planned_jobs(workdir, *went_back["args"]) == {}
