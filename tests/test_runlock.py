"""One executing run at a time per working directory, and a clean start after a run that was
killed: the run lock itself. What Snakemake leaves (its locks, incomplete outputs) and the
read-only commands beside a run are tested on the real workflow in tests/test_workflow.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mnist_pipeline.errors import RunInProgressError
from mnist_pipeline.locks import JOBS_LOCK_NAME, LOCK_NAME, claim_workdir, holder, locked_by_others

HOLD = "from mnist_pipeline.locks import claim_workdir; claim_workdir('.snakemake', 'results'); print('held', flush=True); input()"


def leave_debris(workdir: Path) -> dict[str, Path]:
    """What a killed run of ours leaves under results/: the download's work folders and fileio's
    temporary files, beside finished outputs that must stay."""
    paths = {
        "finished": workdir / "results/d/narrow/model.npz",
        "staging": workdir / "results/d/.download/0123456789abcdef/train-images-idx3-ubyte.gz",
        "old_tmp": workdir / "results/d/.raw.1a2b3c.tmp/t10k-labels-idx1-ubyte.gz.part",
        "swapped_out": workdir / "results/d/.raw.old-4242/manifest.json",
        "part": workdir / "results/d/parsed/.dataset.json.x7y8z9.part",
    }
    for path in paths.values():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"bytes")
    return paths


@pytest.fixture
def other_run(tmp_path):
    """A process holding the run lock of tmp_path, as a running snakemake does."""
    process = subprocess.Popen([sys.executable, "-c", HOLD], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "held"
    yield process
    process.kill()
    process.wait()


def test_a_second_run_is_refused_while_one_is_going_and_nothing_is_touched(tmp_path, monkeypatch, other_run):
    monkeypatch.chdir(tmp_path)
    paths = leave_debris(tmp_path)
    assert locked_by_others(Path(".snakemake") / LOCK_NAME) and holder(".snakemake") == other_run.pid
    with pytest.raises(RunInProgressError, match=rf"another snakemake run \(process {other_run.pid}\) is working in .*-n, --dag"):
        claim_workdir(".snakemake", "results")
    assert all(path.exists() for path in paths.values())


def test_after_a_killed_run_the_next_one_clears_what_it_left(tmp_path, monkeypatch, other_run):
    monkeypatch.chdir(tmp_path)
    paths = leave_debris(tmp_path)
    other_run.send_signal(signal.SIGKILL)
    other_run.wait()
    assert not locked_by_others(Path(".snakemake") / LOCK_NAME)
    assert claim_workdir(".snakemake", "results") is True
    assert {name for name, path in paths.items() if not path.exists()} == {"staging", "old_tmp", "swapped_out", "part"}
    assert not (tmp_path / "results/d/.download").exists()
    assert holder(".snakemake") == os.getpid()
    # A second claim by the same process keeps the lock and clears nothing more.
    assert claim_workdir(".snakemake", "results") is False


def test_debris_under_a_symlinked_results_folder_is_cleared(tmp_path, monkeypatch):
    """results/ on another disk, linked in: its leftovers are still this directory's."""
    elsewhere, workdir = tmp_path / "big-disk", tmp_path / "wd"
    paths = leave_debris(elsewhere)
    workdir.mkdir()
    (workdir / "results").symlink_to(elsewhere / "results")
    monkeypatch.chdir(workdir)
    assert claim_workdir(".snakemake", "results") is True
    assert [name for name, path in paths.items() if path.exists()] == ["finished"]


JOB = "from mnist_pipeline.locks import join_as_job; join_as_job(); print('joined', flush=True); input()"


def test_jobs_left_running_by_a_killed_snakemake_keep_the_next_run_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    paths = leave_debris(tmp_path)
    (tmp_path / ".snakemake").mkdir()  # where a job finds the run's lock
    job = subprocess.Popen([sys.executable, "-c", JOB], cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert job.stdout.readline().strip() == "joined"
        assert locked_by_others(Path(".snakemake") / JOBS_LOCK_NAME)
        with pytest.raises(RunInProgressError, match=r"jobs of a snakemake run that was killed are still running in .*fuser -k"):
            claim_workdir(".snakemake", "results")
        assert all(path.exists() for path in paths.values())  # nothing of theirs touched
    finally:
        job.kill()
        job.wait()
    assert claim_workdir(".snakemake", "results") is True
    assert not paths["staging"].exists()
