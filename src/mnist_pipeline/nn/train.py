"""Minibatch training: the epoch loop, validation, early stopping and the divergence guard."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from mnist_pipeline.errors import TrainingDivergedError
from mnist_pipeline.nn.augment import augment_batch
from mnist_pipeline.nn.losses import training_loss
from mnist_pipeline.nn.model import Model, architecture
from mnist_pipeline.nn.optim import clip_grad_norm, make_optimizer
from mnist_pipeline.nn.parallel import Workers, available_cores
from mnist_pipeline.nn.schedules import make_schedule
from mnist_pipeline.nn.settings import TrainSettings


@dataclass
class TrainResult:
    model: Model
    #: one dict per epoch: epoch, train_loss, train_accuracy, val_loss, val_accuracy, learning_rate, seconds
    history: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    #: the epoch whose weights `model` holds (the best by validation loss under early stopping, else the last)
    best_epoch: int = 0
    train_seconds: float = 0.0


class Trainer:
    """A freshly initialised model with its optimiser and schedule, trained one epoch at a time.

    The seed is split into independent streams for initialisation, shuffling, dropout and
    augmentation, so changing, say, the dropout rate leaves the initial weights and batch order
    as they were (and turning augmentation on changes nothing but the batches' pixels).

    `threads` (default: every core the process may use) is the size of the worker pool the
    layers and the optimiser split their work over, in blocks fixed by the array sizes. BLAS
    runs one thread per call for the trainer's life (each block is one call), so the weights
    are the same bytes whatever `threads` is. Use it as a context manager, or close() it.

    An MLP of ReLU or leaky-ReLU layers trains by columns (nn/columns.py); `by_columns=False`
    trains it layer by layer instead, as before that step was built (other bytes: see there).
    """

    def __init__(
        self, settings: TrainSettings, n_inputs: int, n_classes: int, n_train: int,
        image_shape: tuple[int, int] | None = None, threads: int | None = None, by_columns: bool = True,
    ) -> None:
        self.settings = settings
        # spawn(4)'s first three children are spawn(3)'s: adding the augmentation stream kept
        # every earlier stream, and so the weights of runs without augmentation.
        init_seed, shuffle_seed, dropout_seed, augment_seed = np.random.SeedSequence(settings.seed).spawn(4)
        self.model = Model(architecture(settings, n_inputs, n_classes, image_shape))
        self.model.initialize(settings.init, np.random.default_rng(init_seed))
        self.model.set_dropout_rng(np.random.default_rng(dropout_seed))
        self.shuffle_rng = np.random.default_rng(shuffle_seed)
        self.augmentation, self.augment_rng = settings.augmentation, np.random.default_rng(augment_seed)
        self.image_shape = tuple(self.model.architecture["image_shape"])
        self._blank: float | None = None
        self.optimizer = make_optimizer(settings, self.model.n_decay)
        self.batch_size = min(settings.batch_size, n_train)
        self.steps_per_epoch = math.ceil(n_train / self.batch_size)
        self.schedule = make_schedule(settings, self.steps_per_epoch)
        self.step = 0
        # Last, so that a bad setting above leaves no thread behind and BLAS as it was.
        self.threads = int(threads or available_cores())
        # A convolution's blocks of images, and an MLP's blocks of features (nn/columns.py), go
        # to helper processes (see nn/processes.py).
        by_columns = by_columns and self.model.trains_by_columns
        self.workers = Workers(self.threads, processes=self.model.has_convolutions or by_columns)
        self.model.set_workers(self.workers)
        if by_columns:
            self.model.train_by_columns(int(dropout_seed.generate_state(1, np.uint64)[0]))
        # Every minibatch is gathered into these, so an epoch allocates nothing per batch (in
        # the shared arena, if any, where helper processes read the first layer's input).
        self._xb = self.workers.empty((self.batch_size, n_inputs), np.float32)
        self._yb = np.empty(self.batch_size, np.intp)
        self.optimizer.workers = self.workers
        # Two BLAS calls side by side, each with its own thread team, fight over the cores.
        self._blas = threadpool_limits(limits=1, user_api="blas")

    def close(self) -> None:
        """Stop the worker threads and give BLAS back its own thread count."""
        self.workers.close()
        self.model.set_workers(self.workers)
        self._blas.restore_original_limits()

    def __enter__(self) -> Trainer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def run_epoch(self, x: np.ndarray, y: np.ndarray, epoch: int) -> dict:
        """One shuffled pass over x (n, n_inputs) float32, y (n,) intp.

        Returns train_loss (mean over examples, label smoothing included), train_accuracy
        (of the predictions made while training, on the augmented images when augmentation is
        on) and learning_rate (of the last step).
        Raises TrainingDivergedError at the first batch whose loss is nan or inf.
        """
        model, optimizer, n = self.model, self.optimizer, len(x)
        smoothing = self.settings.label_smoothing
        # A step by columns goes to the workers whole unless clipping needs every gradient first.
        whole = self.settings.grad_clip is None and model.column_step is not None
        order = self.shuffle_rng.permutation(n)
        if self.augmentation.active and self._blank is None:
            # A blank pixel of the normalized data (pixel 0, the smallest value there is): what a
            # shift uncovers and erasing paints, so the background stays what it is elsewhere.
            self._blank = float(x.min())
        total_loss, correct, lr = 0.0, 0, 0.0
        for batch, start in enumerate(range(0, n, self.batch_size)):
            index = order[start : start + self.batch_size]
            # The buffers themselves for a whole batch: a job for the helper processes finds an
            # array it has seen before at once, where a new view must be located again.
            xb, yb = (self._xb, self._yb) if len(index) == len(self._xb) else (
                self._xb[: len(index)], self._yb[: len(index)])
            # mode="clip" skips the bounds check that would make take() buffer its output.
            np.take(x, index, axis=0, out=xb, mode="clip")
            np.take(y, index, out=yb, mode="clip")
            augment_batch(xb, self.image_shape, self.augmentation, self.augment_rng, self._blank)
            lr = self.schedule.rate(self.step)
            # Overflow in a diverging run is reported below, with where and what to change.
            with np.errstate(over="ignore", invalid="ignore"):
                if whole:
                    # Forward, loss, backward and the update in one hand-off (ColumnStep.step): a
                    # loss that is not finite is then seen after the update, and ends the run.
                    optimizer.begin(model.flat_params, model.flat_grads, lr)
                    loss, hits = model.train_step(xb, yb, smoothing, optimizer)
                else:
                    logits = model.forward(xb, train=True)
                    # The gradient over the logits: they are this step's own, and not needed again.
                    loss, dlogits, hits = training_loss(logits, yb, smoothing, out=logits)
            correct += hits
            if not math.isfinite(loss):
                raise TrainingDivergedError(
                    f"training diverged: the loss is {loss} at epoch {epoch}, batch {batch + 1} of "
                    f"{self.steps_per_epoch}, with learning rate {lr:.3g}; lower learning_rate, "
                    f"set grad_clip (e.g. 1.0) or add warmup_epochs"
                )
            total_loss += loss * len(index)
            if not whole:
                self._backward_and_update(dlogits, lr)
            self.step += 1
        return {"train_loss": total_loss / n, "train_accuracy": correct / n, "learning_rate": lr}

    def _backward_and_update(self, dlogits: np.ndarray, lr: float) -> None:
        """The gradients from dlogits, and the optimiser's step at rate lr."""
        model, optimizer, clip = self.model, self.optimizer, self.settings.grad_clip
        if clip is None:
            # The step is made layer by layer as the gradients come (Model.backward).
            optimizer.begin(model.flat_params, model.flat_grads, lr)
            model.backward(dlogits, optimizer)
        else:
            # Clipping needs every gradient before the first update.
            model.backward(dlogits)
            clip_grad_norm(model.flat_grads, clip)
            optimizer.step(model.flat_params, model.flat_grads, lr)


def fit(
    settings: TrainSettings,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    n_classes: int = 10,
    image_shape: tuple[int, int] | None = None,
    threads: int | None = None,
    log: logging.Logger | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> TrainResult:
    """Train the network `settings` describes; x float32 (n, n_inputs) normalised, y int (n,).

    `image_shape` (rows, cols) is the size of the row-major images x holds (None: square).

    Validation loss and accuracy are measured after every epoch. With early_stopping = k > 0,
    training stops after k epochs without a lower validation loss and the best weights are
    restored. `threads` (default: every core the process may use) is the trainer's thread
    count, see Trainer.

    The same settings and data give bit-identical weights, whatever the thread count: every
    piece of work is split into blocks fixed by the array sizes (see parallel.py), and BLAS
    runs one thread per block, so the same sums are made in the same order.

    `on_epoch` receives each epoch's record as it ends (epoch_record): the workflow writes them
    as JSON lines that the app follows; the log gets the same record as a line for people.
    """
    if not isinstance(settings, TrainSettings):
        raise TypeError(f"settings: expected a TrainSettings (TrainSettings.from_dict for a dict), got {type(settings).__name__}")
    log = log or logging.getLogger(__name__)
    x_train, y_train = _checked(x_train, y_train, n_classes, "train")
    x_val, y_val = _checked(x_val, y_val, n_classes, "val")
    if x_val.shape[1] != x_train.shape[1]:
        raise ValueError(f"x_val has {x_val.shape[1]} features per row, x_train {x_train.shape[1]}")
    with Trainer(settings, x_train.shape[1], n_classes, len(x_train), image_shape, threads) as trainer:
        model, epochs, patience = trainer.model, settings.epochs, settings.early_stopping
        result = TrainResult(model)
        best_loss, best_state = math.inf, None
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            stats = trainer.run_epoch(x_train, y_train, epoch)
            val_loss, val_accuracy = model.loss_and_accuracy(x_val, y_val)
            if not math.isfinite(val_loss):
                raise TrainingDivergedError(
                    f"training diverged: the validation loss is {val_loss} after epoch {epoch}; "
                    f"lower learning_rate or set grad_clip"
                )
            seconds = time.perf_counter() - start
            row = {"epoch": epoch, **stats, "val_loss": val_loss, "val_accuracy": val_accuracy, "seconds": seconds}
            result.history.append(row)
            result.epochs_run, result.train_seconds = epoch, result.train_seconds + seconds
            record = epoch_record(row, epochs)
            log.info("%s", epoch_text(record))
            if on_epoch is not None:
                on_epoch(record)
            if val_loss < best_loss:
                best_loss, result.best_epoch = val_loss, epoch
                if patience:
                    best_state = model.snapshot()
            elif patience and epoch - result.best_epoch >= patience:
                log.info("early stopping: no lower validation loss for %d epochs", patience)
                break
        if patience and best_state is not None:
            model.restore(best_state)
            log.info("restored the weights of epoch %d (validation loss %.4f)", result.best_epoch, best_loss)
        else:
            result.best_epoch = result.epochs_run
    return result


def epoch_record(row: Mapping[str, Any], epochs: int) -> dict[str, Any]:
    """One epoch's progress as data: a history row (epoch, train_loss, train_accuracy,
    learning_rate, val_loss, val_accuracy, seconds) and the number of epochs planned."""
    return {**row, "epochs": epochs}


def epoch_text(record: Mapping[str, Any]) -> str:
    """The same record as a line for people (the train log, the terminal)."""
    return (
        f"epoch {record['epoch']}/{record['epochs']}: train loss {record['train_loss']:.4f} accuracy {record['train_accuracy']:.4f},"
        f" val loss {record['val_loss']:.4f} accuracy {record['val_accuracy']:.4f}, lr {record['learning_rate']:.3g},"
        f" {record['seconds']:.1f} s"
    )


def _checked(x: np.ndarray, y: np.ndarray, n_classes: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """x as C-contiguous float32 (no copy when it already is), y as intp; ValueError if they do not fit."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    y = np.asarray(y)
    if x.ndim != 2 or y.ndim != 1 or len(x) != len(y) or len(x) == 0:
        raise ValueError(f"x_{name} {x.shape} and y_{name} {y.shape}: expected (n, features) and (n,) with n > 0")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= n_classes:
        raise ValueError(f"y_{name}: expected integer labels in [0, {n_classes}), got {y.dtype} in [{y.min()}, {y.max()}]")
    return x, y.astype(np.intp, copy=False)
