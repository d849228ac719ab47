"""Names that cannot work and configs too large to walk stop the workflow before any job, in one
message naming the key or file (issue 21); what Snakemake itself reads first is in
docs/configuration-limits.md. Dry runs of a workflow copy, a few seconds each, and one real run."""

from __future__ import annotations

import re
import resource
import subprocess
import time

import pytest
import yaml

from helpers import REPO, copy_workflow, snakemake, snakemake_command, workflow_env
from test_config import alias_bomb, name_of
from test_writecheck import write_protected

TEST_CONFIG = REPO / "tests/workflow/synthetic.yaml"
# Written once the Snakefile checks config files and writable folders itself (proposed for issue 21).
HOOKS = "check_config_files" in (REPO / "Snakefile").read_text() and "check_writable" in (REPO / "Snakefile").read_text()
needs_hooks = pytest.mark.skipif(not HOOKS, reason="the Snakefile does not call check_config_files and check_writable yet (issue 21)")


@pytest.fixture
def workdir(tmp_path, synthetic_dir):
    workdir = copy_workflow(tmp_path / "wf")
    config = yaml.safe_load(TEST_CONFIG.read_text())
    (workdir / "config.yaml").write_text(yaml.safe_dump({**config, "source": str(synthetic_dir)}))
    return workdir


def refused(result: subprocess.CompletedProcess, *words: str) -> str:
    text = result.stdout + result.stderr
    assert result.returncode == 1, text
    for word in words:
        assert word in text, text
    assert "Traceback" not in text and "OSError" not in text and len(text) < 4000, text
    return text


def test_a_name_too_long_is_refused_even_by_a_dry_run(workdir):
    result = snakemake(workdir, "--dry-run", "--config", f"experiments={{{name_of(300)}: {{}}}}", check=False)
    refused(result, "config key 'experiments'", "300 characters long; expected at most 251")


def test_a_bad_name_in_the_apps_file_stops_a_plain_run_before_any_job(workdir):
    (workdir / "experiments.yaml").write_text(yaml.safe_dump({"experiments": {"report.html": {}}}))
    refused(snakemake(workdir, check=False), "config key 'experiments': 'report.html' is a name results/{dataset}/ uses")
    assert not (workdir / "results").exists()


def limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (2 << 30, resource.getrlimit(resource.RLIMIT_AS)[1]))


def test_an_alias_bomb_in_a_configfile_is_refused_in_bounded_time_and_memory(workdir, tmp_path):
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(alias_bomb(12))  # 9**12 values under train.hidden, in 600 bytes
    started = time.monotonic()
    result = subprocess.run(snakemake_command(workdir, "--dry-run", "--configfile", str(bomb)), capture_output=True, text=True,
                            cwd=workdir, env=workflow_env(workdir), timeout=120, preexec_fn=limit_memory)
    refused(result, "more than 100,000 values", "'train.hidden[11]'")
    assert time.monotonic() - started < 60


@needs_hooks
@pytest.mark.parametrize("name", ["config.yaml", "experiments.yaml"])
def test_a_config_file_that_is_not_utf8_is_named(workdir, name):
    path = workdir / name
    path.write_bytes((path.read_bytes() if path.exists() else b"") + b"experiments:\n  caf\xe9: {}\n")
    refused(snakemake(workdir, "--dry-run", check=False), f"{name}: byte 0xe9 at line", "is not UTF-8")


@needs_hooks
@pytest.mark.slow
def test_a_write_protected_experiment_folder_stops_the_run_before_any_job(workdir):
    snakemake(workdir)
    folder = workdir / "results/synthetic/baseline"
    with write_protected(folder):
        result = snakemake(workdir, "--config", "train={epochs: 2}", check=False)
    text = refused(result, "No job was started.")
    assert re.search(r"\nWhy it failed:\n  (\w+, )*publish(, \w+)* \(results/synthetic/baseline\):\n    this folder is write-protected", text)
    assert "Error in rule" not in text and "localrule train" not in text
