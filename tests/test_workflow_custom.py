"""Custom datasets through the real workflow: any image size, the classes the data has, and the
settings the data rules out refused before any job starts."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from helpers import REPO, copy_workflow, snakemake, workflow_env, write_synthetic_dataset

pytestmark = pytest.mark.slow

TEST_CONFIG = REPO / "tests/workflow/synthetic.yaml"
# An MLP and a CNN whose two blocks fit 20x20 (at most four do); two epochs are enough.
SMALL = ("train={epochs: 2}", "experiments={baseline: {}, narrow: {model: cnn, conv_channels: [4, 8], hidden: [16]}}")


@pytest.fixture(scope="module")
def run_20x20(tmp_path_factory):
    """A finished run on 20x20 images whose labels are 0 and 5 only."""
    data = write_synthetic_dataset(tmp_path_factory.mktemp("idx-20x20"), n_train=300, n_test=100, shape=(20, 20), label_values=[0, 5])
    workdir = copy_workflow(tmp_path_factory.mktemp("workflow-20x20"))
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--config", f"source={data}", *SMALL)
    return workdir, data


def test_20x20_images_go_through_every_stage(run_20x20):
    workdir, _ = run_20x20
    results = workdir / "results/synthetic"
    assert json.loads((results / "parsed/dataset.json").read_text())["image_shape"] == [20, 20]
    table = pq.read_table(results / "prepared/test.parquet")
    assert len(table.column("pixels")[0]) == 400
    for experiment, kind in (("baseline", "mlp"), ("narrow", "cnn")):
        metrics = json.loads((results / experiment / "metrics.json").read_text())
        assert metrics["test_accuracy"] >= 0.9, (experiment, metrics["test_accuracy"])
        header = subprocess.run(["mnist-pipeline", "info", "--json", str(results / experiment / "model.npz")],
                                capture_output=True, text=True, env=workflow_env(workdir), check=True)
        info = json.loads(header.stdout)
        assert info["image_shape"] == [20, 20] and info["architecture"]["model"] == kind
        for figure in ("mistakes", "confused_pairs", "confusion_matrix"):
            assert (results / "figures" / experiment / f"{figure}.png").stat().st_size > 0
    assert "20x20 pixels" in (results / "report.md").read_text()


def test_predict_frames_images_to_the_models_size(run_20x20, tmp_path):
    workdir, data = run_20x20
    model = workdir / "results/synthetic/narrow/model.npz"
    big = Image.new("L", (90, 60), color=255)  # a dark block on white, far from 20x20
    big.paste(0, (30, 10, 60, 50))
    big.save(tmp_path / "drawn.png")
    out = subprocess.run(["mnist-pipeline", "predict", "--json", str(model), str(data / "t10k-images-idx3-ubyte.gz"), str(tmp_path / "drawn.png")],
                         capture_output=True, text=True, env=workflow_env(workdir))
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    assert len(records) == 101 and records[-1]["file"].endswith("drawn.png")
    labels = pq.read_table(workdir / "results/synthetic/prepared/test.parquet").column("label").to_numpy()
    predicted = np.array([record["label"] for record in records[:100]])
    assert np.mean(predicted == labels) >= 0.9
    assert {record["class"] for record in records} <= {"0", "5"}


def test_labels_0_and_5_are_two_classes_in_metrics_and_report(run_20x20):
    workdir, _ = run_20x20
    results = workdir / "results/synthetic"
    metrics = json.loads((results / "baseline/metrics.json").read_text())
    assert metrics["classes"] == ["0", "5"] and set(metrics["per_class"]) == {"0", "5"}
    assert np.array(metrics["confusion_matrix"]).shape == (2, 2) and metrics["absent_classes"] == []
    f1 = [metrics["per_class"][name]["f1"] for name in ("0", "5")]
    assert metrics["macro_f1"] == pytest.approx(np.mean(f1)) and metrics["macro_f1"] >= 0.9
    assert "2 classes: 0, 5" in (results / "report.md").read_text()


def test_declared_class_names_report_an_absent_class_as_absent(tmp_path):
    data = write_synthetic_dataset(tmp_path / "idx", n_train=200, n_test=100, label_values=[0, 2])
    workdir = copy_workflow(tmp_path / "wf")
    snakemake(workdir, "--configfile", str(TEST_CONFIG), "--config", f"source={data}", "class_names=[zero, one, two]",
              "train={epochs: 2}", "experiments={baseline: {}, narrow: {hidden: [8]}}")
    results = workdir / "results/synthetic"
    metrics = json.loads((results / "baseline/metrics.json").read_text())
    assert metrics["classes"] == ["zero", "one", "two"] and metrics["absent_classes"] == ["one"]
    assert metrics["per_class"]["one"] == {"absent": True, "precision": None, "recall": None, "f1": None, "support": 0}
    assert metrics["macro_f1"] == pytest.approx((metrics["per_class"]["zero"]["f1"] + metrics["per_class"]["two"]["f1"]) / 2)
    assert metrics["macro_f1"] >= 0.9
    report = (results / "report.md").read_text()
    assert "| one | absent | absent | absent | 0 |" in report
    assert "absent from the training or test images: one" in report


@pytest.mark.parametrize(
    "settings, words",
    [
        (("experiments={deep: {model: cnn, conv_channels: [2, 2, 2, 2, 2]}}",),
         ["experiment 'deep'", "conv_channels", "5 conv-pool blocks", "20x20 image fits at most 4"]),
        (("prepare={val_fraction: 0.003}",),
         ["prepare.val_fraction", "0.003", "no validation image", "class '0' (150 training images"]),
    ],
)
def test_settings_the_data_rules_out_stop_the_run_before_any_job(tmp_path, settings, words):
    data = write_synthetic_dataset(tmp_path / "idx", n_train=300, n_test=100, shape=(20, 20), label_values=[0, 5])
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "--configfile", str(TEST_CONFIG), "--config", f"source={data}", *settings, check=False)
    assert result.returncode != 0
    for word in words:
        assert word in result.stdout + result.stderr, word
    assert not (workdir / "results").exists()


def test_class_names_are_refused_for_a_known_dataset(tmp_path):
    workdir = copy_workflow(tmp_path / "wf")
    result = snakemake(workdir, "--dry-run", "--config", "dataset=fashion-mnist", "source=/", "class_names=[a, b]", check=False)
    assert result.returncode != 0
    assert "class_names" in result.stderr + result.stdout and "fashion-mnist has its own classes" in result.stderr + result.stdout
