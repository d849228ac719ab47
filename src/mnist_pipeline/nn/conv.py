"""Convolution and max pooling on NHWC image batches.

Channels last, because then im2col needs no transpose: the patch matrix (n*H*W, k*k*C) times
the kernel (k*k*C, F) is the output (n, H, W, F) already in place, one GEMM per layer.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import as_strided, sliding_window_view

from mnist_pipeline.nn.layers import Layer


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

    W has shape (k, k, C, F) and b (F,). Forward is im2col and one GEMM. The input gradient is
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

    def _patches(self, name: str, x: np.ndarray) -> np.ndarray:
        """im2col of x (n, H, W, C) into buffers named after `name`, as (n*H*W, k*k*C)."""
        n, H, W, C = x.shape
        padded = self._buffer(f"{name} padded", (n, H + self.k - 1, W + self.k - 1, C), x.dtype, fill=0)
        patches = self._buffer(f"{name} patches", (n, H, W, self.k, self.k, C), x.dtype)
        _im2col(x, self.k, padded, patches)
        return patches.reshape(n * H * W, -1)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        n, H, W, _ = x.shape
        dtype = self.params["W"].dtype
        self._patches_x = self._patches("x", x)
        out = self._buffer("out", (n, H, W, self.out_channels), dtype)
        np.matmul(self._patches_x, self.params["W"].reshape(-1, self.out_channels), out=out.reshape(n * H * W, -1))
        out += self.params["b"]
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        n, H, W, F = dout.shape
        d2 = np.ascontiguousarray(dout).reshape(n * H * W, F)
        np.matmul(self._patches_x.T, d2, out=self.grads["W"].reshape(-1, F))
        self._sum_rows(d2, self.grads["b"])
        if not need_dx:
            return None
        # dx[b, y, z, c] = sum over i, j, f of dout[b, y + i - p, z + j - p, f] * W[k-1-i, k-1-j, c, f]
        flipped = np.ascontiguousarray(self.params["W"][::-1, ::-1].transpose(0, 1, 3, 2)).reshape(-1, self.in_channels)
        dx = self._buffer("dx", (n, H, W, self.in_channels), d2.dtype)
        np.matmul(self._patches("dout", dout), flipped, out=dx.reshape(n * H * W, -1))
        return dx


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
        taps = [_windows(x)[:, :, a, :, b, :] for a, b in _CORNERS]
        out = self._buffer("out", (n, H // 2, W // 2, C), x.dtype)
        np.maximum(taps[0], taps[1], out=out)
        np.maximum(out, taps[2], out=out)
        np.maximum(out, taps[3], out=out)
        if train:
            # won[t]: tap t equals the maximum and no earlier tap did (boolean ops are cheap).
            won = self._buffer("won", (4, *out.shape), np.bool_)
            taken = self._buffer("taken", out.shape, np.bool_)
            np.equal(taps[0], out, out=won[0])
            taken[...] = won[0]
            for t in (1, 2):
                np.equal(taps[t], out, out=won[t])
                np.greater(won[t], taken, out=won[t])
                taken |= won[t]
            np.logical_not(taken, out=won[3])
        return out

    def backward(self, dout: np.ndarray, need_dx: bool = True) -> np.ndarray | None:
        if not need_dx:
            return None
        # Filled once: odd edge rows/cols are never written, every window cell is written each time.
        dx = self._buffer("dx", self._in_shape, dout.dtype, fill=0)
        windows, won = _windows(dx), self._scratch["won"]
        for t, (a, b) in enumerate(_CORNERS):
            np.multiply(dout, won[t], out=windows[:, :, a, :, b, :])
        return dx
