"""One run at a time per working directory, and a clean start after a run that was killed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from base64 import urlsafe_b64encode
from pathlib import Path

import pytest

from mnist_pipeline.errors import RunInProgressError
from mnist_pipeline.runlock import claim_workdir, holder, run_in_progress

HOLD = "from mnist_pipeline.runlock import claim_workdir; claim_workdir('.snakemake', 'results'); print('held', flush=True); input()"


def leave_dead_run(workdir: Path) -> dict[str, Path]:
    """What a killed run leaves: Snakemake's lock files and incomplete markers, half-written
    outputs, the download's work folders and a fileio temporary file."""
    state = workdir / ".snakemake"
    (state / "locks").mkdir(parents=True)
    (state / "locks/0.output.lock").write_text("results/d/raw\n")
    paths = {
        "half_model": workdir / "results/d/baseline/model.npz",
        "half_dir": workdir / "results/d/figures/baseline/loss.png",
        "finished": workdir / "results/d/narrow/model.npz",
        "cluster_job": workdir / "results/d/wide/model.npz",
        "staging": workdir / "results/d/.download/0123456789abcdef/train-images-idx3-ubyte.gz",
        "old_tmp": workdir / "results/d/.raw.1a2b3c.tmp/t10k-labels-idx1-ubyte.gz.part",
        "swapped_out": workdir / "results/d/.raw.old-4242/manifest.json",
        "part": workdir / "results/d/parsed/.dataset.json.x7y8z9.part",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes")
    for output, job in (("results/d/baseline/model.npz", None), ("results/d/figures", None), ("results/d/wide/model.npz", "4711")):
        marker = state / "incomplete" / urlsafe_b64encode(output.encode()).decode()
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"external_jobid": job}))
    return paths


@pytest.fixture
def other_run(tmp_path):
    """A process holding the run lock of tmp_path, as a running snakemake does."""
    process = subprocess.Popen([sys.executable, "-c", HOLD], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


def test_a_second_run_is_refused_while_one_is_going_and_a_dry_run_changes_nothing(tmp_path, monkeypatch, other_run):
    monkeypatch.chdir(tmp_path)
    paths = leave_dead_run(tmp_path)
    assert run_in_progress(".snakemake") and holder(".snakemake") == other_run.pid
    with pytest.raises(RunInProgressError, match=rf"another snakemake run \(process {other_run.pid}\) is working in .*--dry-run` works meanwhile"):
        claim_workdir(".snakemake", "results")
    assert claim_workdir(".snakemake", "results", dry_run=True) is False
    assert all(path.exists() for path in paths.values()) and (tmp_path / ".snakemake/locks").is_dir()


def test_after_a_killed_run_the_next_one_clears_what_it_left(tmp_path, monkeypatch, other_run):
    monkeypatch.chdir(tmp_path)
    paths = leave_dead_run(tmp_path)
    other_run.send_signal(signal.SIGKILL)
    other_run.wait()
    assert not run_in_progress(".snakemake")
    assert claim_workdir(".snakemake", "results") is True
    assert not (tmp_path / ".snakemake/locks").exists()
    gone = {"half_model", "half_dir", "staging", "old_tmp", "swapped_out", "part"}
    assert {name for name, path in paths.items() if not path.exists()} == gone
    assert not (tmp_path / "results/d/.download").exists() and not (tmp_path / "results/d/figures").exists()
    # Snakemake may still find a cluster job running: its marker and output are left to it.
    assert [p.name for p in (tmp_path / ".snakemake/incomplete").iterdir()] == [urlsafe_b64encode(b"results/d/wide/model.npz").decode()]
    assert holder(".snakemake") == os.getpid()


def test_a_marker_naming_a_path_outside_the_working_directory_is_not_followed(tmp_path, monkeypatch):
    workdir, elsewhere = tmp_path / "wd", tmp_path / "precious.txt"
    elsewhere.write_text("keep me")
    marker = workdir / ".snakemake/incomplete" / urlsafe_b64encode(str(elsewhere).encode()).decode()
    marker.parent.mkdir(parents=True)
    marker.write_text("{}")
    monkeypatch.chdir(workdir)
    assert claim_workdir(".snakemake", "results") is True
    assert elsewhere.read_text() == "keep me"


def test_markers_are_read_as_snakemake_names_them_even_for_long_paths(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from snakemake.persistence.file import FilePersistence

    monkeypatch.chdir(tmp_path)
    output = "results/d/" + "/".join(["x" * 100] * 3) + "/model.npz"  # its name takes two folder-sized pieces
    (tmp_path / output).parent.mkdir(parents=True)
    (tmp_path / output).write_bytes(b"half")
    namer = SimpleNamespace(_fetch_max_len=lambda subject: 255)
    marker = Path(FilePersistence._record_path(namer, str(tmp_path / ".snakemake/incomplete"), output))
    marker.parent.mkdir(parents=True)
    marker.write_text(json.dumps({"external_jobid": None}))
    assert marker.parent.name.startswith("@")
    assert claim_workdir(".snakemake", "results") is True
    assert not (tmp_path / output).exists() and not marker.exists()


JOB = "from mnist_pipeline.runlock import join_run; join_run(); print('joined', flush=True); input()"


def test_jobs_left_running_by_a_killed_snakemake_keep_the_next_run_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = leave_dead_run(tmp_path)  # also makes .snakemake/, where a job finds the run's lock
    job = subprocess.Popen([sys.executable, "-c", JOB], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "joined"
        assert run_in_progress(".snakemake")
        with pytest.raises(RunInProgressError, match=r"jobs of a snakemake run that was killed are still running in .*fuser -k"):
            claim_workdir(".snakemake", "results")
        assert claim_workdir(".snakemake", "results", dry_run=True) is False
        assert all(path.exists() for path in paths.values())  # nothing of theirs touched
    finally:
        job.kill()
        job.wait()
    assert not run_in_progress(".snakemake")
    assert claim_workdir(".snakemake", "results") is True
    assert not paths["half_model"].exists()
