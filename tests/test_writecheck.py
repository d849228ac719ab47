"""A run names the write-protected folders its jobs need before any job starts (issue 21), where
Snakemake would stop with a PermissionError traceback of its own, after training."""

from __future__ import annotations

import os
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

from helpers import require
from mnist_pipeline.workflow.writecheck import Unwritable, unwritable, unwritable_text


@contextmanager
def write_protected(path: Path):
    """`path` made so that nothing in it can be made or removed: mode 0555 for a user; for root,
    whom modes do not stop, the immutable flag (chattr +i) or else a read-only bind mount."""
    if os.geteuid() != 0:
        mode = path.stat().st_mode
        path.chmod(0o555)
        try:
            yield "chmod 0555"
        finally:
            path.chmod(mode)
        return
    if shutil.which("chattr") and subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0:
        try:
            yield "chattr +i"
        finally:
            subprocess.run(["chattr", "-i", str(path)], check=True)
        return
    bound = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if bound and subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode == 0:
        try:
            yield "mount -o remount,bind,ro"
        finally:
            subprocess.run(["umount", str(path)], check=True)
        return
    if bound:
        subprocess.run(["umount", str(path)], check=True)
    require(False, "root, and neither chattr +i nor a read-only bind mount works here: cannot write-protect a folder")


@pytest.fixture
def results(tmp_path):
    """A dataset's results as a finished run leaves them: a published experiment, a run, figures."""
    dataset = tmp_path / "results/d"
    for leaf in ("baseline/model.npz", "baseline/run.json", "runs/0123456789ab/model.npz", "figures/baseline/loss.png",
                 "logs/publish/baseline.log"):
        (dataset / leaf).parent.mkdir(parents=True, exist_ok=True)
        (dataset / leaf).write_bytes(b"x")
    return dataset


def publish_targets(dataset: Path) -> list[tuple[str, Path]]:
    return [("publish", dataset / "baseline/model.npz"), ("publish", dataset / "baseline/run.json"),
            ("publish", dataset / "logs/publish/baseline.log"), ("train", dataset / "runs/fedcba987654/model.npz"),
            ("report", dataset / "figures")]


def test_everything_writable_is_no_problem(results):
    assert unwritable(publish_targets(results)) == []


def test_a_write_protected_experiment_folder_is_named_with_the_stages_that_write_there(results):
    with write_protected(results / "baseline"):
        problems = unwritable(publish_targets(results))
    assert problems == [Unwritable(results / "baseline", ("publish",))]
    text = unwritable_text(problems)
    assert text.startswith(f"\nWhy it failed:\n  publish ({results / 'baseline'}):\n    this folder is write-protected")
    assert "chmod u+w; chattr -i" in text and "No job was started." in text


def test_a_folder_still_to_be_made_is_judged_by_the_one_it_goes_in(results):
    # runs/fedcba987654/ does not exist yet: Snakemake makes it in runs/.
    with write_protected(results / "runs"):
        assert unwritable(publish_targets(results)) == [Unwritable(results / "runs", ("train",))]


def test_a_folder_output_is_checked_all_the_way_down(results):
    # figures/ is removed whole before the report is made again: a protected folder in it stops that.
    with write_protected(results / "figures/baseline"):
        assert unwritable(publish_targets(results)) == [Unwritable(results / "figures/baseline", ("report",))]
