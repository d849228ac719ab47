import tracemalloc

import numpy as np
import pytest

from mnist_pipeline.data import splits, tables
from mnist_pipeline.data.parsed import ParsedDataset
from mnist_pipeline.data.splits import fit_normalization, prepare_splits, stratified_split, validation_counts
from mnist_pipeline.data.tables import read_split
from mnist_pipeline.errors import ConfigError
from mnist_pipeline.integrity import digest_path, file_digest


def test_stratified_split_keeps_class_proportions_and_is_seeded():
    labels = np.repeat(np.arange(10), [100, 50, 80, 100, 100, 100, 100, 100, 100, 30])
    train, val = stratified_split(labels, 0.1, seed=3)
    assert len(np.intersect1d(train, val)) == 0 and len(train) + len(val) == len(labels)
    counts = np.bincount(labels[val], minlength=10)
    assert counts.tolist() == [10, 5, 8, 10, 10, 10, 10, 10, 10, 3]
    again_train, again_val = stratified_split(labels, 0.1, seed=3)
    assert np.array_equal(val, again_val) and np.array_equal(train, again_train)
    assert not np.array_equal(val, stratified_split(labels, 0.1, seed=4)[1])


def test_split_that_would_empty_a_class_is_refused():
    with pytest.raises(ConfigError, match="prepare.val_fraction"):
        stratified_split(np.array([0, 0, 1]), 0.6, seed=0)


def test_normalization_matches_numpy_and_maps_train_to_zero_mean_unit_std():
    images = np.random.default_rng(0).integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    norm = fit_normalization(images)
    scaled = images.astype(np.float64) / 255
    assert norm.mean == pytest.approx(scaled.mean(), rel=1e-6) and norm.std == pytest.approx(scaled.std(), rel=1e-6)
    x = norm.apply(images)
    assert x.dtype == np.float32 and x.shape == (200, 784) and x.flags.c_contiguous
    assert abs(float(x.mean())) < 1e-4 and float(x.std()) == pytest.approx(1.0, abs=1e-4)


def test_prepare_uses_training_rows_only_for_statistics(tmp_path):
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), 20)
    train_images = rng.integers(0, 100, size=(200, 28, 28), dtype=np.uint8)
    # Test images are much brighter: if they leaked into the statistics the mean would move.
    test_images = np.full((30, 28, 28), 255, np.uint8)
    parsed = ParsedDataset(train_images, labels, test_images, labels[:30], {"dataset": "t", "classes": [str(i) for i in range(10)], "files": {}})
    outputs = {name: tmp_path / f"{name}.parquet" for name in ("train", "val", "test")}
    norm = prepare_splits(parsed, val_fraction=0.25, seed=0, outputs=outputs)
    train, val, test = (read_split(outputs[name]) for name in ("train", "val", "test"))
    assert len(train) == 150 and len(val) == 50 and len(test) == 30
    assert norm.mean == pytest.approx(train_images[train.ids].mean() / 255, rel=1e-5)
    assert np.array_equal(np.sort(np.concatenate([train.ids, val.ids])), np.arange(200))
    assert np.array_equal(train.pixels, norm.apply(train_images[train.ids]))
    assert train.metadata["split"] == {"val_fraction": 0.25, "seed": 0}


def test_validation_counts_name_the_smallest_class_and_the_bound():
    assert validation_counts({"a": 100, "b": 30, "absent": 0}, 0.1) == {"a": 10, "b": 3}
    with pytest.raises(ConfigError, match=r"prepare.val_fraction': 0.01 gives class 'b' \(30 training images, the fewest\) no validation image; val_fraction must exceed 0.5/30"):
        validation_counts({"a": 100, "b": 30}, 0.01)
    with pytest.raises(ConfigError, match=r"leaves no training image of class 'b' \(3 images, the fewest\)"):
        validation_counts({"a": 100, "b": 3}, 0.9)


def test_prepare_refuses_a_fraction_that_gives_a_class_no_validation_image(tmp_path):
    # It used to end in numpy's "cannot reshape array of size 0" while writing the val split.
    labels = np.tile(np.arange(2), 20)
    images = np.random.default_rng(0).integers(0, 255, size=(40, 20, 20), dtype=np.uint8)
    parsed = ParsedDataset(images, labels, images[:4], labels[:4], {"dataset": "t", "classes": ["0", "5"], "files": {}, "image_shape": [20, 20]})
    outputs = {name: tmp_path / f"{name}.parquet" for name in ("train", "val", "test")}
    with pytest.raises(ConfigError, match="prepare.val_fraction': 0.01 gives class '0' .*no validation image"):
        prepare_splits(parsed, val_fraction=0.01, seed=0, outputs=outputs)
    assert not any(path.exists() for path in outputs.values())
    prepare_splits(parsed, val_fraction=0.1, seed=0, outputs=outputs)
    val = read_split(outputs["val"])
    assert val.image_shape == (20, 20) and val.pixels.shape == (4, 400)
def test_prepare_holds_one_row_group_of_pixels_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", 100)
    monkeypatch.setattr(splits, "ROW_GROUP_ROWS", 100)
    rng = np.random.default_rng(0)
    labels = np.tile(np.arange(10), 600)
    images = rng.integers(0, 256, size=(len(labels), 28, 28), dtype=np.uint8)
    parsed = ParsedDataset(images, labels, images[:500], labels[:500], {"dataset": "t", "classes": [str(i) for i in range(10)], "files": {}})
    outputs = {name: tmp_path / f"{name}.parquet" for name in ("train", "val", "test")}
    tracemalloc.start()
    try:
        norm = prepare_splits(parsed, val_fraction=0.1, seed=0, outputs=outputs)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    train = read_split(outputs["train"])
    # NumPy reports its buffers to tracemalloc: the whole train split as float32 (or as
    # bincount's intp, twice that) would show here; a 100-row group is 0.3 MB.
    assert peak < train.pixels.nbytes / 4, f"prepare held {peak} bytes at once for a {train.pixels.nbytes}-byte split"
    assert np.array_equal(train.pixels, norm.apply(images[train.ids]))
    assert norm == fit_normalization(images[train.ids])


def test_every_split_prepare_writes_is_sealed_for_the_stages_that_read_it(tmp_path):
    labels = np.tile(np.arange(10), 20)
    images = np.random.default_rng(0).integers(0, 256, size=(200, 28, 28), dtype=np.uint8)
    parsed = ParsedDataset(images, labels, images[:30], labels[:30], {"dataset": "t", "classes": [str(i) for i in range(10)], "files": {}})
    outputs = {name: tmp_path / f"{name}.parquet" for name in ("train", "val", "test")}
    prepare_splits(parsed, val_fraction=0.25, seed=0, outputs=outputs)
    for name, path in outputs.items():
        assert digest_path(path).read_text() == f"{file_digest(path)}  {name}.parquet\n"
