"""`mnist-pipeline predict` and `info` on models trained on real Fashion-MNIST.

The model is trained here (a few thousand images, 2 epochs, about a second) with the package's
own training and evaluation code, and laid out the way the workflow lays out results/, so that
the command and the app see exactly what a pipeline run would give them.
"""

from __future__ import annotations

import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hostile import CRAFTED_MODELS, MIB, crafted_model, gzip_bomb, huge_png
from mnist_pipeline.cli import classify_files, main, streamlit_command
from mnist_pipeline.data.datasets import class_names
from mnist_pipeline.data.idx import write_idx
from mnist_pipeline.nn.model import load_model


def run_cli(*args, cwd=None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    return subprocess.run(["mnist-pipeline", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=120)


def reference_labels(model_path: Path, images: np.ndarray) -> np.ndarray:
    """What the model predicts for dataset images fed to it directly, without the command."""
    from mnist_pipeline.data.preprocess import model_inputs

    loaded = load_model(model_path)
    return loaded.model.predict_proba(model_inputs(images, loaded.normalization)).argmax(axis=1)


def test_predict_png_round_trip_matches_direct_prediction(tmp_path, model_path, fashion_test):
    images, labels = fashion_test
    picks = list(range(12))
    files = []
    for i in picks:
        Image.fromarray(images[i]).save(tmp_path / f"test-{i}.png")
        files.append(tmp_path / f"test-{i}.png")
    out = run_cli("predict", model_path, *files, "--json")
    assert out.returncode == 0, out.stderr
    records = json.loads(out.stdout)
    expected = reference_labels(model_path, images[picks])
    assert [r["file"] for r in records] == [str(f) for f in files]
    assert [r["label"] for r in records] == expected.tolist()
    classes = class_names("fashion-mnist", 10)
    for record in records:
        assert record["index"] is None and record["class"] == classes[record["label"]]
        assert 0.1 <= record["probability"] <= 1.0
    # A 2-epoch model on 5000 images is far from perfect, but far above chance (10%).
    assert np.mean(expected == labels[picks]) >= 0.5


def test_predict_text_top_k_idx_npy_and_a_bad_file(tmp_path, model_path, fashion_test):
    images, _ = fashion_test
    write_idx(tmp_path / "five-idx3-ubyte.gz", images[:5])
    np.save(tmp_path / "three.npy", images[5:8])
    (tmp_path / "notes.png").write_text("not an image")
    Image.fromarray(images[8]).convert("RGB").save(tmp_path / "one.jpg", quality=95)
    out = run_cli("predict", model_path, tmp_path / "five-idx3-ubyte.gz", tmp_path / "notes.png", tmp_path / "three.npy",
                  tmp_path / "one.jpg", "--top", "3")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        *(f"{tmp_path}/five-idx3-ubyte.gz[{i}]" for i in range(5)), *(f"{tmp_path}/three.npy[{i}]" for i in range(3)), f"{tmp_path}/one.jpg"
    ]
    expected = reference_labels(model_path, images[:8])
    classes = class_names("fashion-mnist", 10)
    for line, label in zip(lines, expected, strict=False):
        ranked = line.split(": ", 1)[1].split(" | ")
        assert len(ranked) == 3 and ranked[0].startswith(classes[label] + " ")
        percents = [float(entry.rsplit(" ", 1)[1].rstrip("%")) for entry in ranked]
        assert percents == sorted(percents, reverse=True)
    assert "notes.png: not a PNG, JPEG, IDX or .npy file" in out.stderr


def test_predict_json_indexes_stacks_and_reports_errors_in_place(tmp_path, model_path, fashion_test):
    images, _ = fashion_test
    np.save(tmp_path / "stack.npy", images[:3])
    np.save(tmp_path / "flat.npy", images[3].reshape(784).astype(np.float32) / 255)
    np.save(tmp_path / "normalized.npy", (images[4].astype(np.float32) - 73) / 90)
    out = run_cli("predict", model_path, tmp_path / "stack.npy", tmp_path / "missing.png", tmp_path / "flat.npy",
                  tmp_path / "normalized.npy", "--json", "--top", "2")
    assert out.returncode == 1
    records = json.loads(out.stdout)
    assert [(Path(r["file"]).name, r["index"]) for r in records] == [
        ("stack.npy", 0), ("stack.npy", 1), ("stack.npy", 2), ("missing.png", None), ("flat.npy", None), ("normalized.npy", None)
    ]
    expected = reference_labels(model_path, images[:4])
    assert [records[i]["label"] for i in (0, 1, 2, 4)] == expected.tolist()
    assert all(len(records[i]["top"]) == 2 for i in (0, 1, 2, 4))
    assert records[3]["label"] is None and "No such file" in records[3]["error"]
    assert records[5]["probability"] is None and "expected raw pixels in [0, 255]" in records[5]["error"]
    assert "missing.png" in out.stderr and "normalized.npy" in out.stderr


def test_predict_reports_hostile_files_in_place_and_classifies_the_rest(tmp_path, model_path, fashion_test):
    images, _ = fashion_test
    Image.fromarray(images[0]).save(tmp_path / "first.png")
    (tmp_path / "huge.png").write_bytes(huge_png(20000, 20000))  # 400 megapixels in 50 kB
    two_images = b"\x00\x00\x08\x03" + struct.pack(">III", 2, 28, 28)
    (tmp_path / "bomb-idx3-ubyte.gz").write_bytes(gzip_bomb(two_images, 256 * MIB))
    (tmp_path / "empty.png").write_bytes(b"")
    Image.fromarray(images[1]).save(tmp_path / "last.png")
    names = ["first.png", "huge.png", "bomb-idx3-ubyte.gz", "empty.png", "last.png"]
    out = run_cli("predict", "--json", model_path, *(tmp_path / name for name in names))
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    records = {Path(r["file"]).name: r for r in json.loads(out.stdout)}
    assert list(records) == names
    assert [records[name]["label"] for name in ("first.png", "last.png")] == reference_labels(model_path, images[:2]).tolist()
    errors = {name: records[name]["error"] for name in names[1:4]}
    assert errors["huge.png"].startswith(f"{tmp_path}/huge.png: the image is too large: 400,000,000 pixels")
    assert "decompresses to more than 1584 bytes" in errors["bomb-idx3-ubyte.gz"]
    assert errors["empty.png"] == f"{tmp_path}/empty.png: the file is empty (0 bytes); expected a PNG, JPEG, IDX or .npy file"
    for error in errors.values():
        assert f"error: {error}" in out.stderr


def test_predict_large_inverted_photo_like_image(tmp_path, model_path, fashion_test):
    """A dark-on-light, off-centre, 10x larger JPEG is brought back to the dataset's format."""
    images, _ = fashion_test
    i = 1
    big = Image.fromarray(255 - images[i]).resize((280, 280), Image.Resampling.BICUBIC)
    page = Image.new("L", (640, 480), 250)
    page.paste(big, (330, 40))
    page.convert("RGB").save(tmp_path / "photo.jpg", quality=90)
    records = classify_files(load_model(model_path), [tmp_path / "photo.jpg"])
    assert records[0]["label"] == reference_labels(model_path, images[i : i + 1])[0]


def test_predict_bad_model_and_bad_arguments(tmp_path, model_path):
    (tmp_path / "model.npz").write_bytes(b"PK\x03\x04 broken")
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    out = run_cli("predict", tmp_path / "model.npz", tmp_path / "x.png")
    assert out.returncode == 2 and "model.npz" in out.stderr and "not a model file" in out.stderr
    (tmp_path / "garbage.npz").write_bytes(b"\x00garbage, not a model")
    out = run_cli("predict", tmp_path / "garbage.npz", tmp_path / "x.png")
    assert out.returncode == 2 and "allow_pickle" not in out.stderr
    assert f"{tmp_path}/garbage.npz: not a model file: expected an .npz archive written by mnist-pipeline" in out.stderr
    out = run_cli("predict", model_path, tmp_path / "x.png", "--top", "0")
    assert out.returncode == 2 and "--top" in out.stderr
    out = run_cli("predict", model_path)
    assert out.returncode == 2 and "FILE" in out.stderr


@pytest.mark.parametrize("command", ["predict", "info"])
@pytest.mark.parametrize("case", list(CRAFTED_MODELS))
def test_a_crafted_model_file_is_one_error_line_and_exit_2(tmp_path, model_path, case, command, capsys):
    header, arrays, expected = CRAFTED_MODELS[case]
    path = crafted_model(model_path, tmp_path / "crafted.npz", header, arrays)
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    assert main([command, str(path), *([str(tmp_path / "x.png")] if command == "predict" else [])]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1, err
    assert re.fullmatch(rf"mnist-pipeline: error: {re.escape(str(path))}: .*{expected}.*\n", err), err


#: Runs a command (its stdout dropped, its stderr passed on), then prints its exit status and peak RSS (kB).
MEASURE = ("import resource, subprocess, sys; status = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL).returncode; "
           "print(status, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)")


def run_measured(*args) -> tuple[int, str, int]:
    """(exit status, stderr, peak resident memory in bytes) of the installed console script.

    Measured by a small Python parent, not by pytest: Linux counts into a process's peak what its
    parent held when it forked, which for pytest is a few hundred megabytes of its own.
    """
    out = subprocess.run([sys.executable, "-c", MEASURE, "mnist-pipeline", *map(str, args)], capture_output=True, text=True,
                         timeout=120)
    status, kilobytes = out.stdout.split()
    return int(status), out.stderr, int(kilobytes) * 1024


def test_huge_declarations_are_refused_in_the_memory_a_good_model_takes(tmp_path, model_path):
    Image.new("L", (28, 28)).save(tmp_path / "x.png")
    status, err, baseline = run_measured("predict", model_path, tmp_path / "x.png")
    assert status == 0, err
    for case in ("n_out 400000", "a 10^12-unit layer"):
        header, _, expected = CRAFTED_MODELS[case]
        path = crafted_model(model_path, tmp_path / "crafted.npz", header)
        status, err, peak = run_measured("predict", path, tmp_path / "x.png")
        assert status == 2 and err.count("\n") == 1 and "Traceback" not in err, err
        # n_out 400000 took 2.6 GB before being refused; the good model's run here takes about 100 MB.
        assert peak < baseline + 30 * MIB, f"{case}: {peak / MIB:.0f} MiB against {baseline / MIB:.0f} MiB"
        assert re.search(expected, err)


def test_weights_too_large_for_float32_are_an_error_per_image_not_nan(tmp_path, model_path, fashion_test):
    def huge(arrays):
        arrays["layer0.W"] = np.full(arrays["layer0.W"].shape, 3e38, np.float32)

    path = crafted_model(model_path, tmp_path / "huge-weights.npz", arrays=huge)
    Image.fromarray(fashion_test[0][0]).save(tmp_path / "item.png")
    out = run_cli("predict", path, tmp_path / "item.png")
    assert out.returncode == 1 and out.stdout == "" and "nan" not in out.stderr.lower()
    assert out.stderr == (f"mnist-pipeline: error: {tmp_path}/item.png: the model's outputs for it overflow float32, so there are no"
                          " probabilities (its weights are far larger than training makes them)\n")


def test_blank_image_is_an_error_not_a_guess(tmp_path, model_path):
    Image.new("RGB", (100, 60), "white").save(tmp_path / "blank.png")
    out = run_cli("predict", model_path, tmp_path / "blank.png")
    assert out.returncode == 1 and out.stdout == ""
    assert "blank.png" in out.stderr and "blank" in out.stderr


def test_info_text_and_json(model_path):
    out = run_cli("info", model_path)
    assert out.returncode == 0, out.stderr
    assert "fashion-mnist" in out.stdout and "baseline" in out.stdout
    assert "dense 784->64, relu, dense 64->10" in out.stdout
    assert "test accuracy" in out.stdout and "Ankle boot: precision" in out.stdout
    # Every training setting, the ones that differ from TrainSettings' defaults marked.
    assert "  hidden: [64]  (default [1024, 512])\n" in out.stdout and "  optimizer: adamw\n" in out.stdout
    assert "on 2 threads" in out.stdout
    info = json.loads(run_cli("info", model_path, "--json").stdout)
    metrics = json.loads((model_path.parent / "metrics.json").read_text())
    assert info["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert info["n_parameters"] == 784 * 64 + 64 + 64 * 10 + 10
    assert info["settings"]["hidden"] == [64] and info["epochs_run"] == 2 and info["threads"] == 2
    assert info["train_seconds"] > 0


def test_info_without_metrics(tmp_path, model_path):
    lone = tmp_path / "lone.npz"
    lone.write_bytes(model_path.read_bytes())
    assert main(["info", str(lone), "--json"]) == 0
    out = run_cli("info", lone)
    assert out.returncode == 0 and "none found" in out.stdout


def test_app_command_line():
    command = streamlit_command("results", port=8599, headless=True)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert Path(command[4]).is_file() and command[4].endswith("streamlit_app.py")
    assert command[command.index("--server.port") + 1] == "8599"
    assert command[command.index("--server.address") + 1] == "127.0.0.1"
    assert command[-3:] == ["--", "--results", os.fspath(Path("results").resolve())]


def launched_app(monkeypatch, *args: str) -> list[str]:
    """The command line `mnist-pipeline app ARGS` would become (it execs Streamlit)."""
    launched = []
    monkeypatch.setattr(os, "execv", lambda path, command: launched.append(command))
    assert main(["app", *args]) == 0
    return launched[0]


def test_app_listens_on_this_machine_only_unless_told(tmp_path, monkeypatch):
    def option(command, name):
        return command[command.index(name) + 1]

    command = launched_app(monkeypatch, "--results", str(tmp_path))
    assert option(command, "--server.address") == "127.0.0.1" and "--server.port" not in command
    command = launched_app(monkeypatch, "--results", str(tmp_path), "--address", "0.0.0.0", "--port", "8600")
    assert option(command, "--server.address") == "0.0.0.0" and option(command, "--server.port") == "8600"
    assert command[-1] == str(tmp_path.resolve())


def test_app_command_refuses_a_missing_results_directory(tmp_path):
    out = run_cli("app", "--results", tmp_path / "nowhere")
    assert out.returncode == 2 and "nowhere" in out.stderr and "snakemake" in out.stderr
