"""The model bytes that given settings, seed and data produce, pinned by their SHA-256.

A refactoring of the network or of how settings are made must not change what is trained:
these digests were recorded before the training settings became one object (from the
workflow schema's defaults, as the workflow filled them then), and every setting not named
below is at its default. The file also holds the settings, as the train job writes them, so
a change in how they are spelled (1 vs 1.0) is caught as well.
"""

import hashlib

import pytest

from conftest import quadrant_images
from mnist_pipeline.nn import TrainSettings, fit
from mnist_pipeline.nn.model import save_model

CASES = {
    # The defaults: a batch-normed MLP with dropout, AdamW, cosine schedule, label smoothing.
    "defaults": ({"hidden": [12, 8], "epochs": 2, "batch_size": 32}, "9057b639858afc425ea3d4263242ebdd36da6c44acc244d8fa18d56f4c57c9e9"),
    "cnn-momentum-step": (
        {"model": "cnn", "conv_channels": [3, 4], "hidden": [6], "epochs": 3, "batch_size": 40, "optimizer": "momentum",
         "learning_rate": 0.02, "schedule": "step", "step_epochs": 1, "step_gamma": 0.5, "warmup_epochs": 1,
         "grad_clip": 1.0, "seed": 3},
        "213850f410893ed9497a4f13feaa265bb325be6abcd06c72d6d52e6de70ac338",
    ),
    "glorot-tanh-nesterov": (
        {"hidden": [10], "epochs": 2, "batch_size": 25, "optimizer": "nesterov", "activation": "tanh", "init": "glorot",
         "batch_norm": False, "dropout": 0.0, "schedule": "constant", "weight_decay": 0.001, "label_smoothing": 0.0},
        "432c6a7adb74c5a873d2036e80a432a73a218781aec1f3e557d4f37a718013c9",
    ),
    # Stops after epoch 4 and restores the weights of epoch 3.
    "adam-early-stopping": (
        {"hidden": [16], "epochs": 6, "batch_size": 64, "optimizer": "adam", "betas": [0.8, 0.99], "early_stopping": 1,
         "activation": "leaky_relu", "learning_rate": 0.1, "seed": 7},
        "40f07e91e6e903e8a5b41f5bb3ff0f06bbcec457fe487b19880207aa627f4921",
    ),
}


def model_digest(tmp_path, overrides: dict) -> str:
    x, y = quadrant_images(200, seed=0, noise=0.5, spot=1.5)
    xv, yv = quadrant_images(60, seed=1, noise=0.5, spot=1.5)
    settings = TrainSettings(**overrides)
    # One BLAS thread, as the train job runs: another count may sum products in another order.
    result = fit(settings, x, y, xv, yv, n_classes=4, threads=1)
    path = tmp_path / "model.npz"
    save_model(path, result.model, normalization={"mean": 0.5, "std": 0.25}, classes=list("abcd"),
               metadata={"settings": settings.as_dict(), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch})
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_settings_and_seed_give_the_pinned_model_bytes(tmp_path, case):
    overrides, digest = CASES[case]
    assert model_digest(tmp_path, overrides) == digest
