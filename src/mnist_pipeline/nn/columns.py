"""A multilayer perceptron's training step as a whole, cut by blocks of features (issue 23).

Layer by layer, a step's element-wise work (batch norm, activation, dropout on 128 x 1024
values: a dozen NumPy calls of 5-25 us) stays on one thread: threads cannot share such short
calls (the GIL), and a job to a helper process per layer costs as much as the work. Here each
hidden layer - dense, batch norm, ReLU or leaky ReLU, dropout - is one *group*, and a group's
forward is one job whose task b takes block b of the group's output features through all of it:
its columns of the product, then their batch norm, activation and dropout. Batch norm works
feature by feature and so do the others, so a block needs no other block: the tasks meet only
where the maths needs every feature, once per layer. Backward is the same by blocks of a
group's features (the product that brings the gradient down from the layer above, then the
group's backward on those features), and a last job makes the dense layers' weight gradients by
blocks of input rows, each followed at once by the optimiser's update of those rows.

So a step is 2 jobs per hidden layer and one more, whatever the number of workers, and every
piece of the step's work is in a task that any worker may run; a training step (step()) goes
to the workers in one hand-off, the output layer and the loss a job of one task in the middle.
The tasks run on helper processes (processes.py: no GIL between them) or, where those cannot
start, on threads; with one worker, in the caller.

The blocks are fixed by the layers' widths and the batch (column_cut), never by the
workers, so the weights are the same bytes at any worker count. The arithmetic is the layers'
own, by columns instead of rows: a batch norm's sums over the batch are one sum per feature,
and dropout draws each block's mask from a generator of its own, keyed by the group, the block
and the step, so that a helper draws the mask of the block it runs without any state kept
between steps; and 1/std joins batch norm's scale (a pass fewer). Training through this step
therefore gives other bytes than the layer-by-layer step (tests/test_nn_columns.py holds the
two to each other's values to float32 rounding, with dropout's masks carried over).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mnist_pipeline.nn import optim
from mnist_pipeline.nn.activations import PiecewiseLinear, find_slope
from mnist_pipeline.nn.layers import BatchNorm, Dense, Dropout, Layer, draw_mask, sum_rows, update_running
from mnist_pipeline.nn.losses import training_loss
from mnist_pipeline.nn.optim import Optimizer
from mnist_pipeline.nn.parallel import blocks, product_block, thread_scratch


@dataclass(frozen=True)
class Group:
    """A hidden layer of an MLP: dense, then optionally batch norm, a piecewise-linear activation,
    optionally dropout, as Model's architecture() builds them."""

    dense: Dense
    norm: BatchNorm | None
    activation: PiecewiseLinear
    dropout: Dropout | None


def column_groups(layers: list[Layer]) -> list[Group] | None:
    """The hidden groups of `layers` when they are an MLP this step can train (each group dense,
    [batch norm], ReLU or leaky ReLU, [dropout]; a dense output layer last), else None."""
    groups, i = [], 0
    while i < len(layers) - 1:
        if not isinstance(layers[i], Dense):
            return None
        dense, i = layers[i], i + 1
        norm = layers[i] if i < len(layers) and isinstance(layers[i], BatchNorm) else None
        i += norm is not None
        if i >= len(layers) or not isinstance(layers[i], PiecewiseLinear):
            return None
        activation, i = layers[i], i + 1
        dropout = layers[i] if i < len(layers) and isinstance(layers[i], Dropout) else None
        i += dropout is not None
        groups.append(Group(dense, norm, activation, dropout))
    if i != len(layers) - 1 or not isinstance(layers[-1], Dense) or not groups:
        return None
    return groups


