"""The weights that given settings, seed and data produce, pinned by their SHA-256.

A refactoring of the network or of how settings are made must not change what is trained:
these digests were recorded before the training settings became one object (from the
workflow schema's defaults, as the workflow filled them then), and every setting not named
below is at its default. Three were recorded again when dropout began to draw its mask in
fixed blocks, each from its own generator, so that worker threads draw side by side (the
tanh case, without dropout, kept its digest through that change). The same three again when
dropout began to draw 16-bit integers instead of floats, and Adam to keep its moments divided
by (1 - beta), both to save passes over memory (the tanh case, with Nesterov and no dropout,
kept its digest). The CNN case was recorded again when a convolution that pools began to
order its patch rows by pooling-window corner and to add its bias after the pool: the same
sums, taken in another order (the three MLP cases kept theirs). The digest covers every parameter array, by name and bytes, and not
the model file's JSON header, which gains fields as the format grows (the image size, the
thread count); the header's settings are checked for their spelling (1 vs 1.0) instead.
"""

import hashlib
import json

import numpy as np
import pytest

from helpers import quadrant_images
from mnist_pipeline.nn import TrainSettings, fit
from mnist_pipeline.nn.model import load_model, save_model

CASES = {
    # The defaults: a batch-normed MLP with dropout, AdamW, cosine schedule, label smoothing.
    "defaults": ({"hidden": [12, 8], "epochs": 2, "batch_size": 32}, "787767cecd1f316c01602ff51a623737c4f96835c79f2a7a6227054a5504f836"),
    "cnn-momentum-step": (
        {"model": "cnn", "conv_channels": [3, 4], "hidden": [6], "epochs": 3, "batch_size": 40, "optimizer": "momentum",
         "learning_rate": 0.02, "schedule": "step", "step_epochs": 1, "step_gamma": 0.5, "warmup_epochs": 1,
         "grad_clip": 1.0, "seed": 3},
        "80b9b858cbabe750c9775fdf367ab9e94d7ab4b7fae3920307622ad5b75aa454",
    ),
    "glorot-tanh-nesterov": (
        {"hidden": [10], "epochs": 2, "batch_size": 25, "optimizer": "nesterov", "activation": "tanh", "init": "glorot",
         "batch_norm": False, "dropout": 0.0, "schedule": "constant", "weight_decay": 0.001, "label_smoothing": 0.0},
        "4db7eeb6f083471eb8240db7d51165ee7afa0d83a0c9f5dca7ceb89614515509",
    ),
    # Stops after epoch 4 and restores the weights of epoch 3.
    "adam-early-stopping": (
        {"hidden": [16], "epochs": 6, "batch_size": 64, "optimizer": "adam", "betas": [0.8, 0.99], "early_stopping": 1,
         "activation": "leaky_relu", "learning_rate": 0.1, "seed": 7},
        "a3e2ca1b27c4eaa71a810e5a5cc0f99d363e0872de629954229949cd8ff5c18d",
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
    loaded = load_model(path)
    assert json.dumps(loaded.metadata["settings"], sort_keys=True) == json.dumps(settings.as_dict(), sort_keys=True)
    digest = hashlib.sha256()
    for name, array in loaded.model.named_arrays().items():
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return digest.hexdigest()


@pytest.mark.parametrize("case", sorted(CASES))
def test_settings_and_seed_give_the_pinned_model_bytes(tmp_path, case):
    overrides, digest = CASES[case]
    assert model_digest(tmp_path, overrides) == digest
