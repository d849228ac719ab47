"""fit(): learning, early stopping, the divergence guard, determinism and threads; the step made
as the gradients come (Model.backward with the optimiser) against the plain order."""

import logging

import numpy as np
import pytest
from threadpoolctl import threadpool_info

from helpers import quadrant_images
from mnist_pipeline.errors import TrainingDivergedError
from mnist_pipeline.nn import train as train_module
from mnist_pipeline.nn.layers import Dense
from mnist_pipeline.nn.losses import softmax_cross_entropy
from mnist_pipeline.nn.model import Model, architecture, save_model
from mnist_pipeline.nn.optim import make_optimizer
from mnist_pipeline.nn.parallel import Workers
from mnist_pipeline.nn.settings import TrainSettings
from mnist_pipeline.nn.train import fit


def blobs(n, n_classes=4, n_features=12, seed=0, spread=1.0):
    """Gaussian blobs around well separated centres (fixed by the class, not the seed)."""
    centres = np.random.default_rng(100).standard_normal((n_classes, n_features)) * 3
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, n)
    x = centres[y] + spread * rng.standard_normal((n, n_features))
    return x.astype(np.float32), y


@pytest.mark.parametrize("optimizer", ["sgd", "momentum", "nesterov", "adam", "adamw"])
def test_mlp_learns_a_separable_problem(optimizer):
    x, y = blobs(1200)
    xv, yv = blobs(300, seed=1)
    lr = 0.003 if optimizer.startswith("adam") else 0.05
    result = fit(TrainSettings(hidden=[32], epochs=6, batch_size=32, optimizer=optimizer, learning_rate=lr,
                          weight_decay=1e-4), x, y, xv, yv, n_classes=4)
    assert result.history[-1]["val_accuracy"] >= 0.99
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
    accuracy = np.mean(result.model.predict_proba(xv).argmax(axis=1) == yv)
    assert accuracy == result.history[-1]["val_accuracy"]


def test_every_layer_kind_and_schedule_trains():
    x, y = blobs(1000)
    xv, yv = blobs(200, seed=1)
    for extra in (
        {"activation": "tanh", "init": "glorot", "batch_norm": True, "schedule": "cosine", "warmup_epochs": 1},
        {"activation": "leaky_relu", "dropout": 0.2, "schedule": "step", "step_epochs": 3, "grad_clip": 1.0,
         "learning_rate": 0.01},
        {"activation": "sigmoid", "label_smoothing": 0.1, "learning_rate": 0.01},
    ):
        result = fit(TrainSettings(hidden=[24, 16], epochs=5, batch_size=50, **extra), x, y, xv, yv, n_classes=4)
        assert result.history[-1]["val_accuracy"] >= 0.97, extra


def test_cnn_learns_where_the_spot_is():
    x, y = quadrant_images(600, seed=0)
    xv, yv = quadrant_images(200, seed=1)
    result = fit(TrainSettings(model="cnn", conv_channels=[4, 8], hidden=[16], epochs=8, batch_size=32,
                          learning_rate=0.005, batch_norm=True), x, y, xv, yv, n_classes=4)
    assert result.history[-1]["val_accuracy"] >= 0.97


def test_history_and_progress_lines(caplog):
    x, y = blobs(300)
    with caplog.at_level(logging.INFO, logger="test_nn_train"):
        result = fit(TrainSettings(hidden=[8], epochs=3), x, y, x[:50], y[:50], n_classes=4,
                     log=logging.getLogger("test_nn_train"))
    assert [h["epoch"] for h in result.history] == [1, 2, 3]
    assert set(result.history[0]) == {"epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy",
                                      "learning_rate", "seconds"}
    assert result.epochs_run == 3 and result.best_epoch == 3
    assert result.train_seconds == pytest.approx(sum(h["seconds"] for h in result.history))
    assert [r.message.split(":")[0] for r in caplog.records] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]


