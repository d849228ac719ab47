"""What given settings, seed and data train: the same bytes on one machine, the same numbers anywhere.

Two guards, each holding only where it can hold on every machine:

- On one machine, the weights are the same bytes from run to run and whatever the thread count
  (1, 2 or 3 workers): the trainer fixes its blocks of work by the array sizes, and BLAS runs one
  thread per call. Checked by SHA-256 over every parameter and buffer of the saved model.
- Against recorded values, to a tolerance: a refactoring of the network or of how settings are
  made must not change what is trained. Another BLAS kernel (OpenBLAS picks one per CPU: Haswell
  on AVX2, SkylakeX on AVX-512, ...) sums the same products in another order, so its weights
  differ in the last bits, and bytes recorded on one kernel fail on the next. Measured across
  the Haswell, SkylakeX and Sandybridge kernels, the per-epoch training loss agreed to 1e-8 and
  the norm of each array to 3e-7 (relative), while changing the seed moves every one of them
  by 10-100%. RTOL sits between, far from both.

One kind of array is left out of the second guard: the bias of a dense or conv layer that feeds
a batch norm, and that batch norm's running mean. The batch norm subtracts the batch mean, so
the loss does not depend on that bias at all; its gradient is rounding noise, which differs
from kernel to kernel, and Adam scales any gradient to a step of about the learning rate. The
bias thereby walks at random, differently on each kernel (measured: relative differences of
0.6-4.5 between kernels), and the running mean follows it. Training never depends on it;
inference does through bias minus running mean, which is why no validation loss of a
batch-normed case is pinned here either (it moved by up to 1e-2 between kernels).

The second guard's numbers were recorded with `python tests/test_nn_digest.py`, which prints
them; record them again only for a change that means to change what is trained, and say so in
its commit. Every setting not named below is at its default.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import numpy as np
import pytest

from helpers import quadrant_images
from mnist_pipeline.nn import TrainSettings, fit
from mnist_pipeline.nn.model import load_model, save_model

#: Relative tolerance of the recorded numbers (see the module docstring for what it sits between).
RTOL = 1e-5


@dataclass(frozen=True)
class Recorded:
    """What one case trained, as recorded: the numbers every BLAS kernel gives alike."""

    epochs_run: int
    best_epoch: int
    #: the training loss of each epoch
    train_loss: list[float]
    #: the L2 norm of each array but those left out (see the module docstring), by name
    norms: dict[str, float]


CASES = {
    # The defaults: a batch-normed MLP with dropout, AdamW, cosine schedule, label smoothing.
    # (Recorded again when ReLU MLPs began to train by columns, nn/columns.py: other dropout
    # masks, and batch-norm sums per feature; as "adam-early-stopping".)
    "defaults": (
        {"hidden": [12, 8], "epochs": 2, "batch_size": 32},
        Recorded(epochs_run=2, best_epoch=2, train_loss=[1.844917, 1.7473772],
                 norms={"layer0.W": 4.8458705, "layer1.gamma": 3.4642143, "layer1.beta": 0.018426314, "layer1.running_var": 2.6868148,
                        "layer4.W": 3.9340281, "layer5.gamma": 2.7963736, "layer5.beta": 0.029127749, "layer5.running_var": 3.7202432,
                        "layer8.W": 2.616848, "layer8.b": 0.02322788}),
    ),
    "cnn-momentum-step": (
        {"model": "cnn", "conv_channels": [3, 4], "hidden": [6], "epochs": 3, "batch_size": 40, "optimizer": "momentum",
         "learning_rate": 0.02, "schedule": "step", "step_epochs": 1, "step_gamma": 0.5, "warmup_epochs": 1,
         "grad_clip": 1.0, "seed": 3},
        Recorded(epochs_run=3, best_epoch=3, train_loss=[1.6981085, 1.5259114, 1.3248999],
                 norms={"layer1.W": 2.251992, "layer3.gamma": 1.7324286, "layer3.beta": 0.033899739, "layer3.running_var": 0.88167197,
                        "layer5.W": 2.7291658, "layer7.gamma": 2.0004978, "layer7.beta": 0.029318273, "layer7.running_var": 1.4554417,
                        "layer10.W": 3.4447794, "layer11.gamma": 2.2994378, "layer11.beta": 0.16588572,
                        "layer11.running_var": 1.7904234, "layer14.W": 2.4571836, "layer14.b": 0.19259214}),
    ),
    "glorot-tanh-nesterov": (
        {"hidden": [10], "epochs": 2, "batch_size": 25, "optimizer": "nesterov", "activation": "tanh", "init": "glorot",
         "batch_norm": False, "dropout": 0.0, "schedule": "constant", "weight_decay": 0.001, "label_smoothing": 0.0},
        Recorded(epochs_run=2, best_epoch=2, train_loss=[1.7750263, 1.702722],
                 norms={"layer0.W": 4.2989402, "layer0.b": 0.013787845, "layer2.W": 2.5888534, "layer2.b": 0.014152637}),
    ),
    # Without batch norm, so that the validation loss, which early stopping compares, is the
    # same number on every kernel: stops after epoch 4 and restores the weights of epoch 3.
    "adam-early-stopping": (
        {"hidden": [16], "epochs": 6, "batch_size": 64, "optimizer": "adam", "betas": [0.8, 0.99], "early_stopping": 1,
         "activation": "leaky_relu", "learning_rate": 0.1, "batch_norm": False, "seed": 7},
        Recorded(epochs_run=4, best_epoch=3, train_loss=[1.3031598, 0.84719532, 0.74199943, 0.66495004],
                 norms={"layer0.W": 8.5736876, "layer0.b": 1.0040995, "layer3.W": 2.110074, "layer3.b": 0.46682915}),
    ),
}


def training_data():
    x, y = quadrant_images(200, seed=0, noise=0.5, spot=1.5)
    xv, yv = quadrant_images(60, seed=1, noise=0.5, spot=1.5)
    return x, y, xv, yv


def train_and_reload(tmp_path, overrides: dict, threads: int):
    """(fit's result, the model as its saved file gives it back) for `overrides` on `threads` workers."""
    settings = TrainSettings(**overrides)
    result = fit(settings, *training_data(), n_classes=4, threads=threads)
    path = tmp_path / f"model-{threads}.npz"
    save_model(path, result.model, normalization={"mean": 0.5, "std": 0.25}, classes=list("abcd"),
               metadata={"settings": settings.as_dict(), "epochs_run": result.epochs_run, "best_epoch": result.best_epoch})
    loaded = load_model(path)
    # The header's settings keep their spelling (1 vs 1.0), which the run id is made from.
    assert json.dumps(loaded.metadata["settings"], sort_keys=True) == json.dumps(settings.as_dict(), sort_keys=True)
    return result, loaded


def digest(loaded) -> str:
    """SHA-256 of every parameter and buffer of a loaded model, by name and bytes."""
    sha = hashlib.sha256()
    for name, array in loaded.model.named_arrays().items():
        sha.update(name.encode())
        sha.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
    return sha.hexdigest()


def kernel_dependent(architecture: dict) -> set[str]:
    """The arrays whose values are rounding noise (see the module docstring): the bias of each dense
    or conv layer that feeds a batch norm (past a max pool), and that batch norm's running mean."""
    layers = architecture["layers"]
    left_out = set()
    for i, spec in enumerate(layers):
        if spec["type"] in ("dense", "conv2d"):
            after = next((j for j in range(i + 1, len(layers)) if layers[j]["type"] != "max_pool"), None)
            if after is not None and layers[after]["type"] == "batch_norm":
                left_out |= {f"layer{i}.b", f"layer{after}.running_mean"}
    return left_out


def recorded_numbers(result, loaded) -> Recorded:
    left_out = kernel_dependent(loaded.model.architecture)
    return Recorded(
        epochs_run=result.epochs_run, best_epoch=result.best_epoch,
        train_loss=[epoch["train_loss"] for epoch in result.history],
        norms={name: float(np.linalg.norm(array)) for name, array in loaded.model.named_arrays().items() if name not in left_out},
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_same_bytes_whatever_the_thread_count_and_run_after_run(tmp_path, case):
    overrides, _ = CASES[case]
    first = digest(train_and_reload(tmp_path, overrides, threads=1)[1])
    again = digest(train_and_reload(tmp_path, overrides, threads=1)[1])
    assert again == first, "two runs on one machine trained different bytes"
    for threads in (2, 3):
        assert digest(train_and_reload(tmp_path, overrides, threads)[1]) == first, f"{threads} threads trained other bytes than 1"


@pytest.mark.parametrize("case", sorted(CASES))
def test_settings_and_seed_train_the_recorded_model(tmp_path, case):
    overrides, expected = CASES[case]
    got = recorded_numbers(*train_and_reload(tmp_path, overrides, threads=1))
    assert (got.epochs_run, got.best_epoch) == (expected.epochs_run, expected.best_epoch)
    np.testing.assert_allclose(got.train_loss, expected.train_loss, rtol=RTOL, err_msg="training loss per epoch")
    assert sorted(got.norms) == sorted(expected.norms)
    for name, norm in expected.norms.items():
        np.testing.assert_allclose(got.norms[name], norm, rtol=RTOL, err_msg=f"the norm of {name}")


def test_the_arrays_left_out_are_the_biases_a_batch_norm_cancels():
    from mnist_pipeline.nn.model import architecture

    cnn = architecture(TrainSettings(model="cnn", conv_channels=[3, 4], hidden=[6]), 64, 4)
    assert kernel_dependent(cnn) == {"layer1.b", "layer3.running_mean", "layer5.b", "layer7.running_mean", "layer10.b",
                                     "layer11.running_mean"}
    assert kernel_dependent(architecture(TrainSettings(hidden=[6], batch_norm=False), 64, 4)) == set()


if __name__ == "__main__":
    import tempfile
    from pathlib import Path

    def literal(value) -> str:
        """`value` as Python source, floats to 8 significant digits (far finer than RTOL)."""
        if isinstance(value, float):
            return f"{value:.8g}"
        if isinstance(value, list):
            return "[" + ", ".join(map(literal, value)) + "]"
        if isinstance(value, dict):
            return "{" + ", ".join(f"{key!r}: {literal(item)}" for key, item in value.items()) + "}"
        return repr(value)

    with tempfile.TemporaryDirectory() as directory:
        for name, (overrides, _) in CASES.items():
            numbers = recorded_numbers(*train_and_reload(Path(directory), overrides, threads=1))
            print(f"{name!r}: Recorded(" + ", ".join(f"{key}={literal(value)}" for key, value in vars(numbers).items()) + ")")
