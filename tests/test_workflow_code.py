"""The workflow runs, and plans by, the code of its own checkout (issue 20).

- Each checkout runs its own src/, whatever copy of the package Python has installed, and
  refuses to run, naming both, when it cannot.
- A stage's code counts by what it does: a comment, a docstring, a reformat or a move of the
  project plans nothing; a real change plans exactly the stages whose code imports it.
- Commands that only read work beside a run that is training.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
import venv
from pathlib import Path

import pytest

from helpers import REPO, copy_workflow, planned_jobs, snakemake, snakemake_command, workflow_env

pytestmark = pytest.mark.slow

TEST_CONFIG = REPO / "tests/workflow/synthetic.yaml"
# Appended to a module of a checkout's package: each process that imports it says from where.
TRACE = '\nimport os as _os\nwith open(_os.path.join(_os.getcwd(), "imported-from.txt"), "a") as _f:\n    _f.write(__file__ + "\\n")\n'


def config_args(synthetic_dir: Path) -> tuple[str, ...]:
    return ("--configfile", str(TEST_CONFIG), "--config", f"source={synthetic_dir}")


@pytest.fixture(scope="module")
def finished(tmp_path_factory, synthetic_dir):
    workdir = copy_workflow(tmp_path_factory.mktemp("checkout") / "wf")
    snakemake(workdir, *config_args(synthetic_dir))
    return workdir


@pytest.fixture
def project(finished, tmp_path):
    """A private copy of the finished project, times kept, for a test to edit."""
    copy = tmp_path / "project"
    shutil.copytree(finished, copy, symlinks=True)
    return copy


def imported_from(workdir: Path) -> set[str]:
    return {os.path.realpath(path) for path in (workdir / "imported-from.txt").read_text().split()}


def test_a_second_checkout_runs_its_own_code_not_the_installed_one(tmp_path, synthetic_dir):
    """The tests run with this repository installed (editable); a second checkout's jobs and
    plan still use that checkout's src/."""
    other = copy_workflow(tmp_path / "other-checkout")
    datasets = other / "src/mnist_pipeline/data/datasets.py"
    datasets.write_text(datasets.read_text() + TRACE)
    snakemake(other, *config_args(synthetic_dir), "--", "results/synthetic/parsed/dataset.json")
    # The Snakefile (main process) and the download, keep_download and parse jobs.
    assert imported_from(other) == {str(datasets.resolve())}
    assert len((other / "imported-from.txt").read_text().split()) >= 2


def test_a_stale_installed_copy_never_runs(tmp_path, synthetic_dir):
    """`pip install .` (not editable) froze a copy of the package into the environment; an edit
    to the checkout's src/ is what runs all the same."""
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(system_site_packages=True).create(env_dir)
    python = env_dir / "bin/python"
    # What a non-editable install leaves: a copy of the package in the environment's site-packages.
    site = env_dir / f"lib/python{sys.version_info.major}.{sys.version_info.minor}/site-packages"
    shutil.copytree(REPO / "src/mnist_pipeline", site / "mnist_pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    stale = subprocess.run([str(python), "-c", "import mnist_pipeline; print(mnist_pipeline.__file__)"],
                           check=True, capture_output=True, text=True, cwd=tmp_path, env=workflow_env(tmp_path)).stdout.strip()
    assert str(env_dir) in stale  # that environment imports its frozen copy by default
    checkout = copy_workflow(tmp_path / "checkout")
    datasets = checkout / "src/mnist_pipeline/data/datasets.py"
    datasets.write_text(datasets.read_text() + TRACE)
    command = [str(python), *snakemake_command(checkout, *config_args(synthetic_dir), "--", "results/synthetic/parsed/dataset.json")[1:]]
    result = subprocess.run(command, capture_output=True, text=True, cwd=checkout, env=workflow_env(checkout), timeout=600)
    assert result.returncode == 0, result.stderr
    assert imported_from(checkout) == {str(datasets.resolve())}


def test_without_its_own_package_the_run_refuses_naming_both(tmp_path, synthetic_dir):
    checkout = copy_workflow(tmp_path / "no-src", folders=("workflow", "profiles"))
    result = snakemake(checkout, "--dry-run", *config_args(synthetic_dir), check=False)
    assert result.returncode != 0
    text = result.stdout + result.stderr
    assert f"runs the package of its own checkout, {checkout.resolve() / 'src/mnist_pipeline'}" in text
    assert str(REPO / "src/mnist_pipeline") in text  # the copy Python would have used
    assert not (checkout / "results").exists()