def test_early_stopping_restores_the_best_weights():
    # Random labels: the network can only memorise, so validation loss soon rises.
    rng = np.random.default_rng(0)
    x, xv = rng.standard_normal((200, 10)).astype(np.float32), rng.standard_normal((200, 10)).astype(np.float32)
    y, yv = rng.integers(0, 3, 200), rng.integers(0, 3, 200)
    result = fit(TrainSettings(hidden=[64], epochs=40, learning_rate=0.01, early_stopping=2, batch_size=20),
                 x, y, xv, yv, n_classes=3)
    val_losses = [h["val_loss"] for h in result.history]
    assert result.epochs_run < 40
    assert result.epochs_run == result.best_epoch + 2
    assert result.best_epoch == 1 + int(np.argmin(val_losses))
    assert result.model.loss_and_accuracy(xv, yv)[0] == pytest.approx(min(val_losses), rel=1e-6)


def test_a_diverging_run_stops_with_where_and_what_to_change():
    x, y = blobs(500)
    with pytest.raises(TrainingDivergedError, match=r"epoch 1, batch \d+ of 16.*lower learning_rate"):
        fit(TrainSettings(hidden=[16], optimizer="sgd", learning_rate=1e6, epochs=3, batch_size=32), x, y * 1, x, y,
            n_classes=4)


def trained_model_bytes(tmp_path, name, **overrides):
    x, y = blobs(400)
    result = fit(TrainSettings(hidden=[16, 8], epochs=2, batch_norm=True, dropout=0.3, **overrides), x, y, x[:100],
                 y[:100], n_classes=4)
    path = tmp_path / name
    save_model(path, result.model, normalization={"mean": 0.0, "std": 1.0}, classes=list("abcd"), metadata={})
    return path.read_bytes()


def test_same_settings_and_seed_give_a_byte_identical_model_file(tmp_path):
    first = trained_model_bytes(tmp_path, "a.npz")
    assert trained_model_bytes(tmp_path, "b.npz") == first
    assert trained_model_bytes(tmp_path, "c.npz", seed=1) != first


def test_labels_outside_the_classes_are_refused():
    x, y = blobs(50)
    with pytest.raises(ValueError, match="y_train"):
        fit(TrainSettings(), x, y + 4, x, y, n_classes=4)


