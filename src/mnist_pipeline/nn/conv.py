"""Convolution and max pooling on NHWC image batches.

Channels last, because then im2col needs no transpose: the patch matrix (n*H*W, k*k*C) times
the kernel (k*k*C, F) is the output (n, H, W, F) already in place, one GEMM per layer.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided

from mnist_pipeline.nn.layers import Layer


def _tap_slices(offset: int, size: int) -> tuple[slice, slice]:
    """For a kernel tap `offset` rows off centre: (output rows, input rows) it connects."""
    # Stops clamped at 0: a tap further off than the image is wide connects nothing (a negative
    # stop would wrap around instead).
    return slice(max(-offset, 0), max(size - offset, 0)), slice(max(offset, 0), max(size + offset, 0))


class Conv2D(Layer):
    """k x k convolution, stride 1, zero 'same' padding: (n, H, W, C) -> (n, H, W, F).

    W has shape (k, k, C, F) and b (F,). Padding is never materialised: the patch buffer is
    allocated zeroed and only the taps that land inside the image are ever written, so the
    zeros of the border stay in place from batch to batch.
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

    def _taps(self, H: int, W: int):
        """(i, j, output rows, output cols, input rows, input cols) for each kernel tap."""
        p = self.k // 2
        for i in range(self.k):
            rows_out, rows_in = _tap_slices(i - p, H)
            for j in range(self.k):
                cols_out, cols_in = _tap_slices(j - p, W)
                yield i, j, rows_out, cols_out, rows_in, cols_in

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, H, W, C = x.shape
        dtype = self.params["W"].dtype
        # im2col: patches[b, r, c, i, j, :] = x[b, r + i - p, c + j - p, :], zero off the image.
        patches = self._buffer("patches", (n, H, W, self.k, self.k, C), dtype, fill=0)
        for i, j, rows_out, cols_out, rows_in, cols_in in self._taps(H, W):
            patches[:, rows_out, cols_out, i, j, :] = x[:, rows_in, cols_in, :]
        out = self._buffer("out", (n, H, W, self.out_channels), dtype)
        np.matmul(patches.reshape(n * H * W, -1), self.params["W"].reshape(-1, self.out_channels),
                  out=out.reshape(n * H * W, -1))
        out += self.params["b"]
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        patches = self._scratch["patches"]
        n, H, W = patches.shape[:3]
        d2 = np.ascontiguousarray(dout).reshape(n * H * W, self.out_channels)
        np.matmul(patches.reshape(n * H * W, -1).T, d2, out=self.grads["W"].reshape(-1, self.out_channels))
        self._sum_rows(d2, self.grads["b"])
        if not need_dx:
            return None
        dpatches = self._buffer("dpatches", patches.shape, d2.dtype)
        np.matmul(d2, self.params["W"].reshape(-1, self.out_channels).T, out=dpatches.reshape(n * H * W, -1))
        # col2im: every tap adds its patch gradient back onto the pixels it read. The centre tap
        # covers the whole image, so it initialises dx and the other taps add onto it.
        dx = self._buffer("dx", (n, H, W, self.in_channels), d2.dtype)
        p = self.k // 2
        dx[...] = dpatches[:, :, :, p, p, :]
        for i, j, rows_out, cols_out, rows_in, cols_in in self._taps(H, W):
            if (i, j) != (p, p):
                dx[:, rows_in, cols_in, :] += dpatches[:, rows_out, cols_out, i, j, :]
        return dx


def _windows(a: np.ndarray) -> np.ndarray:
    """(n, H, W, C) -> view (n, H//2, 2, W//2, 2, C) of its 2x2 pooling windows (odd edges dropped)."""
    n, H, W, C = a.shape
    s0, s1, s2, s3 = a.strides
    return as_strided(a, (n, H // 2, 2, W // 2, 2, C), (s0, 2 * s1, s1, 2 * s2, s2, s3))


_CORNERS = ((0, 0), (0, 1), (1, 0), (1, 1))


class MaxPool2D(Layer):
    """2 x 2 max pooling, stride 2: (n, H, W, C) -> (n, H//2, W//2, C); an odd last row/col is dropped.

    Training remembers which corner of each window won (the first one on ties, so exactly one
    input gets the gradient), rather than recomputing it in backward from an output that an
    in-place layer after this one may have changed.
    """

    kind = "max_pool"

    def output_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return (shape[0] // 2, shape[1] // 2, shape[2])

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, H, W, C = x.shape
        self._in_shape = x.shape
        taps = [_windows(x)[:, :, a, :, b, :] for a, b in _CORNERS]
        out = self._buffer("out", (n, H // 2, W // 2, C), x.dtype)
        if not train:
            np.maximum(taps[0], taps[1], out=out)
            np.maximum(out, taps[2], out=out)
            np.maximum(out, taps[3], out=out)
            return out
        winner = self._buffer("winner", out.shape, np.uint8)
        better = self._buffer("better", out.shape, np.bool_)
        np.copyto(out, taps[0])
        winner.fill(0)
        for t in (1, 2, 3):
            np.greater(taps[t], out, out=better)
            np.copyto(out, taps[t], where=better)
            np.copyto(winner, t, where=better)
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if not need_dx:
            return None
        # Zeroed once: odd edge rows/cols are never written, every window cell is written each time.
        dx = self._buffer("dx", self._in_shape, dout.dtype, fill=0)
        hit = self._scratch["better"]
        windows = _windows(dx)
        for t, (a, b) in enumerate(_CORNERS):
            np.equal(self._scratch["winner"], t, out=hit)
            np.multiply(dout, hit, out=windows[:, :, a, :, b, :])
        return dx