class ColumnStep:
    """Forward (training) and backward of a Model whose layers column_groups accepts.

    `workers` runs the jobs (Workers.run_kernel) and makes the step's buffers (Workers.empty:
    the shared arena's, under helper processes); `seed` keys the dropout masks.
    """

    def __init__(self, groups: list[Group], output: Dense, weights: dict[int, slice], rest: list[slice], workers,
                 seed: int) -> None:
        self.groups, self.output, self.workers = groups, output, workers
        # Where each hidden dense layer's W lies in the flat vectors (by id of the layer), and the
        # contiguous runs of everything else there (the output layer, biases, batch-norm scales).
        self.weights, self.rest = weights, rest
        self.seed = int(seed)
        self.steps = 0  # forward passes made: the dropout masks' step key
        self._step = workers.empty(1, np.int64)  # the same, where a helper process reads it
        self._buffers: dict[int, list[dict[str, np.ndarray]]] = {}  # batch size -> per group
        # The jobs of a forward and of a backward, by batch size: made once (see _prepared).
        self._jobs: dict[tuple[str, int], tuple[tuple, list]] = {}
        # The last forward's input and each group's output.
        self._inputs: list[np.ndarray] = []

    def _group_buffers(self, n: int) -> list[dict[str, np.ndarray]]:
        """Each group's arrays for a batch of n: `a`, its output, and `dy`, the gradient over its
        dense output, as (n, width) rows (the products above and below read them whole); and as
        *panels*, flat arrays holding each block of features' (n, block) values contiguously
        (panel()), what only the block's own task reads: out (the dense output, then the
        activation), slope (the activation's, times dropout's mask) and, with batch norm,
        centred (the dense output less its batch mean); inv_std per feature. And, with the
        top group's, `d_logits`: the gradient over the logits, where the jobs read it; for a
        whole step (step()), `logits`, `labels` (a copy of the batch's) and `outcome` (the
        mean loss and the correct predictions).

        In panels, because NumPy runs element-wise work on a (128, 256) block of a (128, 1024)
        array about 5x slower than on a contiguous one (a loop over rows for each call)."""
        kept = self._buffers.get(n)
        if kept is None:
            kept = []
            for group in self.groups:
                width, dtype = group.dense.n_out, group.dense.params["W"].dtype
                arrays = {"a": self.workers.empty((n, width), dtype), "dy": self.workers.empty((n, width), dtype),
                          "out": self.workers.empty(n * width, dtype), "slope": self.workers.empty(n * width, dtype)}
                if group.norm is not None:
                    arrays["centred"] = self.workers.empty(n * width, dtype)
                    arrays["inv_std"] = self.workers.empty(width, dtype)
                kept.append(arrays)
            top, dtype = kept[-1], self.output.params["W"].dtype
            top["d_logits"] = self.workers.empty((n, self.output.n_out), dtype)
            top["logits"] = self.workers.empty((n, self.output.n_out), dtype)
            top["labels"] = self.workers.empty(n, np.intp)
            top["outcome"] = self.workers.empty(2, np.float64)
            self._buffers[n] = kept
        return kept

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The logits of a training step (the output layer's buffer); keeps what backward needs."""
        buffers = self._begin(x)
        # In one hand-off where the workers allow (Workers.run_kernels): each group's job starts
        # once the one below has written the whole of its output.
        self.workers.run_kernels(self._prepared("forward", len(x), (), self._forward_jobs, buffers))
        return self.output.forward(self._inputs[-1], train=True)

    def step(self, x: np.ndarray, labels: np.ndarray, label_smoothing: float, optimizer: Optimizer) -> tuple[float, int]:
        """A whole training step in one hand-off: forward, the output layer and the loss
        (losses.training_loss), backward, and the update of `optimizer` (begun).
        Returns (the mean loss, the correct predictions among the logits).

        The same bytes as forward(), the loss and backward() in turn, with one hand-off to the
        helpers instead of two: the output layer and the loss become a job of one task between
        the forward's jobs and the backward's. A loss that is not finite is known only after the
        update, which the caller then discards with the run (Trainer.run_epoch)."""
        buffers = self._begin(x)
        top = buffers[-1]
        top["labels"][...] = labels
        self.workers.run_kernels(self._prepared(("step", float(label_smoothing)), len(x), _held(optimizer),
                                                self._step_jobs, buffers, float(label_smoothing), optimizer))
        return float(top["outcome"][0]), int(top["outcome"][1])

    def _begin(self, x: np.ndarray) -> list[dict[str, np.ndarray]]:
        """Count the step (the dropout masks' key) and keep its input; the buffers for its batch."""
        self.steps += 1
        self._step[0] = self.steps
        buffers = self._group_buffers(len(x))
        self._inputs = [x, *(arrays["a"] for arrays in buffers)]
        return buffers

    def backward(self, dlogits: np.ndarray, optimizer: Optimizer | None = None) -> None:
        """Fill the model's gradients from dlogits, and with `optimizer` (begun) make its step."""
        n, buffers = len(dlogits), self._group_buffers(len(dlogits))
        # The logits' gradient is the caller's array, a new one each step: its jobs read it here.
        d_logits = buffers[-1]["d_logits"]
        d_logits[...] = dlogits
        sum_rows(d_logits, self.output.grads["b"])
        self.workers.run_kernels(self._prepared("backward", n, _held(optimizer), self._backward_jobs, buffers,
                                                optimizer))

    def _prepared(self, kind, n: int, held: tuple, make, *args) -> list:
        """make(n, *args), the jobs of a forward or backward of n rows, kept: made again only when
        the input array, where the parameters lie, or the arrays and objects `held` (the
        optimiser and its vectors) are not the same objects as last time. The same list of jobs
        goes to the helper processes as what changed since, which is nothing (Helpers.run_chain):
        their arrays' values are read where they lie, and so is what changes between steps (the
        step count, the optimiser's rate and count)."""
        held = (self._inputs[0], self.groups[0].dense.params["W"], *held)
        kept = self._jobs.get((kind, n))
        if kept is None or len(kept[0]) != len(held) or any(a is not b for a, b in zip(kept[0], held, strict=False)):
            kept = self._jobs[kind, n] = (held, make(n, *args))
        return kept[1]

    def _forward_jobs(self, n: int, buffers: list[dict[str, np.ndarray]]) -> list:
        jobs = []
        for index, (group, x, arrays) in enumerate(zip(self.groups, self._inputs, buffers, strict=False)):
            dense, norm, dropout = group.dense, group.norm, group.dropout
            cut = column_cut(n, dense.n_in, dense.n_out)
            bn = (None,) * 6 if norm is None else (
                norm.params["gamma"], norm.params["beta"], norm.buffers["running_mean"], norm.buffers["running_var"],
                arrays["centred"], arrays["inv_std"])
            momentum, eps = (norm.momentum, norm.eps) if norm is not None else (0.0, 0.0)
            threshold = 0 if dropout is None else dropout.threshold
            jobs.append((_forward_block, len(blocks(*cut)), (
                cut, x, dense.params["W"], dense.params["b"], *bn, momentum, eps, group.activation.alpha,
                arrays["slope"], arrays["out"], threshold, (self.seed, index), self._step, arrays["a"]),
                _worth(n * dense.n_in * dense.n_out, n * dense.n_out, FORWARD_PASSES)))
        return jobs

    def _step_jobs(self, n: int, buffers: list[dict[str, np.ndarray]], label_smoothing: float,
                   optimizer: Optimizer) -> list:
        top, output = buffers[-1], self.output
        loss = (_loss_block, 1, (top["a"], output.params["W"], output.params["b"], top["labels"], label_smoothing,
                                 top["logits"], top["d_logits"], output.grads["b"], top["outcome"]),
                {"elements": top["logits"].size, "passes": 16})
        return [*self._forward_jobs(n, buffers), loss, *self._backward_jobs(n, buffers, optimizer)]

    def _backward_jobs(self, n: int, buffers: list[dict[str, np.ndarray]], optimizer: Optimizer | None) -> list:
        # From the top: the gradient over a group's output comes down through the layer above
        # it, whose rows for this block of features are the block's own.
        output = self.output
        d_above, W_above, dW_above = buffers[-1]["d_logits"], output.params["W"], output.grads["W"]
        jobs = []
        for k in range(len(self.groups) - 1, -1, -1):
            group, arrays = self.groups[k], buffers[k]
            dense, norm = group.dense, group.norm
            cut = column_cut(n, dense.n_in, dense.n_out)
            bn = (None,) * 5 if norm is None else (
                arrays["centred"], arrays["inv_std"], norm.params["gamma"], norm.grads["gamma"], norm.grads["beta"])
            jobs.append((_backward_block, len(blocks(*cut)), (
                cut, d_above, W_above, dW_above, arrays["a"], arrays["slope"], *bn, dense.grads["b"], arrays["dy"]),
                _worth(n * d_above.shape[1] * dense.n_out, n * dense.n_out, BACKWARD_PASSES)))
            d_above, W_above, dW_above = arrays["dy"], dense.params["W"], None
        plan = self._plan(n, optimizer)
        flat = (None,) * 4 if optimizer is None else optimizer.flat_arguments()
        states = () if optimizer is None else optimizer.state_vectors()
        layer_arrays = [array for group, x, arrays in zip(self.groups, self._inputs, buffers, strict=False)
                        for array in (x, arrays["dy"], group.dense.grads["W"])]
        # A weight gradient of one block is not worth a hand-off (the SGD MLP's, 784-256-128-10,
        # ran 10% slower at 2 workers handed over, when its layers were one block each): spread
        # when the plan cuts some layer's in more than one, i.e. has more gradient tasks than layers.
        spread = sum(task[0] >= 0 for task in plan) > len(self.groups)
        jobs.append((_weights_block, len(plan), (plan, optimizer, *flat, len(states), *states, *layer_arrays),
                     {} if spread else {"elements": 0}))
        return jobs

    def _plan(self, n: int, optimizer: Optimizer | None) -> tuple:
        """The weights job's tasks: each hidden dense layer's weight gradient by blocks of input
        rows (Dense.weight_blocks at the step's floor), each with the update of its rows; then,
        under an optimizer, the update of everything else in the flat vectors (the output layer,
        biases, batch-norm scales) in pieces of its block."""
        tasks = [(k, r.start, r.stop, self.weights[id(group.dense)].start)
                 for k, group in enumerate(self.groups) for r in group.dense.weight_blocks(n, CHAINED_PRODUCT)]
        if optimizer is not None:
            for run in self.rest:
                tasks += [(-1, run.start + piece.start, run.start + piece.stop, 0)
                          for piece in blocks(run.stop - run.start, optim.STEP_BLOCK)]
        return tuple(tasks)


def _held(optimizer: Optimizer | None) -> tuple:
    """What a step's jobs hold of `optimizer` (ColumnStep._prepared): the optimiser, its step's
    vectors and numbers, its state vectors; nothing without one."""
    if optimizer is None:
        return ()
    return (optimizer, *optimizer.flat_arguments(), *optimizer.state_vectors())


#: Fewest multiply-adds in a block of the step's products. Layer by layer a block is worth a
#: hand-off of its own (parallel.MIN_PRODUCT, 16M: some 60-100 us there and back on a 2-vCPU VM,
#: a sleeping helper woken each time). Here a step's jobs go to the workers in one chain, and a
#: block's task costs no hand-off: the workers are awake for the chain, and a task only waits
#: for the job before it to end (the board's count) and packs its operands again, a few
#: microseconds, but with one worker each block costs BLAS a packing of its operands and the
#: step more calls. So a block need be worth no more than that: 4M multiply-adds take 40-100 us
#: on one core of any recent x86 (40-100 GMAC/s). On the SGD MLP (784-256-128-10, batch 128)
#: this cuts the first layer's products (26M multiply-adds) in two, its weight gradient in
#: four, where MIN_PRODUCT kept each whole and the step on one worker; the second layer's (4M)
#: stay whole: at 2M too they gained nothing at 2 workers and cost 2% more at one.
CHAINED_PRODUCT = 1 << 22


def column_cut(n: int, depth: int, width: int) -> tuple[int, int]:
    """The cut of a group's `width` features into blocks, for a product (n, depth) @ (depth,
    width): fixed by the sizes, never by the workers (blocks(*cut) are the blocks)."""
    return width, product_block(n, depth, width, least=CHAINED_PRODUCT)


#: Passes over a block's values, about, of a group's forward (bias, batch norm, activation,
#: dropout) and backward: what the jobs' element-wise work costs where their products are too
#: small to count (see _worth).
FORWARD_PASSES, BACKWARD_PASSES = 16, 10


def _worth(products: int, elements: int, passes: int) -> dict:
    """run_kernel's arguments for a job of `products` multiply-adds and element-wise work over
    `elements` values, `passes` times: products of CHAINED_PRODUCT or more always spread over the
    workers; a job of smaller ones is element-wise work, which the pool gives to its helpers
    only when it is large enough to pay for the hand-off (parallel.PARALLEL_MIN, PROCESS_MIN).
    The top group's backward in the default recipe (its gradient comes from the 10 logits) is
    such a job: 0.18 ms in the caller alone, 0.19 ms as two tasks of a thread and a process."""
    return {} if products >= CHAINED_PRODUCT else {"elements": elements, "passes": passes}


# The jobs' kernels: module-level functions of arrays, so that a helper process runs them too
# (processes.py). Block i of a group's features is blocks(*cut)[i].


def panel(flat: np.ndarray, rows: int, c: slice) -> np.ndarray:
    """Block c of a panel array (see ColumnStep._group_buffers): its (rows, block) values."""
    return flat[rows * c.start : rows * c.stop].reshape(rows, c.stop - c.start)


def _forward_block(i: int, cut: tuple[int, int], x, W, b, gamma, beta, running_mean, running_var, centred, inv_std,
                   momentum: float, eps: float, alpha: float, slope, out, threshold: int, key, step, a) -> None:
    """Block i of a group's output features: product, bias, [batch norm], activation, [dropout],
    into the block's columns of `a`."""
    c, n = blocks(*cut)[i], x.shape[0]
    h, s = panel(out, n, c), panel(slope, n, c)
    np.matmul(x, W[:, c], out=h)
    h += b[c]
    if gamma is not None:
        _normalise_columns(h, gamma[c], beta[c], running_mean[c], running_var[c], panel(centred, n, c), inv_std[c],
                           momentum, eps)
    find_slope(h, alpha, s)
    if threshold:
        # Dropout's mask joins the activation's slope: backward needs only their product.
        m = thread_scratch("column mask", h.shape, h.dtype)
        _draw_mask(m, threshold, (*key, int(step[0]), i))
        s *= m
    np.multiply(h, s, out=a[:, c])


def _normalise_columns(h, gamma, beta, running_mean, running_var, centred, inv_std, momentum: float, eps: float) -> None:
    """Batch norm of h's features over its rows, in place; keeps h - mean and 1/std for backward
    and updates the running estimates, as BatchNorm.forward does (there by blocks of rows).

    BatchNorm keeps xhat = (h - mean) / std; here the centred values are kept and the 1/std
    joins gamma, out = (h - mean) * (gamma / std) + beta: a pass fewer over the block, and
    backward folds 1/std into its per-feature factors instead."""
    dtype, n = h.dtype.type, h.shape[0]
    mean = thread_scratch("column mean", (h.shape[1],), h.dtype)
    var = thread_scratch("column var", (h.shape[1],), h.dtype)
    sum_rows(h, mean)
    mean /= dtype(n)
    np.subtract(h, mean, out=centred)
    sum_rows(np.square(centred, out=h), var)
    var /= dtype(n)
    update_running(running_mean, mean, momentum)
    update_running(running_var, var, momentum)
    np.add(var, dtype(eps), out=inv_std)
    np.sqrt(inv_std, out=inv_std)
    np.divide(1, inv_std, out=inv_std)
    np.multiply(centred, np.multiply(gamma, inv_std, out=var), out=h)
    h += beta


def _draw_mask(mask, threshold: int, key: tuple[int, ...]) -> None:
    """Dropout's mask (layers.draw_mask) from a generator of the block's own, keyed by (seed,
    group, step, block): no state carried between steps."""
    draw_mask(np.random.SFC64(np.random.SeedSequence(key)), threshold, mask)


def _backward_block(i: int, cut: tuple[int, int], d_above, W_above, dW_above, a, slope, centred, inv_std, gamma,
                    dgamma, dbeta, db, dy) -> None:
    """Block i of a group's features going back: their gradient from the layer above (and, when
    that is the output layer, its weight gradient's rows for these features), then dropout and
    activation (their slope) and batch norm backward into the block's columns of dy, and the
    dense bias's gradient."""
    c, n = blocks(*cut)[i], d_above.shape[0]
    da = thread_scratch("column gradient", (n, c.stop - c.start), d_above.dtype)
    np.matmul(d_above, W_above[c].T, out=da)
    if dW_above is not None:
        np.matmul(a[:, c].T, d_above, out=dW_above[c])
    da *= panel(slope, n, c)
    if centred is not None:
        xc, work = panel(centred, n, c), thread_scratch("column work", da.shape, da.dtype)
        inv, scale = inv_std[c], thread_scratch("column scale", (c.stop - c.start,), da.dtype)
        sum_rows(da, dbeta[c])
        # dgamma = sum(dout * xhat), xhat = centred / std.
        sum_rows(np.multiply(da, xc, out=work), dgamma[c])
        dgamma[c] *= inv
        # dx = gamma / std * (dout - xhat * dgamma / n - dbeta / n), as BatchNorm.backward.
        np.multiply(inv, dgamma[c] / n, out=scale)
        np.multiply(xc, scale, out=work)
        work += dbeta[c] / n
        da -= work
        da *= np.multiply(gamma[c], inv, out=scale)
    sum_rows(da, db[c])
    dy[:, c] = da


def _loss_block(i: int, a, W, b, labels, label_smoothing: float, logits, d_logits, db, outcome) -> None:
    """The output layer's forward (as Dense.forward: a @ W, then + b), the correct predictions
    and the loss, its gradient into d_logits and the output bias's into db, as the trainer and
    ColumnStep.backward make them; outcome = (mean loss, correct predictions)."""
    np.matmul(a, W, out=logits)
    logits += b
    # Overflow in a diverging run is reported by the trainer, from the loss.
    with np.errstate(over="ignore", invalid="ignore"):
        outcome[0], _, outcome[1] = training_loss(logits, labels, label_smoothing, out=d_logits)
    sum_rows(d_logits, db)


def _weights_block(i: int, plan: tuple, rule, w, g, tmp, numbers, n_states: int, *arrays) -> None:
    """Task i of the weights job: a dense layer's weight gradient for a block of input rows
    (x.T @ dy, as Dense.backward), then the optimiser's update of the flat entries it covers."""
    k, start, stop, flat_start = plan[i]
    states, layers = arrays[:n_states], arrays[n_states:]
    if k >= 0:
        x, dy, dW = layers[3 * k : 3 * k + 3]
        np.matmul(x[:, start:stop].T, dy, out=dW[start:stop])
        if rule is None:
            return
        width = dW.shape[1]
        start, stop = flat_start + start * width, flat_start + stop * width
    rule.apply_numbered(slice(start, stop), w, g, tmp, numbers, states)
