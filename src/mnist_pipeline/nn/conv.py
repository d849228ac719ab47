"""Convolution and max pooling on NHWC image batches.

Channels last, because then im2col needs no transpose: the patch matrix (n*H*W, k*k*C) times
the kernel (k*k*C, F) is the output (n, H, W, F) already in place.

Both layers work on blocks of SAMPLES images, each block's im2col, product and pooling a task
for whichever worker is free. The split depends on the batch size alone, so the results do not
depend on the number of workers; the weight gradient is summed over the blocks in order. A
block's work is a module-level kernel (_forward_block, _backward_block), so that a trainer's
helper processes can run it (Workers.run_kernel): its dozen short NumPy calls do not share well
between threads (nn/processes.py).

A block's patch matrix lives in a scratch array of the worker's own, written and read while it
is still in cache; backward builds it again rather than keep the whole batch's from forward.
The whole batch's patches are 9x its input (29 MB for 128 images of 14x14x32), and streaming
them to memory and back made the second conv layer of examples/cnn.yaml a third slower.

A convolution followed by a pool does the pooling itself (Conv2D.fuse), with the patch rows
grouped by the corner of the pooling window they fall in: the product then gives the four
corners as four contiguous arrays, which pool in a third of the time strided windows took
(31 against 97 us for 8 images of 28x28x32). The bias is added after the pool (max(a + b,
c + b) is max(a, c) + b), on a quarter of the values.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from mnist_pipeline.nn.layers import Layer, sum_rows
from mnist_pipeline.nn.parallel import blocks, thread_scratch

#: Images per block of work.
SAMPLES = 8

#: Fewer input channels than this, and a patch matrix is written tap by tap. A position's patch
#: is k rows of k*C contiguous values, too short a run to copy well: with one channel, copying
#: image rows per tap instead took 19 us per block of 8 images of 28x28, not 70 us. From four
#: channels on, copying position by position was as fast or faster (measured up to 32).
TAP_MAJOR_BELOW = 4


def _windows_of_patches(padded: np.ndarray, k: int, pooled: bool) -> np.ndarray:
    """A view of the k x k patches of a padded block of images (b, H + k - 1, W + k - 1, C).

    view[b, r, c, i, j, :] = padded[b, r + i, c + j, :], shape (b, H, W, k, k, C); or, with
    `pooled`, the outputs grouped by pooling-window corner: view[a, e, b, y, z, i, j, :] is the
    patch of output (2y + a, 2z + e), shape (2, 2, b, H // 2, W // 2, k, k, C), an odd last
    row or column left out (the pool drops it).
    """
    b, rows, cols, C = padded.shape
    H, W = rows - k + 1, cols - k + 1
    s0, s1, s2, s3 = padded.strides
    if pooled:
        shape, strides = (2, 2, b, H // 2, W // 2, k, k, C), (s1, s2, s0, 2 * s1, 2 * s2, s1, s2, s3)
    else:
        shape, strides = (b, H, W, k, k, C), (s0, s1, s2, s1, s2, s3)
    return as_strided(padded, shape, strides, writeable=False)


def _block_scratch(name: str, images: int, shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
    """The calling thread's scratch of `shape`, for a block of `images` images (on any axis).

    Sized for SAMPLES images once, so that the last, shorter block of a batch reuses it: a
    block takes the front of it. With the images on the first axis, a shorter block's images
    sit where a full block's first ones do, so what `fill` set and no block writes stays as
    filled. Each thread, and each helper process, has its own.
    """
    size = int(np.prod(shape)) // max(images, 1)
    return thread_scratch(name, (SAMPLES * size,), dtype, fill)[: images * size].reshape(shape)


def _padded(name: str, shape: tuple[int, ...], k: int, dtype, block: np.ndarray | None = None) -> np.ndarray:
    """The calling thread's zero-bordered array for a block of images of `shape` (b, H, W, C), for im2col.

    `block` is copied into its interior; without it the caller writes the interior, and what
    it leaves (the odd edge a pool drops) stays zero.
    """
    b, H, W, C = shape
    p = k // 2
    padded = _block_scratch(f"{name} padded {shape[1:]} {k}", b, (b, H + k - 1, W + k - 1, C), dtype, fill=0)
    if block is not None:
        padded[:, p : p + H, p : p + W] = block
    return padded


def _block_patches(name: str, padded: np.ndarray, k: int, pooled: bool) -> np.ndarray:
    """The patch matrix (rows, k*k*C) of a padded block, in the calling thread's scratch.

    Rows are outputs, in image order or (`pooled`) grouped by pooling-window corner; see
    _windows_of_patches. With few channels it is the transpose of a (k*k*C, rows) array.
    """
    windows = _windows_of_patches(padded, k, pooled)
    positions, taps = windows.shape[:-3], windows.shape[-3:]
    rows, depth, b = int(np.prod(positions)), int(np.prod(taps)), padded.shape[0]
    key = f"{name} patches {padded.shape[1:]} {k} {pooled}"
    if padded.shape[-1] < TAP_MAJOR_BELOW:
        patches = _block_scratch(key, b, (*taps, *positions), padded.dtype)
        n = len(positions)
        np.copyto(patches, windows.transpose(n, n + 1, n + 2, *range(n)))
        return patches.reshape(depth, rows).T
    patches = _block_scratch(key, b, windows.shape, padded.dtype)
    np.copyto(patches, windows)
    return patches.reshape(rows, depth)


# The work of one block of images, forward and backward: module-level functions of arrays, so
# that a helper process can run them (Workers.run_kernel). Block i is blocks(*cut)[i]; `won` and
# `taken` the fused pool's records (None: no pool, or no training).


def _forward_block(i: int, cut: tuple[int, int], k: int, pooled: bool, x: np.ndarray, kernel: np.ndarray,
                   bias: np.ndarray, out: np.ndarray, won: np.ndarray | None, taken: np.ndarray | None) -> None:
    s = blocks(*cut)[i]
    b, (H, W), F = s.stop - s.start, x.shape[1:3], kernel.shape[1]
    padded = _padded("x", (b, *x.shape[1:]), k, x.dtype, x[s])
    if not pooled:
        rows = out[s].reshape(-1, F)
        np.matmul(_block_patches("x", padded, k, pooled=False), kernel, out=rows)
        rows += bias
        return
    corners = _block_scratch("corners", b, (4, b, H // 2, W // 2, F), kernel.dtype)
    np.matmul(_block_patches("x", padded, k, pooled=True), kernel, out=corners.reshape(-1, F))
    _pool(list(corners), out[s], None if won is None else won[:, s], None if taken is None else taken[s])
    out[s] += bias


def _backward_block(i: int, cut: tuple[int, int], k: int, x: np.ndarray, dout: np.ndarray,
                    won: np.ndarray | None, flipped: np.ndarray | None, dW: np.ndarray, db: np.ndarray,
                    dx: np.ndarray | None) -> None:
    s = blocks(*cut)[i]
    b, (_, H, W, C), F = s.stop - s.start, x.shape, dout.shape[-1]
    padded = _padded("x", (b, H, W, C), k, x.dtype, x[s])
    # The bias gradient: over dout's values, which a fused pool has 4x fewer of.
    sum_rows(dout[s].reshape(-1, F), db[i])
    if won is None:
        dmaps = dout[s]
    else:
        dmaps = _block_scratch("dcorners", b, (4, b, H // 2, W // 2, F), dout.dtype)
        _unpool(dout[s], won[:, s], list(dmaps))
    np.matmul(_block_patches("x", padded, k, won is not None).T, dmaps.reshape(-1, F), out=dW[i])
    if dx is not None:
        dpadded = _padded(f"dout {won is not None}", (b, H, W, F), k, dout.dtype)
        p = k // 2
        inside = dpadded[:, p : p + H, p : p + W]
        if won is None:
            inside[...] = dmaps
        else:
            # Each corner back to its place in the maps.
            np.copyto(_windows(inside), dmaps.reshape(2, 2, *dmaps.shape[1:]))
        np.matmul(_block_patches("dout", dpadded, k, pooled=False), flipped, out=dx[s].reshape(-1, C))


class Conv2D(Layer):
    """k x k convolution, stride 1, zero 'same' padding: (n, H, W, C) -> (n, H, W, F).

    W has shape (k, k, C, F) and b (F,). Forward is im2col and one GEMM per block of images.
    The weight gradient is one GEMM per block, the blocks' sum taken in order. The input gradient is
    the same operation again, a 'same' convolution of dout with the kernel flipped in space
    and transposed in channels, which replaces col2im's k*k scattered additions by one copy
    and one GEMM of the same size.
    """

    kind = "conv2d"
    decay = ("W",)
    #: the max-pool layer this one pools for (see fuse), or None
    pool: MaxPool2D | None = None

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dtype=np.float32) -> None:
        super().__init__()
        if kernel_size % 2 != 1:
            raise ValueError(f"conv2d kernel_size {kernel_size}: expected an odd size ('same' padding)")
        self.in_channels, self.out_channels, self.k = int(in_channels), int(out_channels), int(kernel_size)
        self._add_param("W", (self.k, self.k, self.in_channels, self.out_channels), dtype)
        self._add_param("b", (self.out_channels,), dtype)

    def spec(self) -> dict:
        return {
            "type": self.kind,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
            "kernel_size": self.k,
        }

    def initialize(self, initialiser, rng: np.random.Generator) -> None:
        W = self.params["W"]
        fan_in, fan_out = self.k * self.k * self.in_channels, self.k * self.k * self.out_channels
        W[...] = initialiser(rng, W.shape, fan_in, fan_out)
        self.params["b"][...] = 0

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (*shape[:2], self.out_channels)

    def fuse(self, pool: MaxPool2D) -> None:
        """Pool this layer's output block by block, while each block is still in cache.

        `pool` is the max-pool layer right after this one. Each block of images is convolved
        into a scratch array of the worker's own, its rows grouped by pooling-window corner,
        and pooled from there; the whole batch's convolution output (12.8 MB for 128 images of
        28x28x32) is never written. The pool layer then passes its input through, and backward
        here unpools each block first.
        """
        self.pool, pool.fused = pool, True

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, H, W, _ = x.shape
        F = self.out_channels
        kernel, bias = self.params["W"].reshape(-1, F), self.params["b"]
        pool = self.pool
        if pool is None:
            out, won, taken = self._result("out", (n, H, W, F), kernel.dtype), None, None
        else:
            out, won, taken = pool.start_forward((n, H, W, F), kernel.dtype, train)
        cut = (n, SAMPLES)
        self.workers.run_kernel(_forward_block, len(blocks(*cut)), cut, self.k, pool is not None, x, kernel, bias,
                                out, won, taken)
        self._x = self._keep(x)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        x, pool = self._x, self.pool
        n, H, W, C = x.shape
        F = self.out_channels
        dout = np.ascontiguousarray(dout)
        slices = blocks(n, SAMPLES)
        # One weight (and bias) gradient per block, summed in block order below.
        dW = self._buffer("dW blocks", (len(slices), *self.grads["W"].reshape(-1, F).shape), dout.dtype)
        db = self._buffer("db blocks", (len(slices), F), dout.dtype)
        flipped = dx = None
        if need_dx:
            # dx[b, y, z, c] = sum over i, j, f of dout[b, y + i - p, z + j - p, f] * W[k-1-i, k-1-j, c, f]
            flipped = self._buffer("flipped", (self.k * self.k * F, C), dout.dtype)
            flipped.reshape(self.k, self.k, F, C)[...] = self.params["W"][::-1, ::-1].transpose(0, 1, 3, 2)
            dx = self._result("dx", (n, H, W, C), dout.dtype)
        won = None if pool is None else pool.won
        self.workers.run_kernel(_backward_block, len(slices), (n, SAMPLES), self.k, x, dout, won, flipped, dW, db, dx)
        np.sum(dW, axis=0, out=self.grads["W"].reshape(-1, F))
        np.sum(db, axis=0, out=self.grads["b"])
        return dx


def _windows(a: np.ndarray) -> np.ndarray:
    """(n, H, W, C) -> view (2, 2, n, H//2, W//2, C) of its 2x2 pooling windows, corner first
    (odd edges dropped): the layout of a fused conv's corners (see _windows_of_patches)."""
    n, H, W, C = a.shape
    s0, s1, s2, s3 = a.strides
    return as_strided(a, (2, 2, n, H // 2, W // 2, C), (s1, s2, s0, 2 * s1, 2 * s2, s3))


_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


def _taps(a: np.ndarray) -> list[np.ndarray]:
    """The four corners of a's 2x2 pooling windows, in _CORNERS order: views (n, H//2, W//2, C)."""
    windows = _windows(a)
    return [windows[r, c] for r, c in _CORNERS]


class MaxPool2D(Layer):
    """2 x 2 max pooling, stride 2: (n, H, W, C) -> (n, H//2, W//2, C); an odd last row/col is dropped.

    Training records which corner of each window won, the first one on ties (uniform image
    background gives equal maxima), so that exactly one input gets the gradient. Recording it
    in forward, not recomputing it in backward, lets an in-place activation follow the pool.

    After a convolution, the convolution does the pooling itself, block by block (Conv2D.fuse):
    this layer's forward and backward then pass their input through, and forward refuses any
    input but that convolution's output.
    """

    kind = "max_pool"
    fused = False
    _out: np.ndarray | None = None  # the output start_forward made, that the blocks fill

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] // 2, shape[1] // 2, shape[2])

    def start_forward(self, shape: tuple[int, ...], dtype, train: bool) -> tuple[np.ndarray, ...]:
        """Make ready to pool a batch of `shape` (n, H, W, C) block by block: (the output buffer,
        and in training the arrays that record the winners, `won` and its scratch `taken`, else None)."""
        n, H, W, C = shape
        self._in_shape = shape
        out = self._out = self._result("out", (n, H // 2, W // 2, C), dtype)
        if not train:
            return out, None, None
        return out, self._buffer("won", (4, *out.shape), np.bool_), self._buffer("taken", out.shape, np.bool_)

    @property
    def won(self) -> np.ndarray:
        """(4, *output shape) bool: which corner of each window won in the last training forward."""
        return self._scratch["won"]

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if self.fused:
            # The convolution before us has pooled already, into our own output; anything else
            # here is a misuse that would pass unpooled maps on as if pooled.
            if x is not self._out:
                raise RuntimeError("this max-pool layer is fused with the convolution before it (Conv2D.fuse): "
                                   "it takes only that convolution's output, which is already pooled")
            return x
        out, won, taken = self.start_forward(x.shape, x.dtype, train)
        self.workers.map_blocks(lambda s: _pool(_taps(x[s]), out[s], None if won is None else won[:, s],
                                                None if taken is None else taken[s]), len(x), SAMPLES, elements=x.size)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if not need_dx:
            return None
        if self.fused:
            return dout
        # Filled once when chained: odd edge rows/cols are never written, every window cell is written each time.
        dx = self._result("dx", self._in_shape, dout.dtype, fill=0)
        won = self.won
        self.workers.map_blocks(lambda s: _unpool(dout[s], won[:, s], _taps(dx[s])), len(dout), SAMPLES, elements=dx.size)
        return dx


def _pool(taps: list[np.ndarray], out: np.ndarray, won: np.ndarray | None, taken: np.ndarray | None) -> None:
    """Pool a block of images into `out`, and with `won` (training) record the winners.

    taps: the four corners of their pooling windows, each (b, H//2, W//2, C), in _CORNERS
    order: strided views of the maps, or (after a fused conv) contiguous arrays. won[t]: tap t
    equals the maximum and no earlier tap did (boolean ops are cheap); taken is its scratch.
    """
    np.maximum(taps[0], taps[1], out=out)
    np.maximum(out, taps[2], out=out)
    np.maximum(out, taps[3], out=out)
    if won is not None:
        np.equal(taps[0], out, out=won[0])
        taken[...] = won[0]
        for t in (1, 2):
            np.equal(taps[t], out, out=won[t])
            np.greater(won[t], taken, out=won[t])
            taken |= won[t]
        np.logical_not(taken, out=won[3])


def _unpool(dout: np.ndarray, won: np.ndarray, taps: list[np.ndarray]) -> None:
    """Each window's gradient (dout, a block of images) to the corner that won (won, that
    block's records), zero to the others; taps: where the four corners' gradients go."""
    for t, tap in enumerate(taps):
        np.multiply(dout, won[t], out=tap)
