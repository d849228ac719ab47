"""Every sharded layer against its whole-batch form, and the same bytes on 1, 2 and 3 threads.

A training step cuts its work into blocks fixed by the data's size, never by the number of
threads (nn.parallel): Dense into blocks of output columns (forward) and of input features
(backward), BatchNorm into blocks of rows, activations and dropout into blocks of the flat
array, Conv2D and MaxPool2D (fused or not) into blocks of conv.SAMPLES images, an optimiser's
step into blocks of optim.STEP_BLOCK entries. Each blocked layer is held here to two things:

1. Blocked against whole. Blocked: the block constants shrunk (BLOCKED) so that these small
   arrays split into several blocks, the last one short, and every split handed to the workers
   (PARALLEL_MIN 0, MIN_PRODUCT 1). Whole: the constants raised (WHOLE) so that each piece of
   work is one block, on one thread. Element-wise work must give the same bytes. Where the
   order of a sum legitimately changes, the two agree to RTOL of the values' scale:
   - BLAS on a slice of a product's columns or rows may take another kernel path than on the
     whole product (Dense forward, input and weight gradients; Conv2D's per-block products);
   - partial sums per block, added in block order, round otherwise than one sum (BatchNorm's
     batch statistics and parameter gradients, Conv2D's weight and bias gradients).
2. Blocked on Workers of 1, 2 and 3 threads: the same bytes. The pools here (Spread) make the
   caller wait, in every job of several tasks, until a helper has taken one, so that at 2 and 3
   threads the helpers really compute blocks (with their own scratch) and not just the caller.

Forward outputs, input gradients, parameter gradients and state (running statistics, optimiser
moments) all count. Layers reuse their buffers and activations work in place, so every input
is passed as a copy and every result copied before the next call. BLAS runs one thread per
call, as the trainer sets it.

Already covered elsewhere, and not repeated: each layer's maths against nn.reference on one
and two workers (test_nn_reference; its dense case is split into column blocks, its conv cases
use SAMPLES 3); a fused conv+pool against conv then pool (test_nn_layers); an optimiser step
made in pieces against one step (test_nn_optim); Dense.backward_deferred against
Dense.backward, Model.backward with the optimiser against backward then step at 1-3 threads,
and whole training runs at 1-3 threads (test_nn_train, test_nn_digest). Those hold the final
weights of a model; the model step here adds each step's logits, loss and gradients.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mnist_pipeline.nn import conv, optim, parallel
from mnist_pipeline.nn.activations import LeakyReLU, ReLU
from mnist_pipeline.nn.conv import Conv2D, MaxPool2D
from mnist_pipeline.nn.layers import BatchNorm, Dense, Dropout
from mnist_pipeline.nn.losses import softmax_cross_entropy
from mnist_pipeline.nn.model import Model, architecture
from mnist_pipeline.nn.optim import make_optimizer
from mnist_pipeline.nn.parallel import Workers, blocks, product_block, row_block
from mnist_pipeline.nn.settings import TrainSettings

#: Largest difference between blocked and whole, as a fraction of the largest value compared,
#: where the order of a sum differs. Float32 carries 6e-8 per rounding. Measured: up to 2e-6
#: for a batch norm's dgamma, a sum over 930 rows whose terms mostly cancel (the sum is some
#: 10x smaller than the sum of their sizes), and as much in a model's second step, where the
#: first step's differences have passed through a dozen layers; 1e-6 and less elsewhere.
RTOL = 1e-5

#: Runs on 2 and on 3 threads each, in the test of thread counts.
ATTEMPTS = 3

#: Block constants that cut the small arrays below into several blocks, each handed out.
BLOCKED = {
    (parallel, "BLOCK"): 96,  # a multiple of 4: dropout draws 4 units per 64-bit number
    (parallel, "COLUMNS"): 4,
    (parallel, "MIN_PRODUCT"): 1,
    (parallel, "PARALLEL_MIN"): 0,
    (optim, "STEP_BLOCK"): 100,
    (conv, "SAMPLES"): 3,
}
#: Block constants that make every piece of work below one block. (conv.SAMPLES sizes each
#: thread's scratch, so it is raised to just past the batches here, not to infinity.)
WHOLE = {
    (parallel, "BLOCK"): 1 << 40,
    (parallel, "COLUMNS"): 1 << 40,
    (parallel, "MIN_PRODUCT"): 1 << 62,
    (optim, "STEP_BLOCK"): 1 << 40,
    (conv, "SAMPLES"): 64,
}

# The sizes every case uses: each cut into several blocks under BLOCKED, the last one short
# (see the first test).
DENSE = (13, 37, 22)  # rows, n_in, n_out
NORM_SHAPE = (31, 6, 5, 7)  # NHWC: 930 rows of 7 channels
FLAT_SHAPE = (101, 97)  # 9797 elements
IMAGES = (7, 5, 7)  # images, rows, cols: odd sides, which the pool drops
STEP_SIZE, N_DECAY = 20_037, 11_613  # decay ends inside a block
MODEL_ROWS, MODEL_IMAGE = 17, (10, 14)


@pytest.fixture(autouse=True)
def one_blas_thread():
    # As the trainer runs: a block is a single-threaded BLAS call.
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture(autouse=True)
def threads_take_turns_often():
    # NumPy keeps the GIL through a ufunc on fewer than some 500 values, and Python hands it on
    # every 5 ms: with blocks this small the threads would otherwise take turns a task at a
    # time, and two blocks sharing scratch by mistake would seldom overlap.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    yield
    sys.setswitchinterval(interval)


class Spread(Workers):
    """Workers whose caller, in a job of several tasks, waits for a helper to take one first.

    Without it the caller may run every task of a small job before a helper wakes, and a
    2-thread run would compute what a 1-thread run does. Records each job's number of tasks.
    """

    def __init__(self, threads: int) -> None:
        super().__init__(threads)
        self.tasks_per_job: list[int] = []
        self.helper_tasks: list[int] = []  # list.append is atomic under the GIL

    def _spread(self, task: Callable[[int], None], n_tasks: int) -> Callable[[int], None]:
        self.tasks_per_job.append(n_tasks)
        if self.threads < 2 or n_tasks < 2:
            return task
        taken, caller = threading.Event(), threading.get_ident()

        def spread_task(i: int) -> None:
            if threading.get_ident() != caller:
                self.helper_tasks.append(i)
                taken.set()
            elif not taken.wait(timeout=10):
                raise AssertionError("no helper took a task of this job in 10 s")
            task(i)

        return spread_task

    def run(self, task, n_tasks, elements=None):
        super().run(self._spread(task, n_tasks), n_tasks, elements)

    def submit(self, task, n_tasks):
        return super().submit(self._spread(task, n_tasks), n_tasks)


@contextmanager
def constants(values: dict) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for (module, name), value in values.items():
            patch.setattr(module, name, value)
        yield


Results = dict[str, np.ndarray]


def results(run: Callable[[Workers], Results], block_constants: dict, threads: int) -> tuple[Results, Spread]:
    """What `run` returns on a Spread pool of `threads` under `block_constants`, and the pool."""
    with constants(block_constants), Spread(threads) as pool:
        out = run(pool)
    if threads > 1:
        assert pool.helper_tasks, "the helpers computed no block"
    return out, pool


def assert_same_bytes(actual: np.ndarray, expected: np.ndarray, what: str) -> None:
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (
        f"{what}: {actual.dtype}{actual.shape}, expected {expected.dtype}{expected.shape}")
    if actual.tobytes() != expected.tobytes():
        bits = {1: np.uint8, 2: np.uint16, 4: np.uint32, 8: np.uint64}[actual.itemsize]
        a, e = np.ascontiguousarray(actual).reshape(-1), np.ascontiguousarray(expected).reshape(-1)
        differ = np.flatnonzero(a.view(bits) != e.view(bits))
        i = differ[0]
        raise AssertionError(f"{what}: {len(differ)} of {a.size} values differ, the first at flat index {i}: "
                             f"{a[i]!r}, expected {e[i]!r}")


def assert_close(actual: np.ndarray, expected: np.ndarray, what: str, scale: float | None = None) -> None:
    """max |actual - expected| <= RTOL * scale, the scale max |expected| unless given."""
    assert actual.dtype == expected.dtype and actual.shape == expected.shape, (
        f"{what}: {actual.dtype}{actual.shape}, expected {expected.dtype}{expected.shape}")
    a, e = actual.astype(np.float64), expected.astype(np.float64)
    if scale is None:
        scale = max(float(np.abs(e).max(initial=0.0)), 1e-30)
    error = float(np.abs(a - e).max(initial=0.0))
    assert error <= RTOL * scale, f"{what}: off by {error:.3g}, {error / scale:.2e} of the scale {scale:.3g}"


def f32(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def randomised(layer, rng: np.random.Generator):
    for param in layer.params.values():
        param[...] = rng.standard_normal(param.shape)
    return layer


# One piece of blocked work each: run(workers) -> named results --------------------------------


def run_dense(workers: Workers) -> Results:
    rng = np.random.default_rng(1)
    n, n_in, n_out = DENSE
    layer = randomised(Dense(n_in, n_out), rng)
    layer.workers = workers
    x, dout = f32(rng, n, n_in), f32(rng, n, n_out)
    out = layer.forward(x.copy(), train=True).copy()
    dx = layer.backward(dout.copy()).copy()
    return {"out": out, "dx": dx, "dW": layer.grads["W"].copy(), "db": layer.grads["b"].copy()}


def run_batch_norm(train: bool) -> Callable[[Workers], Results]:
    def run(workers: Workers) -> Results:
        rng = np.random.default_rng(2)
        F = NORM_SHAPE[-1]
        layer = BatchNorm(F, momentum=0.8)
        layer.workers = workers
        layer.params["gamma"][...] = rng.uniform(0.5, 2.0, F)
        layer.params["beta"][...] = rng.standard_normal(F)
        layer.buffers["running_mean"][...] = rng.standard_normal(F)
        layer.buffers["running_var"][...] = rng.uniform(0.5, 2.0, F)
        got = {}
        for call in range(2):  # twice: the running statistics move on from the first call's
            # Off-centre and of unequal scales, so that the mean and variance matter.
            x = (rng.standard_normal(NORM_SHAPE) * rng.uniform(0.1, 5.0, F) + rng.uniform(-3, 3, F)).astype(np.float32)
            dout = f32(rng, *NORM_SHAPE)
            got[f"out {call}"] = layer.forward(x.copy(), train=train).copy()
            got[f"dx {call}"] = layer.backward(dout.copy()).copy()
            got[f"dgamma {call}"] = layer.grads["gamma"].copy()
            got[f"dbeta {call}"] = layer.grads["beta"].copy()
        got.update({name: value.copy() for name, value in layer.buffers.items()})
        return got

    return run


def run_activation(cls) -> Callable[[Workers], Results]:
    def run(workers: Workers) -> Results:
        rng = np.random.default_rng(3)
        layer = cls()
        layer.workers = workers
        x, dout = f32(rng, *FLAT_SHAPE), f32(rng, *FLAT_SHAPE)
        x[rng.random(FLAT_SHAPE) < 0.1] = 0  # the slope at exactly 0
        out = layer.forward(x.copy(), train=True).copy()
        dx = layer.backward(dout.copy()).copy()
        return {"out": out, "dx": dx}

    return run


def run_dropout(workers: Workers) -> Results:
    rng = np.random.default_rng(4)
    layer = Dropout(0.3)
    layer.workers = workers
    layer.rng = np.random.default_rng(5)
    got = {}
    for call in range(2):  # twice: each block's generator goes on where it stopped
        x, dout = f32(rng, *FLAT_SHAPE), f32(rng, *FLAT_SHAPE)
        got[f"out {call}"] = layer.forward(x.copy(), train=True).copy()
        got[f"dx {call}"] = layer.backward(dout.copy()).copy()
    return got


def run_conv(channels: int, pooled: bool) -> Callable[[Workers], Results]:
    def run(workers: Workers) -> Results:
        rng = np.random.default_rng(6)
        x = f32(rng, *IMAGES, channels)
        layer = randomised(Conv2D(channels, 4), rng)
        layer.workers = workers
        if not pooled:
            out = layer.forward(x.copy(), train=True).copy()
            dx = layer.backward(f32(rng, *out.shape)).copy()
        else:
            x[:, :2] = 0.25  # a constant band: equal patches, tied outputs within a pooling window
            pool = MaxPool2D()
            pool.workers = workers
            layer.fuse(pool)  # as Model does for a conv2d followed by a max_pool
            out = pool.forward(layer.forward(x.copy(), train=True), train=True).copy()
            dx = layer.backward(pool.backward(f32(rng, *out.shape))).copy()
        return {"out": out, "dx": dx, "dW": layer.grads["W"].copy(), "db": layer.grads["b"].copy()}

    return run


def run_max_pool(workers: Workers) -> Results:
    rng = np.random.default_rng(7)
    x = rng.integers(0, 3, (*IMAGES, 3)).astype(np.float32)  # values 0, 1, 2: many tied windows
    layer = MaxPool2D()
    layer.workers = workers
    out = layer.forward(x.copy(), train=True).copy()
    dx = layer.backward(f32(rng, *out.shape)).copy()
    return {"out": out, "dx": dx}


def run_optimizer(name: str) -> Callable[[Workers], Results]:
    def run(workers: Workers) -> Results:
        rng = np.random.default_rng(8)
        optimizer = make_optimizer(TrainSettings(optimizer=name, weight_decay=0.01, momentum=0.8, betas=(0.8, 0.95)),
                                   N_DECAY)
        optimizer.workers = workers
        w, got = f32(rng, STEP_SIZE), {}
        for step in range(3):
            g = f32(rng, STEP_SIZE)
            optimizer.step(w, g, 0.05)
            got[f"g {step}"] = g  # the step leaves it as it was: that counts too
        got["w"] = w
        got.update({state: getattr(optimizer, state).copy() for state in optimizer.STATE})
        return got

    return run


def run_model(dropout: float, optimizer: str) -> Callable[[Workers], Results]:
    """Two training steps of a CNN as training builds it: fused conv+pool, batch norm, leaky
    ReLU, (dropout), dense layers; the step made during backward (Model.backward(dlogits, opt))."""

    def run(workers: Workers) -> Results:
        settings = TrainSettings(model="cnn", conv_channels=(3, 4), hidden=(13, 9), activation="leaky_relu",
                                 batch_norm=True, dropout=dropout, optimizer=optimizer, weight_decay=0.01,
                                 label_smoothing=0.1)
        rng = np.random.default_rng(9)
        rows, cols = MODEL_IMAGE
        x, labels = f32(rng, MODEL_ROWS, rows * cols), rng.integers(0, 10, MODEL_ROWS)
        model = Model(architecture(settings, rows * cols, 10, MODEL_IMAGE))
        model.initialize(settings.init, np.random.default_rng(10))
        model.set_dropout_rng(np.random.default_rng(11))
        opt = make_optimizer(settings, model.n_decay)
        model.set_workers(workers)
        opt.workers = workers
        got = {}
        for step in range(2):
            logits = model.forward(x.copy(), train=True)
            got[f"logits {step}"] = logits.copy()
            loss, dlogits = softmax_cross_entropy(logits, labels, settings.label_smoothing)
            got[f"loss {step}"] = np.array(loss)
            opt.begin(model.flat_params, model.flat_grads, 0.05)
            model.backward(dlogits, opt)
            # Each parameter's gradient (the step leaves it as it was) and value.
            for i, layer in enumerate(model.layers):
                for name in layer.params:
                    got[f"layer{i}.{name} grad {step}"] = layer.grads[name].copy()
                    got[f"layer{i}.{name} value {step}"] = layer.params[name].copy()
        got["buffers"] = model.flat_buffers.copy()
        return got

    return run


@dataclass(frozen=True)
class Case:
    run: Callable[[Workers], Results]
    #: results whose sums are regrouped by the blocks (see the module docstring): held to RTOL
    #: against the whole-batch form; every other result must be the same bytes
    regrouped: frozenset[str] = frozenset()


def regrouped(*names: str, calls: int = 1) -> frozenset[str]:
    return frozenset(f"{name} {call}" if calls > 1 else name for name in names for call in range(calls))


CASES = {
    # Columns forward, input features backward: BLAS slices. The bias gradient is one sum over
    # the rows in both forms.
    "dense": Case(run_dense, regrouped("out", "dx", "dW")),
    # The batch mean and variance are per-block sums: everything downstream of them.
    "batch-norm-train": Case(run_batch_norm(train=True),
                             regrouped("out", "dx", "dgamma", "dbeta", calls=2) | {"running_mean", "running_var"}),
    # Normalising by the running statistics is element-wise; only the parameter gradients sum.
    "batch-norm-eval": Case(run_batch_norm(train=False), regrouped("dgamma", "dbeta", calls=2)),
    "relu": Case(run_activation(ReLU)),
    "leaky-relu": Case(run_activation(LeakyReLU)),
    # Each block of images is its own product (BLAS on a slice of the patch rows); the kernel
    # and bias gradients are per-block sums. Tap by tap (1 channel) and position by position.
    "conv-1-channel": Case(run_conv(1, pooled=False), regrouped("out", "dx", "dW", "db")),
    "conv-5-channels": Case(run_conv(5, pooled=False), regrouped("out", "dx", "dW", "db")),
    "conv-fused-with-max-pool": Case(run_conv(3, pooled=True), regrouped("out", "dx", "dW", "db")),
    # Pure selection and routing, block by block.
    "max-pool": Case(run_max_pool),
    **{name: Case(run_optimizer(name)) for name in ("sgd", "momentum", "nesterov", "adam", "adamw")},
}
#: Only on thread counts: dropout's masks are drawn per block (their own tests below), and the
#: model step against its whole form is its own test (per-layer scales).
THREAD_CASES = {
    **CASES,
    "dropout": Case(run_dropout),
    "model-step-adamw-dropout": Case(run_model(dropout=0.3, optimizer="adamw")),
}


def test_the_sizes_here_cut_every_kind_of_work_into_several_blocks_the_last_one_short():
    n, n_in, n_out = DENSE
    with constants(BLOCKED):
        cuts = {
            "dense forward (columns)": blocks(n_out, product_block(n, n_in, n_out)),
            "dense backward (input features)": blocks(n_in, product_block(n, n_out, n_in)),
            "batch norm (rows)": blocks(int(np.prod(NORM_SHAPE[:-1])), row_block(NORM_SHAPE[-1])),
            "activations, dropout (flat)": blocks(int(np.prod(FLAT_SHAPE)), parallel.BLOCK),
            "conv, pool (images)": blocks(IMAGES[0], conv.SAMPLES),
            "model (images)": blocks(MODEL_ROWS, conv.SAMPLES),
            "optimiser step": blocks(STEP_SIZE, optim.STEP_BLOCK),
        }
    for what, slices in cuts.items():
        sizes = [s.stop - s.start for s in slices]
        assert len(sizes) >= 3 and sizes[-1] < sizes[0], f"{what}: blocks of {sizes}"
    assert N_DECAY % 100 != 0, "weight decay ends inside a block of the step"


@pytest.mark.parametrize("case", list(CASES))
def test_a_layer_cut_into_blocks_computes_what_it_computes_in_one_block(case):
    run, close = CASES[case].run, CASES[case].regrouped
    blocked, blocked_pool = results(run, BLOCKED, threads=2)
    whole, whole_pool = results(run, WHOLE, threads=1)
    assert max(blocked_pool.tasks_per_job) >= 3, f"not cut into blocks: {blocked_pool.tasks_per_job}"
    assert set(whole_pool.tasks_per_job) == {1}, f"the whole form was cut: {whole_pool.tasks_per_job}"
    assert sorted(blocked) == sorted(whole)
    assert close <= set(whole), sorted(close - set(whole))
    for name, expected in whole.items():
        (assert_close if name in close else assert_same_bytes)(blocked[name], expected, f"{case} {name}")


@pytest.mark.parametrize("case", list(THREAD_CASES))
def test_a_layer_cut_into_blocks_gives_the_same_bytes_on_1_2_and_3_threads(case):
    run = THREAD_CASES[case].run
    one, _ = results(run, BLOCKED, threads=1)
    # Each more than once: two blocks that shared something by mistake differ only when they
    # happen to run at the same time.
    for threads in (2, 3) * ATTEMPTS:
        other, _ = results(run, BLOCKED, threads)
        assert sorted(other) == sorted(one)
        for name, expected in one.items():
            assert_same_bytes(other[name], expected, f"{case} {name} on {threads} threads")


# Dropout: its mask depends on the blocks by design -------------------------------------------


def dropout_mask(x_size: int, block_constants: dict, seed: int = 5, rate: float = 0.3) -> np.ndarray:
    """Which of x_size units a fresh Dropout(rate) with rng seed `seed` keeps (blocked: on 2 threads)."""

    def run(workers: Workers) -> Results:
        layer = Dropout(rate)
        layer.workers = workers
        layer.rng = np.random.default_rng(seed)
        x = np.ones(x_size, np.float32)
        return {"kept": layer.forward(x, train=True) != 0}

    return results(run, block_constants, threads=2 if block_constants is BLOCKED else 1)[0]["kept"]


def test_each_block_of_a_dropout_mask_comes_from_a_generator_of_its_own_whatever_the_batch_size():
    # Block i's units are drawn by the i-th generator spawned from the layer's rng: a batch cut
    # short keeps the mask of its blocks, and the whole-batch form, one block, draws the first
    # block's mask (and then goes on with that generator, where the blocked form takes the next).
    size = int(np.prod(FLAT_SHAPE))
    short = 5000  # 52 blocks of 96 and one of 8, where the full batch has 102 of 96 and one of 5
    full = dropout_mask(size, BLOCKED)
    np.testing.assert_array_equal(dropout_mask(short, BLOCKED), full[:short])
    block = BLOCKED[(parallel, "BLOCK")]
    np.testing.assert_array_equal(dropout_mask(size, WHOLE)[:block], full[:block])
    assert 0.6 < full.mean() < 0.8, "keeps about 1 - rate"


def test_dropout_multiplies_by_its_mask_block_by_block_with_the_bytes_of_one_whole_multiply():
    got, _ = results(run_dropout, BLOCKED, threads=2)
    rng = np.random.default_rng(4)  # the inputs run_dropout drew
    threshold = round(0.3 * Dropout.LEVELS)
    scale = np.float32(Dropout.LEVELS / (Dropout.LEVELS - threshold))
    for call in range(2):
        x, dout = f32(rng, *FLAT_SHAPE), f32(rng, *FLAT_SHAPE)
        assert np.count_nonzero(x) == x.size
        mask = (got[f"out {call}"] != 0).astype(np.float32) * scale
        assert_same_bytes(got[f"out {call}"], x * mask, f"out {call}")
        assert_same_bytes(got[f"dx {call}"], dout * mask, f"dx {call}")


# The whole model --------------------------------------------------------------------------


def test_a_model_training_step_in_blocks_matches_the_one_block_step_to_rounding():
    # Momentum, whose step is linear in the gradient: Adam's first step is lr * sign(g), and
    # turns the rounding noise of the biases before batch norm (0 in exact arithmetic) into
    # steps of lr. Without dropout, whose masks depend on the blocks (above).
    run = run_model(dropout=0.0, optimizer="momentum")
    blocked, blocked_pool = results(run, BLOCKED, threads=2)
    whole, whole_pool = results(run, WHOLE, threads=1)
    assert max(blocked_pool.tasks_per_job) >= 3 and set(whole_pool.tasks_per_job) == {1}
    assert sorted(blocked) == sorted(whole)
    for name, expected in whole.items():
        scale = None
        if name.startswith("layer"):
            # Gradients and weights on the scale of their layer's largest: a bias before batch
            # norm has a gradient of rounding noise, which another order of sums rounds otherwise.
            layer, (what, step) = name.split(".")[0], name.split(" ")[1:]
            scale = max(float(np.abs(value).max()) for key, value in whole.items()
                        if key.startswith(layer + ".") and key.endswith(f" {what} {step}"))
        assert_close(blocked[name], expected, name, scale=scale)
