"""The Snakemake profiles, and the two-experiment sweep on a real single-node SLURM cluster
through `--executor slurm`.

tests/slurm/start-slurm.sh starts the cluster (munged, slurmctld and slurmd on 127.0.0.1) or
reuses the one already running; the fixture stops it after the session only if it started it.
download, publish and report are `localrules` and run here; parse, prepare and each
experiment's train, evaluate and robustness must each have been a SLURM job, sized by its rule's threads
and resources.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys

import pytest

from helpers import REPO, copy_workflow, leaderboard_rows, require, snakemake, workflow_env
from mnist_pipeline.nn.model import load_model

START_SLURM = REPO / "tests/slurm/start-slurm.sh"
TEST_CONFIG = REPO / "tests/workflow/synthetic.yaml"
EXPERIMENTS = ("baseline", "narrow")
TRAIN_THREADS = 1
# The compute stages, each to be one SLURM job: (rule, wildcards), a run id read as RUN; the
# two experiments' settings differ, so each is its own run.
CLUSTER_JOBS = sorted(
    [("parse", "dataset=synthetic"), ("prepare", "dataset=synthetic")]
    + [(rule, "dataset=synthetic, run=RUN") for rule in ("train", "evaluate", "robustness") for _ in EXPERIMENTS]
)


def start_slurm(action: str) -> subprocess.CompletedProcess:
    # Each of the script's own waits is bounded by MNIST_SLURM_TIMEOUT (60 s); this bounds them all.
    return subprocess.run(["bash", str(START_SLURM), action], check=False, capture_output=True, text=True, timeout=300)


@pytest.mark.slow
@pytest.mark.parametrize("profile", ["profiles/default", "workflow/profiles/slurm"])
def test_profile_is_used_and_every_key_accepted(tmp_path, synthetic_dir, profile):
    # Snakemake ignores a --workflow-profile folder it cannot find, but rejects an unknown key.
    workdir = copy_workflow(tmp_path / "workflow")
    path = workdir / profile
    result = snakemake(workdir, "--dry-run", "--workflow-profile", str(path), "--configfile", str(TEST_CONFIG), "--config", f"source={synthetic_dir}")
    output = result.stdout + result.stderr
    assert f"Using workflow specific profile {path} for setting default command line arguments" in output
    assert re.search(r"^total\s+16$", output, re.MULTILINE), output


@pytest.mark.slow
def test_the_default_profile_loads_by_itself(tmp_path, synthetic_dir):
    workdir = copy_workflow(tmp_path / "workflow")
    result = snakemake(workdir, "--dry-run", "--configfile", str(TEST_CONFIG), "--config", f"source={synthetic_dir}")
    assert "Using workflow specific profile profiles/default for setting default command line arguments" in result.stderr


@pytest.fixture(scope="module")
def slurm_conf() -> str:
    """SLURM_CONF of the running test cluster."""
    already_up = start_slurm("status").returncode == 0
    started = start_slurm("start")
    # 3: not root, slurm-wlm/munge not installed, or a SLURM of the machine's own.
    require(started.returncode != 3, f"no single-node SLURM can be started here: {started.stderr.strip()}")
    if started.returncode != 0:
        pytest.fail(f"{START_SLURM} start failed ({started.returncode}):\n{started.stderr}")
    yield started.stdout.strip().splitlines()[-1].removeprefix("export SLURM_CONF=")
    if not already_up:
        stopped = start_slurm("stop")
        assert stopped.returncode == 0, f"{START_SLURM} stop failed:\n{stopped.stderr}"


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, synthetic_dir, slurm_conf):
    """A workflow copy after one full run on the cluster, and that run's combined output."""
    workdir = copy_workflow(tmp_path_factory.mktemp("slurm-workflow"))
    command = [
        sys.executable,
        "-m",
        "snakemake",
        "--snakefile",
        str(workdir / "Snakefile"),
        "--directory",
        str(workdir),
        "--workflow-profile",
        str(workdir / "workflow/profiles/slurm"),
        "--executor",
        "slurm",
        "--jobs",
        "2",
        # This cluster keeps no accounting (no slurmdbd): no sacct to ask, no account to charge.
        "--slurm-status-command",
        "squeue",
        "--slurm-no-account",
        # Logs kept to tell which SLURM job ran what; a first status check after 1 s, not 40,
        # keeps the seven short jobs from idling; no retries, so a failed job fails the test.
        "--slurm-keep-successful-logs",
        "--slurm-init-seconds-before-status-checks",
        "1",
        "--retries",
        "0",
        # What each train job asks for: the node here has two cores, fewer than the default.
        "--set-threads",
        f"train={TRAIN_THREADS}",
        "--configfile",
        str(TEST_CONFIG),
        "--config",
        f"source={synthetic_dir}",
    ]
    # The jobs import the package copy in workdir/src by themselves: nothing sets PYTHONPATH.
    env = {**workflow_env(workdir), "SLURM_CONF": slurm_conf}
    result = subprocess.run(command, check=False, capture_output=True, text=True, cwd=workdir, env=env, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"snakemake --executor slurm failed ({result.returncode}):\n{output}"
    return workdir, output


def submitted_jobs(output: str) -> dict[str, dict]:
    """SLURM job id -> rule, wildcards, threads and mem_mb of each job the run submitted, read
    from Snakemake's own log of the run: each job's block, and its 'submitted with SLURM jobid'."""
    declared = {}
    for block in re.finditer(r"^rule (\w+):\n((?:    .*\n)+)", output, re.MULTILINE):
        fields = dict(re.findall(r"^    (\w+): (.*)$", block.group(2), re.MULTILINE))
        declared[fields["jobid"]] = {
            "rule": block.group(1),
            "wildcards": fields["wildcards"],
            "threads": int(fields.get("threads", 1)),
            "mem_mb": int(re.search(r"\bmem_mb=(\d+)", fields["resources"]).group(1)),
        }
    return {
        slurm_id: declared[job]
        for job, slurm_id in re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", output, re.MULTILINE)
    }


def squeue_records(job_ids: list[str], slurm_conf: str) -> dict[str, dict[str, str]]:
    """Job id -> state, node, comment, CPUs and memory as slurmctld remembers them (MinJobAge=600)."""
    result = subprocess.run(
        ["squeue", "--states=all", "--noheader", "--jobs", ",".join(job_ids), "--format=%i|%T|%N|%k|%C|%m"],
        check=False,
        capture_output=True,
        text=True,
        env={**os.environ, "SLURM_CONF": slurm_conf},
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    fields = ("state", "node", "comment", "cpus", "memory")
    return {line.split("|")[0]: dict(zip(fields, line.split("|")[1:], strict=False)) for line in result.stdout.splitlines()}


def megabytes(text: str) -> float:
    """squeue's memory column (`1G`, `1.50G`, `512M`) in MB."""
    return float(text[:-1]) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[text[-1]]


@pytest.mark.cluster
@pytest.mark.slow
def test_sweep_writes_every_output(sweep):
    workdir, _ = sweep
    results = workdir / "results/synthetic"
    expected = [results / name / leaf for name in EXPERIMENTS for leaf in ("model.npz", "metrics.json")]
    expected += [results / "report.html", results / "report.md"] + [
        results / "prepared" / f"{s}.parquet" for s in ("train", "val", "test")
    ]
    assert [str(p.relative_to(workdir)) for p in expected if not p.is_file() or p.stat().st_size == 0] == []
    for name in EXPERIMENTS:
        assert json.loads((results / name / "metrics.json").read_text())["test_accuracy"] >= 0.9


@pytest.mark.cluster
@pytest.mark.slow
def test_leaderboard_lists_both_experiments(sweep):
    workdir, _ = sweep
    leaderboard = leaderboard_rows((workdir / "results/synthetic/report.md").read_text())
    first_cells = [row.split("|")[1].strip().strip("*`") for row in leaderboard]
    assert sorted(cell for cell in first_cells if cell in EXPERIMENTS) == sorted(EXPERIMENTS)


@pytest.mark.cluster
@pytest.mark.slow
def test_compute_stages_ran_as_slurm_jobs_sized_by_their_rules(sweep, slurm_conf):
    workdir, output = sweep
    jobs = submitted_jobs(output)
    # One SLURM job per compute stage and experiment: --retries 0, and nothing ran twice.
    assert sorted((job["rule"], re.sub(r"run=[0-9a-f]{12}", "run=RUN", job["wildcards"])) for job in jobs.values()) == CLUSTER_JOBS
    assert len({job["wildcards"] for job in jobs.values() if job["rule"] == "train"}) == len(EXPERIMENTS)
    records = squeue_records(list(jobs), slurm_conf)
    node = socket.gethostname().split(".")[0]
    for slurm_id, job in jobs.items():
        record = records[slurm_id]
        assert record["state"] == "COMPLETED" and record["node"] == node, (slurm_id, job, record)
        assert record["comment"].startswith(f"rule_{job['rule']}_wildcards_"), (slurm_id, job, record)
        assert (int(record["cpus"]), megabytes(record["memory"])) == (job["threads"], job["mem_mb"]), (slurm_id, job, record)
        # The plugin's log of the SLURM job, named by its id under the rule's folder.
        assert list((workdir / ".snakemake/slurm_logs" / f"rule_{job['rule']}").glob(f"*/{slurm_id}.log")), (slurm_id, job)


@pytest.mark.cluster
@pytest.mark.slow
def test_download_publish_and_report_ran_locally(sweep):
    _, output = sweep
    submitted_rules = {job["rule"] for job in submitted_jobs(output).values()}
    for rule in ("download", "keep_download", "publish", "publish_robustness", "report"):
        assert f"localrule {rule}:" in output and rule not in submitted_rules, rule


@pytest.mark.cluster
@pytest.mark.slow
def test_each_model_trained_on_the_cores_its_job_was_given(sweep):
    """Not the cores of the machine snakemake runs on (two here): what the train job asked
    SLURM for, which is what the trainer used (the model records its thread count)."""
    workdir, output = sweep
    trained = [job for job in submitted_jobs(output).values() if job["rule"] == "train"]
    assert [job["threads"] for job in trained] == [TRAIN_THREADS] * len(EXPERIMENTS)
    for name in EXPERIMENTS:
        assert load_model(workdir / "results/synthetic" / name / "model.npz").metadata["threads"] == TRAIN_THREADS, name