def test_the_package_refuses_to_load_from_elsewhere_inside_a_run(tmp_path):
    env = {**os.environ, "MNIST_PIPELINE_SRC": str(tmp_path / "some-checkout/src")}
    result = subprocess.run([sys.executable, "-c", "import mnist_pipeline"], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert result.returncode != 0
    assert "ImportError: this workflow runs the package of its own checkout, " + str(tmp_path / "some-checkout/src/mnist_pipeline") in result.stderr
    assert str(REPO / "src/mnist_pipeline") in result.stderr


def test_a_moved_project_plans_nothing(finished, tmp_path, synthetic_dir):
    moved = tmp_path / "moved" / "elsewhere"
    shutil.copytree(finished, moved, symlinks=True)  # as `cp -a`: times kept
    assert planned_jobs(moved, *config_args(synthetic_dir)) == {}


def test_comments_docstrings_and_formatting_plan_nothing(project, synthetic_dir):
    layers = project / "src/mnist_pipeline/nn/layers.py"
    text = layers.read_text()
    docstring_end = text.index('"""', 3)
    reworded = text[:3] + "Reworded: " + text[3:docstring_end] + '"""' + text[docstring_end + 3:]
    reformatted = reworded.replace("\n\n\ndef ", "\n\n\n# a note before each function\n\n\ndef ").replace("):\n", "):  # why\n", 3)
    layers.write_text(reformatted + "\n\n# a comment at the end\n")
    script = project / "workflow/scripts/train.py"
    script.write_text(script.read_text().replace('"""Train one', '"""Train, as always, one') + "# and a comment\n")
    # Newer files, same meaning: Snakemake sees the times, the plan sees the code.
    assert planned_jobs(project, *config_args(synthetic_dir)) == {}


def test_a_real_change_to_a_network_module_plans_training_onward_only(project, synthetic_dir):
    layers = project / "src/mnist_pipeline/nn/layers.py"
    layers.write_text(layers.read_text() + "\nUNUSED_BUT_REAL = 1\n")
    assert planned_jobs(project, *config_args(synthetic_dir)) == {
        "train": 2, "evaluate": 2, "robustness": 2, "publish": 2, "publish_robustness": 2, "report": 1, "all": 1}


def test_a_real_change_to_a_stage_script_plans_that_stage_onward(project, synthetic_dir):
    script = project / "workflow/scripts/prepare.py"
    script.write_text(script.read_text() + "\nUNUSED_BUT_REAL = 1\n")
    assert planned_jobs(project, *config_args(synthetic_dir)) == {
        "prepare": 1, "train": 2, "evaluate": 2, "robustness": 2, "publish": 2, "publish_robustness": 2, "report": 1, "all": 1}


READ_ONLY = [
    ("--dry-run",), ("--lint",), ("--list-rules",), ("--dag",), ("--rulegraph",), ("--summary",), ("--detailed-summary",),
]


def test_read_only_commands_work_while_a_run_trains(project, tmp_path, synthetic_dir):
    """A finished project retrains with new settings; meanwhile every command that only reads
    works (--report shows the outputs of the last finished run)."""
    workdir = project
    config = (*config_args(synthetic_dir), "train={epochs: 100000}")
    terminal = tmp_path / "terminal.txt"
    with open(terminal, "w") as out:
        run = subprocess.Popen(snakemake_command(workdir, *config), cwd=workdir, env=workflow_env(workdir), stdout=out, stderr=out,
                               start_new_session=True)
        try:
            deadline = time.monotonic() + 300
            while (not any("epoch 2/100000" in log.read_text() for log in (workdir / "results/synthetic/runs").glob("*/train.log"))
                   and run.poll() is None and time.monotonic() < deadline):
                time.sleep(0.05)
            assert run.poll() is None, terminal.read_text()
            for args in READ_ONLY:
                result = snakemake(workdir, *config, *args, check=False)
                assert result.returncode == 0, (args, result.stdout[-2000:], result.stderr[-2000:])
                assert "another snakemake run" not in result.stderr, args
            report = snakemake(workdir, *config, "--report", str(tmp_path / "snakemake-report.html"), check=False)
            assert report.returncode == 0, report.stderr[-2000:]
            # A second run that would execute jobs is refused, with the reason, and the first goes on.
            second = snakemake(workdir, *config, check=False)
            assert second.returncode != 0
            assert f"another snakemake run (process {run.pid}) is working in {workdir}" in second.stderr
            assert run.poll() is None
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(run.pid, signal.SIGKILL)
            run.wait()
