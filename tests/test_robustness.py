"""Corruptions (size, dtype, identity at 0, growing severity, the same bytes at any thread count)
and the robustness score of a model trained on real Fashion-MNIST."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mnist_pipeline.data.preprocess import model_inputs
from mnist_pipeline.errors import ChecksumError, ConfigError, IdxFormatError
from mnist_pipeline.evaluation.corruptions import FAMILIES, SEVERITIES, check_families, corrupt, edge_map, shift
from mnist_pipeline.evaluation.robustness import (
    BATCH_PIXELS,
    check_limit,
    check_severities,
    read_robustness,
    score_robustness,
    score_robustness_files,
    scored_subset,
)
from mnist_pipeline.fileio import save_array, seal, write_json
from mnist_pipeline.nn import TrainSettings
from mnist_pipeline.nn.model import LoadedModel, Model, architecture, load_model

# Families whose draws the seed chooses; the others are the same for every seed.
RANDOM = {"gaussian_noise", "shot_noise", "impulse_noise", "glass_blur", "motion_blur", "translate", "rotate", "shear",
          "patches", "dotted_line", "zigzag"}


def blobs(n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """uint8 (n, *shape): a bright ellipse on a dark noisy background, like a dataset image."""
    rng = np.random.default_rng(seed)
    h, w = shape
    rows, cols = np.mgrid[0:h, 0:w]
    images = rng.integers(0, 30, (n, h, w)).astype(np.float64)
    for i in range(n):
        cy, cx = rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w
        inside = ((rows - cy) / (0.3 * h)) ** 2 + ((cols - cx) / (0.2 * w)) ** 2 < 1
        images[i][inside] = rng.uniform(150, 255)
    return images.astype(np.uint8)


def digest(arrays) -> str:
    sha = hashlib.sha256()
    for array in arrays:
        sha.update(np.ascontiguousarray(array).tobytes())
    return sha.hexdigest()


@pytest.mark.parametrize("shape", [(28, 28), (20, 16), (9, 40), (2, 3)])
def test_every_corruption_keeps_size_dtype_and_range_and_leaves_its_input_alone(shape):
    images = blobs(6, shape)
    before = images.copy()
    for family in FAMILIES:
        for severity in (0, *SEVERITIES):
            out = corrupt(images, family, severity, seed=3)
            assert out.shape == images.shape and out.dtype == np.uint8, (family, severity)
            assert out is not images
        assert np.array_equal(images, before), family
    assert corrupt(images[:0], "rotate", 2).shape == (0, *shape)


def test_the_range_is_used_not_overflowed():
    # Brightening bright pixels and inverting dark ones would wrap around in uint8 arithmetic.
    images = np.full((1, 28, 28), 250, np.uint8)
    assert corrupt(images, "brightness", 3).min() == 255
    dark = np.zeros((1, 28, 28), np.uint8)
    assert corrupt(dark, "stripe", 3)[0, :, 0].tolist() == [255] * 28
    assert corrupt(dark, "contrast", 3).max() == 0
    noisy = corrupt(np.full((1, 28, 28), 128, np.uint8), "gaussian_noise", 3)
    assert noisy.min() == 0 and noisy.max() == 255


def test_severity_zero_and_a_shift_by_zero_are_the_identity():
    images = blobs(5, (28, 28))
    for family in FAMILIES:
        assert np.array_equal(corrupt(images, family, 0, seed=7), images), family
    assert np.array_equal(shift(images, 0, 0), images)
    assert np.array_equal(shift(images, np.zeros(5, int), np.zeros(5, int)), images)


def test_a_shift_moves_whole_pixels_and_fills_with_black():
    images = blobs(3, (12, 10))
    moved = shift(images, 2, -3)
    expected = np.zeros_like(images)
    expected[:, 2:, :-3] = images[:, :-2, 3:]
    assert np.array_equal(moved, expected)
    each = shift(images, np.array([0, 1, -1]), np.array([1, 0, 0]))
    assert np.array_equal(each[0, :, 1:], images[0, :, :-1]) and not each[0, :, 0].any()
    assert np.array_equal(each[1, 1:], images[1, :-1]) and np.array_equal(each[2, :-1], images[2, 1:])
    # Translation by whole pixels copies values exactly: severity 1 moves a 28 x 28 image by (+-2, +-2).
    images = blobs(8, (28, 28))
    translated = corrupt(images, "translate", 1, seed=0)
    candidates = [shift(images, dy, dx) for dy in (-2, 2) for dx in (-2, 2)]
    assert all(any(np.array_equal(translated[i], c[i]) for c in candidates) for i in range(8))


def test_severity_increases_the_change_from_the_clean_image(fashion_test):
    images = fashion_test[0][:400]
    for family in FAMILIES:
        change = [float(np.abs(corrupt(images, family, s, seed=1).astype(np.int16) - images).mean()) for s in (0, *SEVERITIES)]
        assert change[0] == 0 and all(a < b for a, b in zip(change, change[1:], strict=False)), (family, change)


def test_the_same_arguments_give_the_same_bytes_at_any_thread_count():
    images = blobs(40, (28, 28), seed=5)

    def every_corruption() -> str:
        return digest(corrupt(images, family, s, seed=11, stream=2) for family in FAMILIES for s in SEVERITIES)

    with threadpool_limits(1):
        one = every_corruption()
    with threadpool_limits(2):
        two = every_corruption()
    assert one == two == every_corruption()


def test_seed_and_stream_choose_the_draws_of_the_random_families_only():
    images = blobs(20, (28, 28), seed=2)
    for family in FAMILIES:
        base = corrupt(images, family, 2, seed=0, stream=0)
        others = corrupt(images, family, 2, seed=1, stream=0), corrupt(images, family, 2, seed=0, stream=1)
        for other in others:
            assert np.array_equal(base, other) == (family not in RANDOM), family


def test_the_edge_map_outlines_a_square():
    square = np.zeros((1, 28, 28), np.float32)
    square[0, 8:20, 8:20] = 255
    edges = edge_map(square)[0] > 0
    assert set(np.unique(edge_map(square))) <= {0, 255}
    # Thin (non-maximum suppression): each row through the square crosses the outline twice.
    row = edges[14]
    assert 2 <= row.sum() <= 4 and row[6:10].any() and row[18:22].any() and not row[11:17].any()
    assert not edges[:4].any() and not edges[24:].any()


def test_config_values_are_checked_with_the_key_named():
    assert check_families(["rotate", "stripe"]) == ["rotate", "stripe"]
    with pytest.raises(ConfigError, match=r"'robustness.families'.*unknown.*'fog'"):
        check_families(["rotate", "fog"])
    with pytest.raises(ConfigError, match="more than once"):
        check_families(["rotate", "rotate"])
    with pytest.raises(ConfigError, match="no family"):
        check_families([])
    with pytest.raises(ConfigError, match="list of family names"):
        check_families("rotate")
    assert check_severities(2) == [1, 2]
    for bad in (0, 4, True, 2.0, "3"):
        with pytest.raises(ConfigError, match="robustness.severities"):
            check_severities(bad)
    assert check_limit(None) is None and check_limit(500) == 500
    with pytest.raises(ConfigError, match="robustness.limit"):
        check_limit(0)
    with pytest.raises(ValueError, match="severity"):
        corrupt(blobs(1, (28, 28)), "rotate", 4)
    with pytest.raises(ValueError, match="unknown corruption family"):
        corrupt(blobs(1, (28, 28)), "fog", 1)
    with pytest.raises(ValueError, match="uint8"):
        corrupt(np.zeros((2, 28, 28), np.float32), "rotate", 1)


def test_the_subset_is_fixed_by_the_seed():
    rows = scored_subset(1000, 100, seed=4)
    assert len(rows) == 100 and len(set(rows)) == 100 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, scored_subset(1000, 100, seed=4)) and not np.array_equal(rows, scored_subset(1000, 100, seed=5))
    assert np.array_equal(scored_subset(50, 100, seed=4), np.arange(50)) and np.array_equal(scored_subset(50, None, 0), np.arange(50))


# --- the score of a trained model ---------------------------------------------------------


@pytest.fixture
def sealed_inputs(model_path, fashion_test, tmp_path):
    """The model and the test split as the workflow hands them on: each with its digest beside it."""
    model = tmp_path / "model.npz"
    shutil.copyfile(model_path, model)
    seal(model)
    save_array(tmp_path / "test-images.npy", fashion_test[0], seal=True)
    save_array(tmp_path / "test-labels.npy", fashion_test[1], seal=True)
    return model, tmp_path / "test-images.npy", tmp_path / "test-labels.npy"


def test_the_score_of_a_model_trained_on_real_data(model_path, fashion_test, trained_results, sealed_inputs, tmp_path):
    images, labels = fashion_test
    families = ["gaussian_noise", "translate", "contrast", "patches"]
    out = tmp_path / "robustness.json"
    result = score_robustness_files(*sealed_inputs, out, families=families, severities=3, seed=0)
    assert json.loads(out.read_text()) == result == read_robustness(out)
    assert (tmp_path / "robustness.json.sha256").is_file()
    # Clean accuracy is the evaluate stage's: the raw images normalised as the prepared splits are.
    metrics = json.loads((trained_results / "fashion-mnist/baseline/metrics.json").read_text())
    assert result["clean_accuracy"] == metrics["test_accuracy"]
    assert result["families"] == families and result["severities"] == [1, 2, 3] and result["n_images"] == len(labels)
    table = np.array([result["accuracy"][f] for f in families])
    # Each cell by hand: the model's accuracy on the corrupted batches, as the stage cut them.
    loaded = load_model(model_path)
    step = BATCH_PIXELS // (28 * 28)
    hand = []
    for family in families:
        for severity in (1, 2, 3):
            corrupted = np.concatenate([corrupt(images[i : i + step], family, severity, 0, stream=k)
                                        for k, i in enumerate(range(0, len(images), step))])
            hand.append((loaded.model.predict_proba(model_inputs(corrupted, loaded.normalization)).argmax(1) == labels).mean())
    assert table.ravel().tolist() == hand
    assert result["mean_corruption_accuracy"] == pytest.approx(table.mean())
    assert result["relative_drop"] == pytest.approx((result["clean_accuracy"] - table.mean()) / result["clean_accuracy"])
    assert result["worst_family"] == families[int(np.argmin(table.mean(axis=1)))]
    assert result["family_accuracy"] == pytest.approx(dict(zip(families, table.mean(axis=1), strict=True)))
    # A corrupted image is harder than a clean one, on average and at the strongest severity.
    assert result["mean_corruption_accuracy"] < result["clean_accuracy"]
    assert all(result["accuracy"][f][2] < result["clean_accuracy"] for f in families)


def test_the_score_is_the_same_at_any_thread_count_and_on_a_subset(model_path, fashion_test):
    loaded = load_model(model_path)
    images, labels = fashion_test
    with threadpool_limits(1):
        one = score_robustness(loaded, images, labels, ["rotate", "glass_blur", "zigzag"], 2, seed=3, limit=300)
    with threadpool_limits(2):
        two = score_robustness(loaded, images, labels, ["rotate", "glass_blur", "zigzag"], 2, seed=3, limit=300)
    assert json.dumps(one, sort_keys=True) == json.dumps(two, sort_keys=True)
    assert one["n_images"] == 300 and one["n_test"] == len(labels) and one["severities"] == [1, 2]
    rows = scored_subset(len(labels), 300, 3)
    clean = (loaded.model.predict_proba(model_inputs(images[rows], loaded.normalization)).argmax(1) == labels[rows]).mean()
    assert one["clean_accuracy"] == clean


def test_a_custom_image_size_and_bad_inputs():
    settings = TrainSettings(hidden=[8], dropout=0.0, batch_norm=False)
    loaded = LoadedModel(Model(architecture(settings, 20 * 16, 3, image_shape=(20, 16))), {"mean": 0.1, "std": 0.3},
                         ["a", "b", "c"], {"dataset": "custom"})
    loaded.model.initialize("he", np.random.default_rng(0))
    images, labels = blobs(30, (20, 16)), np.arange(30) % 3
    result = score_robustness(loaded, images, labels, ["scale", "edges"], 1)
    assert set(result["accuracy"]) == {"scale", "edges"} and len(result["accuracy"]["scale"]) == 1
    with pytest.raises(ValueError, match=r"\(28, 28\).*\(20, 16\)"):
        score_robustness(loaded, blobs(3, (28, 28)), labels[:3])
    with pytest.raises(ValueError, match="labels"):
        score_robustness(loaded, images, labels[:5])


def test_changed_inputs_are_refused_naming_them(sealed_inputs, tmp_path):
    model, images, labels = sealed_inputs
    out = tmp_path / "robustness.json"
    array = np.load(labels)
    array[7] = 12  # no such class
    save_array(labels, array, seal=True)
    with pytest.raises(IdxFormatError, match=f"{labels}: corrupted: label 12 at row 7"):
        score_robustness_files(model, images, labels, out, ["rotate"], 1)
    data = bytearray(images.read_bytes())
    data[-5] ^= 0xFF
    images.write_bytes(bytes(data))  # digest kept: the bytes are no longer the ones written
    with pytest.raises(ChecksumError, match=f"{images}: corrupted"):
        score_robustness_files(model, images, labels, out, ["rotate"], 1)
    assert not out.exists()


def test_a_file_that_is_not_a_robustness_result_is_refused_naming_it(tmp_path):
    good = {"format": "mnist-pipeline-robustness", "format_version": 1, "families": ["rotate"], "severities": [1, 2],
            "accuracy": {"rotate": [0.5, 0.25]}, "clean_accuracy": 0.9, "mean_corruption_accuracy": 0.375,
            "worst_family": "rotate"}
    path = tmp_path / "robustness.json"
    write_json(path, good, seal=True)
    assert read_robustness(path) == good
    for change in ({"format": "other"}, {"accuracy": {"rotate": [0.5]}}, {"accuracy": {"rotate": [0.5, 1.5]}},
                   {"families": ["rotate", "scale"]}, {"clean_accuracy": None}, {"worst_family": "scale"},
                   {"format_version": 2}):
        write_json(path, {**good, **change}, seal=True)
        with pytest.raises(ValueError, match=f"{path}: not a robustness result"):
            read_robustness(path)
    path.write_text(json.dumps(good).replace("0.9", "0.8"))  # changed after it was sealed
    with pytest.raises(ChecksumError, match=f"{path}: corrupted"):
        read_robustness(path)