def blas_threads():
    return {pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"}


def test_threads_size_the_worker_pool_and_blas_runs_one_thread_per_call(monkeypatch):
    seen = []
    original = train_module.Trainer.run_epoch

    def recording(self, *args):
        seen.append((self.workers.threads, blas_threads()))
        return original(self, *args)

    monkeypatch.setattr(train_module.Trainer, "run_epoch", recording)
    x, y = blobs(100)
    before = blas_threads()
    fit(TrainSettings(hidden=[4], epochs=1), x, y, x, y, n_classes=4, threads=3)
    assert seen == [(3, {1})]
    assert blas_threads() == before, "BLAS gets its own thread count back when training ends"


def test_a_batch_size_beyond_the_training_set_is_full_batch_gradient_descent():
    x, y = blobs(90)
    plain = dict(hidden=[8], batch_norm=False, dropout=0.0, optimizer="sgd", schedule="constant", epochs=3)
    full = fit(TrainSettings(batch_size=10**6, **plain), x, y, x, y, n_classes=4)
    exact = fit(TrainSettings(batch_size=90, **plain), x, y, x, y, n_classes=4)
    # One step per epoch over every example: the same weights as a batch of exactly the set.
    assert all(np.array_equal(a, b) for a, b in zip(full.model.flat_params, exact.model.flat_params, strict=False))
    assert [row["train_loss"] for row in full.history] == [row["train_loss"] for row in exact.history]


@pytest.mark.parametrize("model", ["mlp", "cnn"])
def test_the_weights_are_the_same_bytes_at_any_thread_count(small_blocks, model):
    x, y = quadrant_images(150, seed=0)
    recipe = TrainSettings(model=model, conv_channels=[4, 6], hidden=[20, 12], batch_norm=True, dropout=0.2,
                      optimizer="adamw", weight_decay=0.01, batch_size=32, epochs=2)
    trained = {}
    for threads in (1, 2, 3):
        model_ = fit(recipe, x, y, x[:40], y[:40], n_classes=4, threads=threads).model
        trained[threads] = model_.flat_params.tobytes() + model_.flat_buffers.tobytes()
    assert trained[2] == trained[1]
    assert trained[3] == trained[1]


def stepped(settings: TrainSettings, fused: bool, threads: int, steps: int = 3) -> bytes:
    x, y = quadrant_images(37, seed=2)  # an odd batch: the last blocks are short
    model = Model(architecture(settings, x.shape[1], 4))
    model.initialize(settings.init, np.random.default_rng(0))
    model.set_dropout_rng(np.random.default_rng(1))
    optimizer = make_optimizer(settings, model.n_decay)
    with Workers(threads) as workers:
        model.set_workers(workers)
        optimizer.workers = workers
        for _ in range(steps):
            _, dlogits = softmax_cross_entropy(model.forward(x, train=True), y)
            if fused:
                optimizer.begin(model.flat_params, model.flat_grads, 0.01)
                model.backward(dlogits, optimizer)
            else:
                model.backward(dlogits)
                optimizer.step(model.flat_params, model.flat_grads, 0.01)
    return model.flat_params.tobytes() + model.flat_buffers.tobytes()


@pytest.mark.parametrize("settings", [
    TrainSettings(hidden=[20, 12], dropout=0.2, optimizer="adamw", weight_decay=0.01),
    TrainSettings(hidden=[9], batch_norm=False, dropout=0.0, optimizer="nesterov", activation="tanh", weight_decay=0.001),
    TrainSettings(model="cnn", conv_channels=[4, 6], hidden=[10], optimizer="adam", weight_decay=0.01),
], ids=["mlp-adamw", "mlp-nesterov", "cnn-adam"])
@pytest.mark.parametrize("split", [True, False], ids=["blocks", "whole"])
def test_updating_each_layer_as_its_gradient_comes_gives_the_bytes_of_one_step(request, settings, split):
    # Split: every weight gradient in blocks, updated block by block on the workers. Whole:
    # tiny layers are single blocks, updated with the small parameters after the pass.
    if split:
        request.getfixturevalue("small_blocks")
    plain = stepped(settings, fused=False, threads=1)
    for threads in (1, 2, 3):
        assert stepped(settings, fused=True, threads=threads) == plain, threads


def test_a_dense_layers_deferred_weight_gradient_matches_its_plain_backward(small_blocks):
    rng = np.random.default_rng(0)
    x, dout = rng.standard_normal((13, 11), dtype=np.float32), rng.standard_normal((13, 7), dtype=np.float32)
    plain, deferred = Dense(11, 7), Dense(11, 7)
    W = rng.standard_normal((11, 7), dtype=np.float32)
    plain.params["W"][...] = deferred.params["W"][...] = W
    plain.forward(x, train=True)
    dx_plain = plain.backward(dout.copy()).copy()
    updated = []
    with Workers(2) as workers:
        deferred.workers = workers
        deferred.forward(x, train=True)
        dx, job = deferred.backward_deferred(dout.copy(), update=lambda lo, hi: updated.append((lo, hi)))
        dx = dx.copy()  # dx is final before the job is
        workers.wait(job)
    assert dx.tobytes() == dx_plain.tobytes()
    assert deferred.grads["W"].tobytes() == plain.grads["W"].tobytes()
    assert deferred.grads["b"].tobytes() == plain.grads["b"].tobytes()
    # Every entry of W reported final exactly once.
    covered = np.zeros(W.size, int)
    for lo, hi in updated:
        covered[lo:hi] += 1
    assert (covered == 1).all()
