"""Augmentation: each transform checked on a known image, determinism, and that off means off."""

import numpy as np
import pytest

from mnist_pipeline.nn.augment import Augmentation, augment_batch, erase_rectangles, shift_images

FILL = -0.5


def one_pixel_image(height=6, width=5, at=(2, 1), value=9.0):
    image = np.full((1, height, width), FILL, np.float32)
    image[0, at[0], at[1]] = value
    return image


@pytest.mark.parametrize("down, right", [(1, 0), (0, 2), (-2, 1), (2, -1), (0, 0)])
def test_a_shift_moves_a_pixel_by_its_offset_and_fills_what_it_uncovers(down, right):
    image = one_pixel_image()
    shift_images(image, np.array([[down, right]]), FILL)
    expected = one_pixel_image(at=(2 + down, 1 + right))
    np.testing.assert_array_equal(image, expected)


def test_a_shift_past_the_edge_loses_the_pixel_and_leaves_only_fill():
    image = one_pixel_image(at=(0, 0))
    shift_images(image, np.array([[-1, 0]]), FILL)
    assert np.all(image == FILL)


def test_each_image_of_a_batch_gets_its_own_offset():
    batch = np.concatenate([one_pixel_image(), one_pixel_image()])
    shift_images(batch, np.array([[1, 1], [-1, -1]]), FILL)
    assert batch[0, 3, 2] == 9.0 and batch[1, 1, 0] == 9.0
    assert np.count_nonzero(batch != FILL) == 2


def test_a_flip_mirrors_left_and_right():
    rows = np.arange(2 * 12, dtype=np.float32).reshape(2, 12)
    original = rows.copy().reshape(2, 3, 4)
    # Enough images that both outcomes of the coin occur; compare each to its own mirror.
    rows = np.tile(rows, (20, 1))
    originals = np.tile(original, (20, 1, 1))
    augment_batch(rows, (3, 4), Augmentation(flip=True), np.random.default_rng(0), FILL)
    images = rows.reshape(-1, 3, 4)
    mirrored = np.array([np.array_equal(img, orig[:, ::-1]) for img, orig in zip(images, originals, strict=True)])
    unchanged = np.array([np.array_equal(img, orig) for img, orig in zip(images, originals, strict=True)])
    assert np.all(mirrored | unchanged)
    assert 0 < mirrored.sum() < len(images)


def test_erasing_paints_one_rectangle_inside_the_image_with_fill():
    images = np.ones((200, 10, 8), np.float32)
    erase_rectangles(images, 1.0, np.random.default_rng(1), FILL)
    for image in images:
        rows, cols = np.nonzero(image == FILL)
        assert len(rows) > 0
        box = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert np.all(box == FILL), "the erased pixels form one full rectangle"
        assert 0.0 < len(rows) / image.size <= 0.5


def test_erasing_with_probability_zero_changes_nothing():
    images = np.ones((50, 10, 8), np.float32)
    erase_rectangles(images, 0.0, np.random.default_rng(1), FILL)
    assert np.all(images == 1)


def test_no_augmentation_is_the_identity_and_draws_nothing():
    rows = np.random.default_rng(0).standard_normal((8, 20)).astype(np.float32)
    before = rows.copy()
    rng = np.random.default_rng(5)
    augment_batch(rows, (4, 5), Augmentation(), rng, FILL)
    np.testing.assert_array_equal(rows, before)
    assert rng.random() == np.random.default_rng(5).random()


def test_the_same_seed_gives_the_same_batch():
    data = np.random.default_rng(0).standard_normal((64, 49)).astype(np.float32)
    settings = Augmentation(shift=2, flip=True, erase=0.5)
    outs = []
    for _ in range(2):
        rows = data.copy()
        augment_batch(rows, (7, 7), settings, np.random.default_rng(3), FILL)
        outs.append(rows)
    np.testing.assert_array_equal(*outs)
    assert not np.array_equal(outs[0], data)


def test_shifts_keep_every_image_a_translate_of_its_original():
    rng = np.random.default_rng(2)
    data = rng.standard_normal((32, 9 * 9)).astype(np.float32)
    rows = data.copy()
    augment_batch(rows, (9, 9), Augmentation(shift=2), np.random.default_rng(4), FILL)
    for got, original in zip(rows.reshape(-1, 9, 9), data.reshape(-1, 9, 9), strict=True):
        matches = [
            (dy, dx)
            for dy in range(-2, 3)
            for dx in range(-2, 3)
            if np.array_equal(got, _translated(original, dy, dx))
        ]
        assert matches, "every augmented image is its original moved by at most 2 pixels"


def _translated(image, down, right):
    out = np.full_like(image, FILL)
    height, width = image.shape
    out[max(down, 0) : height + min(down, 0), max(right, 0) : width + min(right, 0)] = image[
        max(-down, 0) : height + min(-down, 0), max(-right, 0) : width + min(-right, 0)
    ]
    return out


# --- in the trainer -------------------------------------------------------------------------

def _train(threads=1, **augment):
    from helpers import quadrant_images
    from mnist_pipeline.nn import TrainSettings, fit

    x, y = quadrant_images(160, seed=0)
    settings = TrainSettings(hidden=[12], epochs=2, batch_size=32, **augment)
    return fit(settings, x, y, x[:40], y[:40], n_classes=4, image_shape=(8, 8), threads=threads)


def test_training_with_augmentation_is_deterministic_and_the_same_at_any_thread_count():
    augment = {"augment_shift": 1, "augment_flip": True, "augment_erase": 0.3}
    first, again, two_threads = _train(**augment), _train(**augment), _train(threads=2, **augment)
    assert first.model.flat_params.tobytes() == again.model.flat_params.tobytes()
    assert first.model.flat_params.tobytes() == two_threads.model.flat_params.tobytes()


def test_augmentation_changes_what_is_trained():
    plain, shifted = _train(), _train(augment_shift=1)
    assert plain.model.flat_params.tobytes() != shifted.model.flat_params.tobytes()
    assert plain.history[0]["train_loss"] != shifted.history[0]["train_loss"]
