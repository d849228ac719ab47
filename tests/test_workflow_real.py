"""The workflow on the real Fashion-MNIST files: every stage, checksums verified, a useful model."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from helpers import copy_workflow, planned_jobs, snakemake

pytestmark = [pytest.mark.slow, pytest.mark.realdata]


@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory, fashion_dir):
    workdir = copy_workflow(tmp_path_factory.mktemp("fashion"))
    # Few epochs keep the suite short; the default config's 20 epochs reach more (README).
    config = ("--config", "dataset=fashion-mnist", f"source={fashion_dir}", "train={epochs: 4}")
    snakemake(workdir, *config)
    return workdir / "results/fashion-mnist", workdir, config


def test_real_files_are_verified_by_content_checksum(fashion_run):
    results, _, _ = fashion_run
    manifest = json.loads((results / "raw/manifest.json").read_text())
    assert len(manifest["files"]) == 4
    for entry in manifest["files"].values():
        assert entry["verified_by"] == "content_sha256", entry


def test_real_splits_have_the_documented_shape(fashion_run):
    results, _, _ = fashion_run
    rows = {split: pq.read_metadata(results / "prepared" / f"{split}.parquet").num_rows for split in ("train", "val", "test")}
    assert rows == {"train": 54000, "val": 6000, "test": 10000}
    meta = json.loads(pq.read_schema(results / "prepared/train.parquet").metadata[b"mnist_pipeline"])
    assert 0.2 < meta["normalization"]["mean"] < 0.4 and meta["split"] == {"seed": 0, "val_fraction": 0.1}
    labels = pq.read_table(results / "prepared/val.parquet", columns=["label"]).column("label").to_numpy()
    assert np.bincount(labels).tolist() == [600] * 10  # stratified


def test_real_model_reaches_useful_accuracy(fashion_run):
    results, _, _ = fashion_run
    metrics = json.loads((results / "baseline/metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.85, metrics["test_accuracy"]
    assert metrics["val_accuracy"] >= 0.85
    assert np.array(metrics["confusion_matrix"]).sum() == 10000
    assert metrics["epochs_run"] == 4 and metrics["train_seconds"] > 0
    assert (results / "report.html").stat().st_size > 10_000


def test_real_rerun_schedules_nothing(fashion_run):
    _, workdir, config = fashion_run
    assert planned_jobs(workdir, *config) == {}
