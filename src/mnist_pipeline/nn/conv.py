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

    def _block_patches(self, name: str, block: np.ndarray) -> np.ndarray:
        """The patch matrix (rows, k*k*C) of a block of images (b, H, W, C), in the calling thread's scratch."""
        b, H, W, C = block.shape
        k = self.k
        padded = self._buffer(f"{name} padded", (SAMPLES, H + k - 1, W + k - 1, C), block.dtype, fill=0, per_thread=True)
        patches = self._buffer(f"{name} patches", (SAMPLES, H, W, k, k, C), block.dtype, per_thread=True)
        _im2col(block, k, padded[:b], patches[:b])
        return patches[:b].reshape(b * H * W, -1)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, H, W, _ = x.shape
        kernel, bias = self.params["W"].reshape(-1, self.out_channels), self.params["b"]
        out = self._buffer("out", (n, H, W, self.out_channels), kernel.dtype)

        def block(s: slice) -> None:
            rows = out[s].reshape(-1, self.out_channels)
            np.matmul(self._block_patches("x", x[s]), kernel, out=rows)
            rows += bias

        self.workers.map_blocks(block, n, SAMPLES)
        self._x = x
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        n, H, W, F = dout.shape
        dout = np.ascontiguousarray(dout)
        slices = blocks(n, SAMPLES)
        # One weight (and bias) gradient per block, summed in block order below.
        dW = self._buffer("dW blocks", (len(slices), *self.grads["W"].reshape(-1, F).shape), dout.dtype)
        db = self._buffer("db blocks", (len(slices), F), dout.dtype)
        x = self._x
        if need_dx:
            # dx[b, y, z, c] = sum over i, j, f of dout[b, y + i - p, z + j - p, f] * W[k-1-i, k-1-j, c, f]
            flipped = np.ascontiguousarray(self.params["W"][::-1, ::-1].transpose(0, 1, 3, 2)).reshape(-1, self.in_channels)
            dx = self._buffer("dx", (n, H, W, self.in_channels), dout.dtype)

        def block(i: int) -> None:
            s = slices[i]
            d2 = dout[s].reshape(-1, F)
            np.matmul(self._block_patches("x", x[s]).T, d2, out=dW[i])
            self._sum_rows(d2, db[i])
            if need_dx:
                np.matmul(self._block_patches("dout", dout[s]), flipped, out=dx[s].reshape(len(d2), -1))

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
    """

    kind = "max_pool"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] // 2, shape[1] // 2, shape[2])

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, H, W, C = x.shape
        self._in_shape = x.shape
        out = self._buffer("out", (n, H // 2, W // 2, C), x.dtype)
        if train:
            won = self._buffer("won", (4, *out.shape), np.bool_)
            taken = self._buffer("taken", out.shape, np.bool_)

        def block(s: slice) -> None:
            taps = [_windows(x[s])[:, :, a, :, b, :] for a, b in _CORNERS]
            np.maximum(taps[0], taps[1], out=out[s])
            np.maximum(out[s], taps[2], out=out[s])
            np.maximum(out[s], taps[3], out=out[s])
            if train:
                # won[t]: tap t equals the maximum and no earlier tap did (boolean ops are cheap).
                np.equal(taps[0], out[s], out=won[0, s])
                taken[s] = won[0, s]
                for t in (1, 2):
                    np.equal(taps[t], out[s], out=won[t, s])
                    np.greater(won[t, s], taken[s], out=won[t, s])
                    taken[s] |= won[t, s]
                np.logical_not(taken[s], out=won[3, s])

        self.workers.map_blocks(block, n, SAMPLES, elements=x.size)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if not need_dx:
            return None
        # Filled once: odd edge rows/cols are never written, every window cell is written each time.
        dx = self._buffer("dx", self._in_shape, dout.dtype, fill=0)
        won = self._scratch["won"]

        def block(s: slice) -> None:
            windows = _windows(dx[s])
            for t, (a, b) in enumerate(_CORNERS):
                np.multiply(dout[s], won[t, s], out=windows[:, :, a, :, b, :])

        self.workers.map_blocks(block, len(dout), SAMPLES, elements=dx.size)
        return dx
