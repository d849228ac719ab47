"""Every artifact is verified when the next stage reads it (issue 21), in a real workflow run.

The case from the issue: 16 bytes flipped in prepared/train.parquet, its time kept, so that
Snakemake sees nothing; then a train setting changes. Training used to go on, on 446 wrong
pixel rows and 46 wrong labels, and exit 0.
"""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from damage import flip_bytes
from helpers import REPO, copy_workflow, snakemake, workflow_env
from mnist_pipeline.integrity import digest_path, verified

pytestmark = pytest.mark.slow


def test_a_flipped_prepared_split_stops_training_naming_it_and_the_printed_rebuild_works(tmp_path, synthetic_dir):
    workdir = copy_workflow(tmp_path / "workflow")
    # One small experiment: what is checked is the same for every one.
    config = yaml.safe_load((REPO / "tests/workflow/synthetic.yaml").read_text())
    config["experiments"] = {"baseline": {}}
    (tmp_path / "one.yaml").write_text(yaml.safe_dump(config))
    args = ("--configfile", str(tmp_path / "one.yaml"), "--config", f"source={synthetic_dir}")
    snakemake(workdir, *args)
    split = workdir / "results/synthetic/prepared/train.parquet"
    written = digest_path(split).read_text()

    flip_bytes(split, 4000)
    failed = snakemake(workdir, *args, "train={epochs: 2}", check=False)
    out = failed.stdout + failed.stderr
    assert failed.returncode != 0
    why = out[out.index("Why it failed:") :]
    assert re.search(
        r"train \(results/synthetic/runs/\w+/train\.log\):\n    ChecksumError: results/synthetic/prepared/train\.parquet: corrupted: "
        r"its bytes changed since it was written",
        why,
    ), why
    assert "Traceback" not in why
    # Nothing was trained on it.
    run = re.search(r"Run (\w+) trains experiment\(s\): baseline", out).group(1)
    assert not (workdir / f"results/synthetic/runs/{run}/model.npz").exists() and "epoch 1/2" not in out

    # The rebuild the message gives: delete the file, then the same snakemake command again.
    rebuild = re.search(r"rm (\S+) && snakemake --cores 4 \(with the --config or --configfile you ran it with\)", why)
    assert rebuild is not None and rebuild.group(1) == "results/synthetic/prepared/train.parquet", why
    subprocess.run(["sh", "-c", f"rm {rebuild.group(1)}"], cwd=workdir, env=workflow_env(workdir), check=True)
    done = snakemake(workdir, *args, "train={epochs: 2}")
    assert "epoch 2/2" in done.stdout + done.stderr and verified(workdir / f"results/synthetic/runs/{run}/model.npz")
    # prepare is deterministic: the same bytes as first written, sealed again.
    assert verified(split) and digest_path(split).read_text() == written
