"""Convolution and max pooling on NHWC image batches.

Channels last, because then im2col needs no transpose: the patch matrix (n*H*W, k*k*C) times
the kernel (k*k*C, F) is the output (n, H, W, F) already in place.

Both layers work on blocks of SAMPLES images, each block's im2col, product and pooling a task
for whichever worker is free. The split depends on the batch size alone, so the results do not
depend on the number of workers; the weight gradient is summed over the blocks in order.

A block's patch matrix lives in a scratch array of the worker's own, written and read while it
is still in cache; backward builds it again rather than keep the whole batch's from forward.
The whole batch's patches are 9x its input (29 MB for 128 images of 14x14x32), and streaming
them to memory and back made the second conv layer of examples/cnn.yaml a third slower.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from mnist_pipeline.nn.layers import Layer
from mnist_pipeline.nn.parallel import blocks

#: Images per block of work.
SAMPLES = 8


def _im2col(x: np.ndarray, k: int, padded: np.ndarray, patches: np.ndarray) -> None:
    """patches[b, r, c, i, j, :] = x[b, r + i - k//2, c + j - k//2, :], zero off the image.

    x (n, H, W, C); padded (n, H + k - 1, W + k - 1, C) whose border is zero and stays zero
    (only the interior is written); patches (n, H, W, k, k, C). One copy from a strided
    window view is several times faster than one slice assignment per kernel tap.
    """
    p = k // 2
    padded[:, p : p + x.shape[1], p : p + x.shape[2], :] = x
    windows = sliding_window_view(padded, (k, k), axis=(1, 2))  # (n, H, W, C, k, k)
    np.copyto(patches, windows.transpose(0, 1, 2, 4, 5, 3))


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

    def _block_scratch(self, name: str, images: int, shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
        """The calling thread's scratch for a block of `images` images of `shape` each: sized for
        SAMPLES images once, so that the last, shorter block of a batch reuses it."""
        return self._buffer(name, (SAMPLES, *shape), dtype, fill, per_thread=True)[:images]

    def _block_patches(self, name: str, block: np.ndarray) -> np.ndarray:
        """The patch matrix (rows, k*k*C) of a block of images (b, H, W, C), in the calling thread's scratch."""
        b, H, W, C = block.shape
        k = self.k
        padded = self._block_scratch(f"{name} padded", b, (H + k - 1, W + k - 1, C), block.dtype, fill=0)
        patches = self._block_scratch(f"{name} patches", b, (H, W, k, k, C), block.dtype)
        _im2col(block, k, padded, patches)
        return patches.reshape(b * H * W, -1)

    def fuse(self, pool: MaxPool2D) -> None:
        """Pool this layer's output block by block, while each block is still in cache.

        `pool` is the max-pool layer right after this one. Each block of images is convolved
        into a scratch array of the worker's own and pooled from there; the whole batch's
        convolution output (12.8 MB for 128 images of 28x28x32) is never written. The pool
        layer then passes its input through, and backward here unpools each block first.
        """
        self.pool, pool.fused = pool, True

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, H, W, _ = x.shape
        F = self.out_channels
        kernel, bias = self.params["W"].reshape(-1, F), self.params["b"]
        pool = self.pool
        if pool is None:
            out = self._buffer("out", (n, H, W, F), kernel.dtype)
        else:
            out = pool.start_forward((n, H, W, F), kernel.dtype, train)

        def block(s: slice) -> None:
            maps = out[s] if pool is None else self._block_scratch("maps", s.stop - s.start, (H, W, F), kernel.dtype)
            rows = maps.reshape(-1, F)
            np.matmul(self._block_patches("x", x[s]), kernel, out=rows)
            rows += bias
            if pool is not None:
                pool.pool_block(maps, s)

        self.workers.map_blocks(block, n, SAMPLES)
        self._x = x
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        x, pool = self._x, self.pool
        n, H, W, _ = x.shape
        F = self.out_channels
        dout = np.ascontiguousarray(dout)
        slices = blocks(n, SAMPLES)
        # One weight (and bias) gradient per block, summed in block order below.
        dW = self._buffer("dW blocks", (len(slices), *self.grads["W"].reshape(-1, F).shape), dout.dtype)
        db = self._buffer("db blocks", (len(slices), F), dout.dtype)
        if need_dx:
            # dx[b, y, z, c] = sum over i, j, f of dout[b, y + i - p, z + j - p, f] * W[k-1-i, k-1-j, c, f]
            flipped = np.ascontiguousarray(self.params["W"][::-1, ::-1].transpose(0, 1, 3, 2)).reshape(-1, self.in_channels)
            dx = self._buffer("dx", (n, H, W, self.in_channels), dout.dtype)

        def block(i: int) -> None:
            s = slices[i]
            if pool is None:
                dmaps = dout[s]
            else:
                # Zero-filled once: an odd last row or column gets no gradient and is never written.
                dmaps = self._block_scratch("dmaps", s.stop - s.start, (H, W, F), dout.dtype, fill=0)
                pool.unpool_block(dout[s], s, dmaps)
            d2 = dmaps.reshape(-1, F)
            np.matmul(self._block_patches("x", x[s]).T, d2, out=dW[i])
            self._sum_rows(d2, db[i])
            if need_dx:
                np.matmul(self._block_patches("dout", dmaps), flipped, out=dx[s].reshape(len(d2), -1))

        self.workers.run(block, len(slices))
        np.sum(dW, axis=0, out=self.grads["W"].reshape(-1, F))
        np.sum(db, axis=0, out=self.grads["b"])
        return dx if need_dx else None


def _windows(a: np.ndarray) -> np.ndarray:
    """(n, H, W, C) -> view (n, H//2, 2, W//2, 2, C) of its 2x2 pooling windows (odd edges dropped)."""
    n, H, W, C = a.shape
    s0, s1, s2, s3 = a.strides
    return as_strided(a, (n, H // 2, 2, W // 2, 2, C), (s0, 2 * s1, s1, 2 * s2, s2, s3))


_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


class MaxPool2D(Layer):
    """2 x 2 max pooling, stride 2: (n, H, W, C) -> (n, H//2, W//2, C); an odd last row/col is dropped.

    Training records which corner of each window won, the first one on ties (uniform image
    background gives equal maxima), so that exactly one input gets the gradient. Recording it
    in forward, not recomputing it in backward, lets an in-place activation follow the pool.

    After a convolution, the convolution does the pooling itself, block by block (Conv2D.fuse):
    this layer's forward and backward then pass their input through.
    """

    kind = "max_pool"
    fused = False

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] // 2, shape[1] // 2, shape[2])

    def start_forward(self, shape: tuple[int, ...], dtype, train: bool) -> np.ndarray:
        """Make ready to pool a batch of `shape` (n, H, W, C) block by block; returns the output buffer."""
        n, H, W, C = shape
        self._in_shape, self._train = shape, train
        out = self._buffer("out", (n, H // 2, W // 2, C), dtype)
        if train:
            self._buffer("won", (4, *out.shape), np.bool_)
            self._buffer("taken", out.shape, np.bool_)
        return out

    def pool_block(self, x: np.ndarray, s: slice) -> None:
        """Pool x, the images s of the batch, into their rows of the output."""
        out = self._scratch["out"][s]
        taps = [_windows(x)[:, :, a, :, b, :] for a, b in _CORNERS]
        np.maximum(taps[0], taps[1], out=out)
        np.maximum(out, taps[2], out=out)
        np.maximum(out, taps[3], out=out)
        if self._train:
            won, taken = self._scratch["won"][:, s], self._scratch["taken"][s]
            # won[t]: tap t equals the maximum and no earlier tap did (boolean ops are cheap).
            np.equal(taps[0], out, out=won[0])
            taken[...] = won[0]
            for t in (1, 2):
                np.equal(taps[t], out, out=won[t])
                np.greater(won[t], taken, out=won[t])
                taken |= won[t]
            np.logical_not(taken, out=won[3])

    def unpool_block(self, dout: np.ndarray, s: slice, dx: np.ndarray) -> None:
        """dx (the images s, unpooled): each window's gradient to the corner that won, zero elsewhere."""
        won = self._scratch["won"][:, s]
        windows = _windows(dx)
        for t, (a, b) in enumerate(_CORNERS):
            np.multiply(dout, won[t], out=windows[:, :, a, :, b, :])

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        if self.fused:
            return x
        out = self.start_forward(x.shape, x.dtype, train)
        self.workers.map_blocks(lambda s: self.pool_block(x[s], s), len(x), SAMPLES, elements=x.size)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if not need_dx:
            return None
        if self.fused:
            return dout
        # Filled once: odd edge rows/cols are never written, every window cell is written each time.
        dx = self._buffer("dx", self._in_shape, dout.dtype, fill=0)
        self.workers.map_blocks(lambda s: self.unpool_block(dout[s], s, dx[s]), len(dout), SAMPLES, elements=dx.size)
        return dx
