"""Layers: each keeps its parameters and their gradients side by side, backward beside forward.

A layer maps a batch `x` of shape (n, *features) to a batch of outputs. `forward(x, train)`
remembers what `backward` needs; `backward(dout, need_dx)` writes the gradients of the
parameters into `grads` (overwriting, never accumulating) and returns the gradient with
respect to `x`, or None when the caller does not need it (the first layer of a network).

A layer on its own is a plain function of its arguments: it returns new arrays and leaves the
arrays it is given as they were (identity layers, a reshape or dropout at inference, return what
they are given, as NumPy's reshape returns a view). Inside a Model it is `chained` (see
Layer.chained), and then saves memory traffic: its results live in buffers it reuses, and
activations and dropout write over the array they are given; the Model makes sure no array the
caller holds is ever one of these.
Everything follows the dtype of the parameters (float32 in a network, float64 in gradient
checks); nothing is upcast on the way.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mnist_pipeline.nn import parallel
from mnist_pipeline.nn.parallel import SERIAL, Job, Workers, blocks, product_block, row_block


def sum_rows(a: np.ndarray, out: np.ndarray) -> None:
    """out (m,) = a (n, m) summed over rows, as ones (n,) @ a: BLAS does it 2-3x faster than np.sum.

    Safe from several threads at once: a vector of ones only ever grows, and is replaced whole,
    so whichever one a thread fetched holds ones enough for its rows.
    """
    ones = _ONES.get(a.dtype)
    if ones is None or len(ones) < a.shape[0]:
        ones = _ONES[a.dtype] = np.ones(max(a.shape[0], 1024), a.dtype)
    np.matmul(ones[: a.shape[0]], a, out=out)


_ONES: dict[np.dtype, np.ndarray] = {}


class Layer:
    """Base of every layer: no parameters, no state, identity spec."""

    kind = "layer"
    #: names of the parameters that weight decay applies to (weights, never biases or scales)
    decay: tuple[str, ...] = ()
    #: the threads element-wise work is split over (Model.set_workers sets them for training)
    workers: Workers = SERIAL
    #: Set by Model for the layers of its chain. Off, results are new arrays and arguments are
    #: left alone. On, results are kept in buffers reused at the layer's next call (so a result
    #: is valid until then), and a layer that `overwrites` writes its output over its input and
    #: its input gradient over `dout`. A Model hands each array to exactly one layer and reads
    #: none of them again, and turns this on only where the array is one of the chain's own.
    chained = False
    #: whether this layer, chained, writes over the array it is given (forward or backward)
    overwrites = False
    #: whether forward and backward return arrays of their own (False: views of, or the very
    #: arrays they are given, as reshape does, or what they overwrote)
    makes_new_arrays = True

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        #: state that is saved with the model but not trained, e.g. batch-norm running means
        self.buffers: dict[str, np.ndarray] = {}
        self._scratch: dict[str, np.ndarray] = {}

    def spec(self) -> dict:
        """JSON-able description; `type(**spec without 'type')` rebuilds the layer."""
        return {"type": self.kind}

    def initialize(self, initialiser, rng: np.random.Generator) -> None:
        """Fill the parameters with their starting values (no-op without parameters)."""

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of one output example given the shape of one input example."""
        return shape

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        raise NotImplementedError

    def _buffer(self, name: str, shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
        """A scratch array kept between calls; reallocated (and filled) only when the shape or dtype changes.

        Under workers with helper processes it lives in their shared arena (kept at the largest
        size asked for, a smaller shape taking the front), so that they can write it. Scratch of
        a worker's own, inside a task, is parallel.thread_scratch.
        """
        buf = self._scratch.get(name)
        if buf is None or buf.shape != shape or buf.dtype != dtype:
            arena = self.workers.arena
            if arena is None:
                buf = np.empty(shape, dtype)
            else:
                nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
                room = self._scratch.get((name, "arena"))
                if room is None or room.size < nbytes or arena.locate(room) is None:
                    room = self._scratch[(name, "arena")] = arena.empty(nbytes, np.uint8)
                buf = room[:nbytes].view(dtype).reshape(shape)
            if fill is not None:
                buf[...] = fill
            self._scratch[name] = buf
        return buf

    def _result(self, name: str, shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
        """An array for a result handed back to the caller: a reused buffer when chained, else a new one."""
        if self.chained:
            return self._buffer(name, shape, dtype, fill)
        return np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)

    def _over(self, a: np.ndarray) -> np.ndarray | None:
        """The `out=` of a result that may be written over `a`: a itself when chained, else None (new)."""
        return a if self.chained else None

    def _keep(self, x: np.ndarray) -> np.ndarray:
        """`x`, to be read again by backward: chained, the array itself (no one writes it before
        then); on its own, a copy, so that whatever the caller does with x later changes nothing."""
        return x if self.chained else x.copy()

    def _add_param(self, name: str, shape: tuple[int, ...], dtype) -> None:
        self.params[name] = np.zeros(shape, dtype)
        self.grads[name] = np.zeros(shape, dtype)


class Dense(Layer):
    """Fully connected: x (n, n_in) @ W (n_in, n_out) + b (n_out,).

    Large products are cut into blocks of output (forward) or input (backward) features, each
    a single-threaded BLAS call that whichever worker is free runs: a block of columns is a
    product of its own, so the result does not depend on the number of workers.
    """

    kind = "dense"
    decay = ("W",)

    def __init__(self, n_in: int, n_out: int, dtype=np.float32) -> None:
        super().__init__()
        self.n_in, self.n_out = int(n_in), int(n_out)
        self._add_param("W", (self.n_in, self.n_out), dtype)
        self._add_param("b", (self.n_out,), dtype)

    def spec(self) -> dict:
        return {"type": self.kind, "n_in": self.n_in, "n_out": self.n_out}

    def initialize(self, initialiser, rng: np.random.Generator) -> None:
        W = self.params["W"]
        W[...] = initialiser(rng, W.shape, self.n_in, self.n_out)
        self.params["b"][...] = 0

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (self.n_out,)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._x = self._keep(x)
        W, b = self.params["W"], self.params["b"]
        out = self._result("out", (x.shape[0], self.n_out), W.dtype)

        def columns(c: slice) -> None:
            np.matmul(x, W[:, c], out=out[:, c])
            out[:, c] += b[c]

        self.workers.map_blocks(columns, self.n_out, product_block(x.shape[0], self.n_in, self.n_out))
        return out

    def weight_blocks(self, rows: int, least: int | None = None) -> tuple[slice, ...]:
        """The blocks of input features backward cuts its products into, for a batch of `rows`;
        `least`: the fewest multiply-adds in a block (product_block's; MIN_PRODUCT unless given)."""
        return blocks(self.n_in, product_block(rows, self.n_out, self.n_in, least))

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        dx, job = self.backward_deferred(dout, need_dx)
        self.workers.wait(job)
        return dx

    def backward_deferred(self, dout: np.ndarray, need_dx: bool = True,
                          update: Callable[[int, int], None] | None = None) -> tuple[np.ndarray | None, Job]:
        """backward, returning as soon as dx and the bias gradient are ready: (dx, job).

        The weight gradient is a job handed to the other workers (Workers.submit), so that the
        layers below go on with dx meanwhile; it is final once `workers.wait(job)` returns.
        `update(start, stop)`, if given, is called as soon as the flat entries [start, stop) of
        W's gradient are final, on the same worker (while they are in cache): the trainer makes
        the optimiser's step there. dx is computed first, from W as it was.
        """
        x, W, dW = self._x, self.params["W"], self.grads["W"]
        dx = self._result("dx", x.shape, dout.dtype) if need_dx else None
        # Input feature block r: its rows of dW and its columns of dx. x.T is a transposed
        # view: BLAS reads it with its transpose flag, nothing is copied.
        slices = self.weight_blocks(x.shape[0])

        def grad_rows(i: int) -> None:
            r = slices[i]
            np.matmul(x[:, r].T, dout, out=dW[r])
            if update is not None:
                update(r.start * self.n_out, r.stop * self.n_out)

        if update is None:
            # Nothing changes W: the helpers take dW's blocks while this thread computes dx.
            job = self.workers.submit(grad_rows, len(slices))
        if dx is not None:
            self.workers.run(lambda i: np.matmul(dout, W[slices[i]].T, out=dx[:, slices[i]]), len(slices))
        if update is not None:
            job = self.workers.submit(grad_rows, len(slices))
        sum_rows(dout, self.grads["b"])
        return dx, job

class Dropout(Layer):
    """Inverted dropout: zero each input with probability `rate`, scale the rest by 1/(1-rate).

    Scaling at training time means inference is the identity. `rng` is set by the trainer so
    that the masks follow the run's seed. Each block of the mask (parallel.blocks) is drawn from
    its own generator, spawned from `rng` once, so that workers draw blocks side by side and a
    mask is the same whichever worker draws which block.

    A unit is dropped when a random 16-bit integer is below round(rate * 65536): one 64-bit draw
    gives four units, against one draw per unit for random floats, which made the mask cost more
    than the multiply. The rate is thereby a multiple of 1/65536 (0.4 becomes 0.399994); the
    scale uses that same rate, so each unit's expected output is still its input.
    """

    kind = "dropout"
    LEVELS = 1 << 16
    overwrites, makes_new_arrays = True, False

    def __init__(self, rate: float) -> None:
        super().__init__()
        if not 0.0 <= rate < 1.0:
            raise ValueError(f"dropout rate {rate!r}: expected 0 <= rate < 1")
        self.rate = float(rate)
        self.rng = np.random.default_rng(0)

    @property
    def rng(self) -> np.random.Generator:
        return self._rng

    @rng.setter
    def rng(self, rng: np.random.Generator) -> None:
        self._rng, self._block_rngs = rng, []

    def spec(self) -> dict:
        return {"type": self.kind, "rate": self.rate}

    @property
    def threshold(self) -> int:
        """A unit is dropped when its 16-bit draw is below this (0: the layer drops nothing)."""
        return round(self.rate * self.LEVELS)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        threshold = self.threshold
        self._train = train and threshold > 0
        if not self._train:
            return x
        x = np.ascontiguousarray(x)
        mask = self._buffer("mask", x.shape, x.dtype)
        # Never over x, even chained: a tanh or sigmoid before us keeps its output for its own backward.
        out = self._result("out", x.shape, x.dtype)
        flat_x, flat_mask, flat_out = x.reshape(-1), mask.reshape(-1), out.reshape(-1)
        slices = blocks(flat_x.size, parallel.BLOCK)
        if len(self._block_rngs) < len(slices):
            self._block_rngs += self._rng.spawn(len(slices) - len(self._block_rngs))

        def block(i: int) -> None:
            s = slices[i]
            draw_mask(self._block_rngs[i].bit_generator, threshold, flat_mask[s])
            np.multiply(flat_x[s], flat_mask[s], out=flat_out[s])

        self.workers.run(block, len(slices), flat_x.size)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if not need_dx:
            return None
        if not self._train:
            return dout
        return np.multiply(dout, self._scratch["mask"], out=self._over(dout))


def draw_mask(bit_generator: np.random.BitGenerator, threshold: int, mask: np.ndarray) -> None:
    """Dropout's mask, drawn into `mask` (any shape): each unit kept when its 16-bit draw is at
    least `threshold`, and then scaled by 1 / keep probability; one 64-bit draw gives four units."""
    size = mask.size
    bits = bit_generator.random_raw(-(-size // 4)).view(np.uint16)[:size]
    # A comparison into a float array gives the 0/1 mask without a boolean temporary.
    np.greater_equal(bits.reshape(mask.shape), threshold, out=mask)
    mask *= mask.dtype.type(Dropout.LEVELS / (Dropout.LEVELS - threshold))


def update_running(running: np.ndarray, batch_value: np.ndarray, momentum: float) -> None:
    """A batch norm's running estimate: running = momentum * running + (1 - momentum) * batch_value."""
    m = running.dtype.type(momentum)
    running *= m
    running += (1 - m) * batch_value


class BatchNorm(Layer):
    """Batch normalisation over every axis but the last (features, or channels of NHWC maps).

    Training normalises with the batch's mean and variance and updates running estimates
    (exponential average, `momentum` = weight of the old value); inference uses the estimates.
    """

    kind = "batch_norm"

    def __init__(self, n_features: int, momentum: float = 0.9, eps: float = 1e-5, dtype=np.float32) -> None:
        super().__init__()
        self.n_features, self.momentum, self.eps = int(n_features), float(momentum), float(eps)
        self._add_param("gamma", (self.n_features,), dtype)
        self._add_param("beta", (self.n_features,), dtype)
        self.params["gamma"][...] = 1
        self.buffers = {
            "running_mean": np.zeros(self.n_features, dtype),
            "running_var": np.ones(self.n_features, dtype),
        }

    def spec(self) -> dict:
        return {"type": self.kind, "n_features": self.n_features, "momentum": self.momentum, "eps": self.eps}

    def initialize(self, initialiser, rng: np.random.Generator) -> None:
        self.params["gamma"][...] = 1
        self.params["beta"][...] = 0
        self.buffers["running_mean"][...] = 0
        self.buffers["running_var"][...] = 1

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        gamma, beta = self.params["gamma"], self.params["beta"]
        x2 = x.reshape(-1, self.n_features)
        out = self._result("out", x2.shape, gamma.dtype)
        xhat = self._buffer("xhat", x2.shape, gamma.dtype)
        self._train, self._shape = train, x.shape
        cut = (len(x2), row_block(self.n_features))
        slices = blocks(*cut)
        run = self.workers.run_kernel
        if train:
            # Sums over the rows, as one sum per block of rows added up in block order: the same
            # bytes however many workers compute the blocks.
            n = x2.shape[0]
            sums = self._buffer("sums", (len(slices), self.n_features), gamma.dtype)
            run(_batch_sums, len(slices), cut, x2, sums, elements=x2.size)
            mean = sums.sum(axis=0) / gamma.dtype.type(n)
            run(_batch_centre, len(slices), cut, x2, mean, xhat, out, sums, elements=x2.size, passes=3)
            var = sums.sum(axis=0) / gamma.dtype.type(n)
            update_running(self.buffers["running_mean"], mean, self.momentum)
            update_running(self.buffers["running_var"], var, self.momentum)
        else:
            var = self.buffers["running_var"]
        self._inv_std = 1.0 / np.sqrt(var + gamma.dtype.type(self.eps))
        running_mean = None if train else self.buffers["running_mean"]
        run(_normalise, len(slices), cut, x2, running_mean, self._inv_std, gamma, beta, xhat, out,
            elements=x2.size, passes=3 if train else 4)
        return out.reshape(x.shape)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        d2 = dout.reshape(-1, self.n_features)
        xhat = self._scratch["xhat"]
        cut = (len(d2), row_block(self.n_features))
        slices = blocks(*cut)
        dx = self._result("dx", d2.shape, d2.dtype)
        sums = self._buffer("grad sums", (2, len(slices), self.n_features), d2.dtype)
        run = self.workers.run_kernel
        run(_parameter_grads, len(slices), cut, d2, xhat, dx, sums, elements=d2.size, passes=3)
        dbeta, dgamma = self.grads["beta"], self.grads["gamma"]
        np.sum(sums[0], axis=0, out=dbeta)
        np.sum(sums[1], axis=0, out=dgamma)
        if not need_dx:
            return None
        scale = self.params["gamma"] * self._inv_std
        n = d2.shape[0]
        # In training the batch statistics depend on every input too:
        # dx = gamma / (n * std) * (n * dout - sum(dout) - xhat * sum(dout * xhat))
        shift = (dgamma / n, dbeta / n) if self._train else (None, None)
        run(_input_grad, len(slices), cut, d2, xhat, *shift, scale, dx, elements=d2.size,
            passes=4 if self._train else 2)
        return dx.reshape(self._shape)


# BatchNorm's work on block i of rows, blocks(*cut)[i]: module-level functions of arrays, so
# that a helper process can run them too (Workers.run_kernel).


def _batch_sums(i: int, cut: tuple[int, int], x2: np.ndarray, sums: np.ndarray) -> None:
    sum_rows(x2[blocks(*cut)[i]], sums[i])


def _batch_centre(i: int, cut: tuple[int, int], x2: np.ndarray, mean: np.ndarray, xhat: np.ndarray,
                  out: np.ndarray, sums: np.ndarray) -> None:
    """xhat = x - mean on the block, and the block's sums of squares (out as scratch)."""
    s = blocks(*cut)[i]
    np.subtract(x2[s], mean, out=xhat[s])
    sum_rows(np.square(xhat[s], out=out[s]), sums[i])


def _normalise(i: int, cut: tuple[int, int], x2: np.ndarray, running_mean: np.ndarray | None,
               inv_std: np.ndarray, gamma: np.ndarray, beta: np.ndarray, xhat: np.ndarray, out: np.ndarray) -> None:
    """out = gamma * xhat + beta, xhat scaled by inv_std; at inference (running_mean) xhat is made here."""
    s = blocks(*cut)[i]
    if running_mean is not None:
        np.subtract(x2[s], running_mean, out=xhat[s])
    xhat[s] *= inv_std
    np.multiply(xhat[s], gamma, out=out[s])
    out[s] += beta


def _parameter_grads(i: int, cut: tuple[int, int], d2: np.ndarray, xhat: np.ndarray, dx: np.ndarray,
                     sums: np.ndarray) -> None:
    """The block's sums of dout and of dout * xhat (dx as scratch): beta's and gamma's gradients."""
    s = blocks(*cut)[i]
    sum_rows(d2[s], sums[0, i])
    sum_rows(np.multiply(d2[s], xhat[s], out=dx[s]), sums[1, i])


def _input_grad(i: int, cut: tuple[int, int], d2: np.ndarray, xhat: np.ndarray, dgamma_n: np.ndarray | None,
                dbeta_n: np.ndarray | None, scale: np.ndarray, dx: np.ndarray) -> None:
    """dx = scale * (dout - xhat dgamma / n - dbeta / n) in training, scale * dout at inference."""
    s = blocks(*cut)[i]
    if dgamma_n is not None:
        np.multiply(xhat[s], dgamma_n, out=dx[s])
        dx[s] += dbeta_n
        np.subtract(d2[s], dx[s], out=dx[s])
    else:
        dx[s] = d2[s]
    dx[s] *= scale


class Reshape(Layer):
    """Give each example a new shape, e.g. flat 784 pixels to a 28x28x1 image (a view, no copy)."""

    kind = "reshape"
    makes_new_arrays = False

    def __init__(self, shape) -> None:
        super().__init__()
        self.shape = tuple(int(s) for s in shape)

    def spec(self) -> dict:
        return {"type": self.kind, "shape": list(self.shape)}

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        # Let NumPy resolve a -1 and check the sizes, on an empty array.
        return np.empty((1, *shape), np.int8).reshape(1, *self.shape).shape[1:]

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        self._in_shape = x.shape
        return x.reshape(x.shape[0], *self.shape)

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        return dout.reshape(self._in_shape) if need_dx else None


class Flatten(Reshape):
    """Flatten each example to one vector (between the conv blocks and the dense layers)."""

    kind = "flatten"

    def __init__(self) -> None:
        super().__init__((-1,))

    def spec(self) -> dict:
        return {"type": self.kind}
