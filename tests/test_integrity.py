"""Sealed files (issue 21): a digest beside each artifact a stage hands on, checked when it is read."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

from damage import flip_bytes, truncate
from mnist_pipeline.errors import ChecksumError, IdxFormatError
from mnist_pipeline.fileio import atomic_path, copy_sealed, load_array, read_json, save_array, seal, write_json
from mnist_pipeline.integrity import check_class_indices, digest_path, file_digest, verified

CHANGED = r"corrupted: its bytes changed since it was written"


def rebuild(path) -> str:
    """The rebuild command the refusal must print, as a pattern."""
    return re.escape(f"rm {path} && snakemake --cores 4")


def test_a_sealed_file_has_its_sha256sum_line_beside_it(tmp_path):
    write_json(tmp_path / "a.json", {"x": 1}, seal=True)
    assert digest_path(tmp_path / "a.json").read_text() == f"{file_digest(tmp_path / 'a.json')}  a.json\n"
    assert verified(tmp_path / "a.json") == tmp_path / "a.json"
    if shutil.which("sha256sum"):
        done = subprocess.run(["sha256sum", "-c", "a.json.sha256"], cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0 and "a.json: OK" in done.stdout


def test_only_what_is_sealed_gets_a_digest(tmp_path):
    write_json(tmp_path / "state.json", {"x": 1})
    save_array(tmp_path / "a.npy", np.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "state.json"]


@pytest.mark.parametrize("damage", [lambda p: flip_bytes(p, 2), lambda p: flip_bytes(p, -3, 1), truncate])
def test_a_flipped_or_cut_file_is_refused_naming_it_and_how_to_rebuild_it(tmp_path, damage):
    path = tmp_path / "history.json"
    write_json(path, {"epochs": [{"loss": 0.5}] * 20}, seal=True)
    damage(path)
    with pytest.raises(ChecksumError, match=rf"^{path}: {CHANGED} .*{rebuild(path)}"):
        read_json(path, verify=True)


def test_a_file_without_its_digest_or_with_a_damaged_one_is_refused(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"x": 1})
    with pytest.raises(ChecksumError, match=rf"{path}: cannot be checked: it has no digest file m.json.sha256 .*{rebuild(path)}"):
        verified(path)
    digest_path(path).write_text("not a digest\n")
    with pytest.raises(ChecksumError, match=rf"{path}: corrupted: its digest file m.json.sha256 is not one SHA-256 line"):
        verified(path)
    with pytest.raises(FileNotFoundError, match=f"{tmp_path / 'gone.json'}: no such file"):
        verified(tmp_path / "gone.json")


def test_rewriting_a_sealed_file_reseals_it_and_a_failed_write_keeps_both_old(tmp_path):
    path = tmp_path / "a.json"
    write_json(path, {"x": 1}, seal=True)
    write_json(path, {"x": 2}, seal=True)
    assert read_json(path, verify=True) == {"x": 2}
    before = digest_path(path).read_bytes()
    with pytest.raises(RuntimeError), atomic_path(path, seal=True) as tmp:
        tmp.write_text("half")
        raise RuntimeError("disk full")
    assert read_json(path, verify=True) == {"x": 2} and digest_path(path).read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "a.json.sha256"]


def test_seal_records_a_file_written_by_other_code(tmp_path):
    path = tmp_path / "model.npz"
    path.write_bytes(b"PK\x03\x04 a model")
    seal(path)
    assert verified(path) == path
    flip_bytes(path, 5, 1)
    with pytest.raises(ChecksumError, match=CHANGED):
        verified(path)


def test_a_sealed_copy_is_checked_first_and_never_launders_a_corrupted_file(tmp_path):
    source, copy = tmp_path / "run/metrics.json", tmp_path / "baseline/metrics.json"
    write_json(source, {"test_accuracy": 0.9}, seal=True)
    copy_sealed(source, copy)
    assert read_json(copy, verify=True) == {"test_accuracy": 0.9}
    flip_bytes(source, 4, 2)
    with pytest.raises(ChecksumError, match=rf"{source}: {CHANGED}"):
        copy_sealed(source, tmp_path / "other/metrics.json")
    assert not (tmp_path / "other").exists()


def test_arrays_are_verified_before_they_are_mapped(tmp_path):
    path = tmp_path / "train-images.npy"
    save_array(path, np.arange(1000, dtype=np.uint8).reshape(10, 10, 10), seal=True)
    assert load_array(path).shape == (10, 10, 10)
    flip_bytes(path, 500)
    with pytest.raises(ChecksumError, match=rf"{path}: {CHANGED}"):
        load_array(path)
    # A bad header that was sealed all the same (a writer's mistake): refused, naming the file.
    path.write_bytes(b"\x93NUMPY\x01\x00garbage")
    seal(path)
    with pytest.raises(ChecksumError, match=rf"{path}: corrupted: not a readable .npy array"):
        load_array(path)


def test_labels_outside_the_classes_are_refused_naming_the_file():
    check_class_indices(np.array([0, 9, 3]), 10, "labels.npy", IdxFormatError)
    with pytest.raises(IdxFormatError, match=r"labels.npy: corrupted: label -248 at row 1 is outside the class range \[0, 10\) \(2 such"):
        check_class_indices(np.array([0, -248, 3, 10]), 10, "labels.npy", IdxFormatError)
    with pytest.raises(IdxFormatError, match=r"labels.npy: corrupted: label -1 at row 0 is negative"):
        check_class_indices(np.array([-1]), None, "labels.npy", IdxFormatError)
    with pytest.raises(IdxFormatError, match=r"labels.npy: labels are float64, expected integer class indices"):
        check_class_indices(np.array([0.5]), 10, "labels.npy", IdxFormatError)
