"""Corrupted copies of test images, after MNIST-C (Mu and Gilmer 2019, google-research/mnist-c).

Each family changes an image the way a scan, a photo or a drawing may differ from the training
set while keeping its label, at severities 1 (mild) to 3 (strong); severity 0 is the image as
it is. The groups are MNIST-C's: noise (gaussian, shot, impulse), blur (gaussian, glass,
motion), affine (translate, rotate, scale, shear), brightness and contrast, occlusion (stripe,
patches, dotted line, zigzag) and edges. Where MNIST-C has five levels, severities 1 to 3 take
three of them, the strongest near the level MNIST-C published its dataset at.

Written in NumPy alone, element-wise and in a fixed order (no BLAS, no threads), so the same
(images, family, severity, seed, stream) give the same bytes on every run and at any thread
count. Where MNIST-C loops over pixels or calls a library, the same idea is vectorised over the
batch:
    glass_blur   each pixel takes the value of a random neighbour up to d pixels away (a gather),
                 not MNIST-C's sequential swaps;
    motion_blur  the mean of the image shifted along a line at a random angle, not ImageMagick's
                 one-sided motion blur;
    edges        not Canny: Gaussian smoothing, Sobel gradient magnitude, non-maximum suppression
                 across the edge and one threshold (no hysteresis). Canny has no severity; ours
                 mixes the edge map into the image, a third, two thirds, then in its place.
Lines are drawn at their vertical distance from each column, as MNIST-C draws them.

Left out: MNIST-C's fog and spatter. Neither needs more than NumPy (a plasma fractal, blurred
thresholded noise), but on light-on-dark images fog is a brightening haze with a loss of
contrast, which brightness and contrast already measure, and spatter is blobs over the image,
which patches measure; each family adds three scored copies of the test split to a stage whose
cost is bounded (robustness.py).

Images are uint8 (n, H, W) of any H x W; lengths given for 28 x 28 scale with the smaller side.
Random draws do not depend on the severity, so the severities of a family are the same
corruption at growing strength (the same directions, positions and noise): the mean change from
the clean image grows with the severity.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from mnist_pipeline.errors import ConfigError

SEVERITIES = (1, 2, 3)
MAX_SEVERITY = SEVERITIES[-1]
SIDE = 28  # the image side the lengths below are given for
F32 = np.float32


def _finish(values: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


def _scale(shape: tuple[int, ...]) -> float:
    """Lengths in pixels of a 28 x 28 image, in pixels of an image of `shape` (n, H, W)."""
    return min(shape[1], shape[2]) / SIDE


# --- sampling -------------------------------------------------------------------------------


def _translate(x: np.ndarray, ty: np.ndarray, tx: np.ndarray, edge: bool = False) -> np.ndarray:
    """x (n, H, W) float32 moved down by ty and right by tx (n,) pixels, bilinear; the uncovered
    border is 0, or the nearest edge pixel when `edge`. Whole-pixel moves copy values exactly."""
    n, h, w = x.shape
    fy, fx = np.floor(ty), np.floor(tx)
    ay, ax = (ty - fy).astype(F32)[:, None, None], (tx - fx).astype(F32)[:, None, None]
    # Output row i lies between source rows i - fy - 1 (weight ay) and i - fy (weight 1 - ay):
    # one gather of an (H + 1) x (W + 1) window holds both for every row, likewise for columns.
    rows = np.arange(-1, h)[None, :] - fy.astype(np.int64)[:, None]
    cols = np.arange(-1, w)[None, :] - fx.astype(np.int64)[:, None]
    window = x[np.arange(n)[:, None, None], np.clip(rows, 0, h - 1)[:, :, None], np.clip(cols, 0, w - 1)[:, None, :]]
    if not edge:
        window *= ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    top = ay * window[:, :-1] + (1 - ay) * window[:, 1:]
    return ax * top[:, :, :-1] + (1 - ax) * top[:, :, 1:]


def _sample(x: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """x (n, H, W) float32 read at fractional (rows, cols) (n, H, W), bilinear, 0 outside."""
    n, h, w = x.shape
    # Two zero rows and columns beyond each side: a coordinate clipped to [-1, H] then reads
    # only zeros outside the image, and its neighbour below/right always exists.
    padded = np.pad(x, ((0, 0), (1, 2), (1, 2)))
    stride = w + 3
    rows, cols = np.clip(rows, -1, h), np.clip(cols, -1, w)
    r0, c0 = np.floor(rows), np.floor(cols)
    ar, ac = (rows - r0).astype(F32), (cols - c0).astype(F32)
    index = (np.arange(n) * (h + 3) * stride)[:, None, None] + (r0.astype(np.int64) + 1) * stride + (c0.astype(np.int64) + 1)
    flat = padded.reshape(-1)
    top = (1 - ac) * flat[index] + ac * flat[index + 1]
    bottom = (1 - ac) * flat[index + stride] + ac * flat[index + stride + 1]
    return (1 - ar) * top + ar * bottom


def _affine(x: np.ndarray, inverse: np.ndarray) -> np.ndarray:
    """x (n, H, W) warped about its centre: output pixel p reads the input at
    centre + inverse[k] @ (p - centre), inverse (n, 2, 2) in (row, col) order."""
    _, h, w = x.shape
    dr = (np.arange(h, dtype=F32) - F32((h - 1) / 2))[None, :, None]
    dc = (np.arange(w, dtype=F32) - F32((w - 1) / 2))[None, None, :]
    m = inverse.astype(F32)[:, :, :, None, None]
    rows = F32((h - 1) / 2) + m[:, 0, 0] * dr + m[:, 0, 1] * dc
    cols = F32((w - 1) / 2) + m[:, 1, 0] * dr + m[:, 1, 1] * dc
    return _sample(x, rows, cols)


def _convolve(x: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    """x convolved along `axis` (1 or 2) with odd-length `weights`, edges repeated."""
    radius = len(weights) // 2
    pad = [(0, 0)] * 3
    pad[axis] = (radius, radius)
    padded = np.pad(x, pad, mode="edge")
    size = x.shape[axis]
    out = np.zeros_like(x)
    for i, weight in enumerate(weights):
        out += F32(weight) * (padded[:, i : i + size] if axis == 1 else padded[:, :, i : i + size])
    return out


def _blur(x: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of x (n, H, W) float32 with std `sigma` pixels, truncated at 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    taps /= taps.sum()
    return _convolve(_convolve(x, taps, 1), taps, 2)


# --- the families ---------------------------------------------------------------------------


def gaussian_noise(x, sigma, rng):
    return x + F32(255 * sigma) * rng.standard_normal(x.shape, dtype=F32)


def shot_noise(x, photons, rng):
    # Poisson counts of `photons` per unit of brightness: black stays black, bright pixels scatter.
    return rng.poisson(x.astype(np.float64) * (photons / 255)).astype(F32) * F32(255 / photons)


def impulse_noise(x, amount, rng):
    u = rng.random(x.shape, dtype=F32)
    out = np.where(u < amount / 2, F32(255), x)
    return np.where(u > 1 - amount / 2, F32(0), out)


def gaussian_blur(x, sigma, rng):
    return _blur(x, sigma * _scale(x.shape))


def glass_blur(x, level, rng):
    sigma, reach = level
    scale = _scale(x.shape)
    n, h, w = x.shape
    reach = max(1, round(reach * scale))
    u = rng.random((2, n, h, w), dtype=F32) * 2 - 1
    dy, dx = (np.rint(u * (reach + 0.5)).clip(-reach, reach).astype(np.int64))
    blurred = _blur(x, sigma * scale)
    rows = np.clip(np.arange(h)[None, :, None] + dy, 0, h - 1)
    cols = np.clip(np.arange(w)[None, None, :] + dx, 0, w - 1)
    scrambled = blurred[np.arange(n)[:, None, None], rows, cols]
    return _blur(scrambled, sigma * scale)


def motion_blur(x, length, rng):
    angle = np.deg2rad(rng.uniform(-45, 45, len(x)))
    steps = np.linspace(-(length - 1) / 2, (length - 1) / 2, length) * _scale(x.shape)
    out = np.zeros_like(x)
    for step in steps:
        out += _translate(x, step * np.sin(angle), step * np.cos(angle), edge=True)
    return out / F32(length)


def _signs(rng, n: int, k: int = 1) -> np.ndarray:
    return rng.choice(np.array([-1.0, 1.0]), size=(n, k))


def translate(x, pixels, rng):
    signs = _signs(rng, len(x), 2)
    _, h, w = x.shape
    return _translate(x, signs[:, 0] * round(pixels * h / SIDE), signs[:, 1] * round(pixels * w / SIDE))


def rotate(x, radians, rng):
    theta = _signs(rng, len(x))[:, 0] * radians
    cos, sin = np.cos(theta), np.sin(theta)
    # The inverse of a rotation by theta (counter-clockwise on screen, rows pointing down).
    return _affine(x, np.stack([np.stack([cos, -sin], 1), np.stack([sin, cos], 1)], 1))


def scale(x, factor, rng):
    return _affine(x, np.broadcast_to(np.eye(2) / factor, (len(x), 2, 2)))


def shear(x, factor, rng):
    k = _signs(rng, len(x))[:, 0] * factor
    ones, zeros = np.ones(len(x)), np.zeros(len(x))
    return _affine(x, np.stack([np.stack([ones, zeros], 1), np.stack([-k, ones], 1)], 1))


def brightness(x, amount, rng):
    return x + F32(255 * amount)


def contrast(x, factor, rng):
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * F32(factor) + mean


def stripe(x, width, rng):
    out = x.copy()
    band = max(1, round(width * x.shape[2] / SIDE))
    out[:, :, :band] = 255 - x[:, :, :band]
    out[:, :, -band:] = 255 - x[:, :, -band:]
    return out


MAX_PATCHES = 5


def patches(x, count, rng):
    n, h, w = x.shape
    half = max(1, round(3 * _scale(x.shape)))
    # Centres in the middle 60% of the image, where the digit or garment is.
    cy = rng.uniform(0.2, 0.8, (MAX_PATCHES, n)) * (h - 1)
    cx = rng.uniform(0.2, 0.8, (MAX_PATCHES, n)) * (w - 1)
    rows, cols = np.arange(h)[None, :, None], np.arange(w)[None, None, :]
    out = x.copy()
    for j in range(count):
        covered = (np.abs(rows - np.rint(cy[j])[:, None, None]) <= half) & (np.abs(cols - np.rint(cx[j])[:, None, None]) <= half)
        out[covered] = 128
    return out


MAX_LINES = 3


def _draw(x: np.ndarray, centre: np.ndarray, slope: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """x plus a bright line through row centre[k, c] of each column c (n, W), where `inside`;
    its intensity falls off with the distance from the line (vertical, over the slope's secant)."""
    width = 1.5 * _scale(x.shape)
    rows = np.arange(x.shape[1], dtype=F32)[None, :, None]
    distance = np.abs(rows - centre[:, None, :].astype(F32)) / np.sqrt(1 + slope.astype(F32) ** 2)[:, None, :]
    ink = np.clip(1 - distance / F32(width), 0, 1) * inside[:, None, :]
    return np.minimum(x + F32(255) * ink, 255)


def dotted_line(x, count, rng):
    n, h, w = x.shape
    ends = rng.uniform(0, h - 1, (MAX_LINES, 2, n))
    cols = np.arange(w)[None, :]
    dash = max(1, round(2 * _scale(x.shape)))
    on = (cols // dash) % 2 == 1
    out = x
    for j in range(count):
        slope = (ends[j, 1] - ends[j, 0]) / max(w - 1, 1)
        slope = np.broadcast_to(slope[:, None], (n, w))
        out = _draw(out, ends[j, 0][:, None] + slope * cols, slope, np.broadcast_to(on, (n, w)))
    return out


def zigzag(x, count, rng):
    n, h, w = x.shape
    s = _scale(x.shape)
    start, stop = 2 * s, w - 1 - 2 * s
    base = rng.uniform(0, h - 1, (MAX_LINES, n))
    rise = rng.uniform(-5, 5, (MAX_LINES, n)) * s / max(stop - start, 1)
    run, amplitude = 2 * s, 2 * s  # MNIST-C's a and b: a tooth rises over 2 pixels to 2 pixels off the line
    cols = np.arange(w, dtype=np.float64)[None, :]
    u = (cols - start) / run
    phase = (u - 1) % 4
    # A triangle wave: 0 at the start, +amplitude at u = 1, -amplitude at u = 3, ...
    wave = amplitude * (np.abs(phase - 2) - 1)
    wave_slope = np.where(phase < 2, -1.0, 1.0) * amplitude / run
    inside = np.broadcast_to((cols >= start) & (cols <= stop), (n, w))
    out = x
    for j in range(count):
        centre = base[j][:, None] + rise[j][:, None] * (cols - start) + wave
        out = _draw(out, centre, rise[j][:, None] + wave_slope, inside)
    return out


def edge_map(x: np.ndarray) -> np.ndarray:
    """255 on the edges of x (n, H, W) float32, 0 elsewhere: see the module docstring."""
    smooth = np.pad(_blur(x, _scale(x.shape)), ((0, 0), (1, 1), (1, 1)), mode="edge")
    h, w = x.shape[1:]

    def at(dr: int, dc: int) -> np.ndarray:
        return smooth[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]

    gx = (at(-1, 1) + 2 * at(0, 1) + at(1, 1)) - (at(-1, -1) + 2 * at(0, -1) + at(1, -1))
    gy = (at(1, -1) + 2 * at(1, 0) + at(1, 1)) - (at(-1, -1) + 2 * at(-1, 0) + at(-1, 1))
    magnitude = np.hypot(gx, gy)
    padded = np.pad(magnitude, ((0, 0), (1, 1), (1, 1)))
    # The gradient's direction to the nearest of 0, 45, 90 and 135 degrees; an edge pixel is a
    # maximum of the magnitude against its two neighbours along it.
    sector = np.rint(np.arctan2(gy, gx) / (np.pi / 4)).astype(np.int64) % 4
    peak = np.zeros(x.shape, dtype=bool)
    for k, (dr, dc) in enumerate(((0, 1), (1, 1), (1, 0), (1, -1))):
        ahead = padded[:, 1 + dr : 1 + dr + h, 1 + dc : 1 + dc + w]
        behind = padded[:, 1 - dr : 1 - dr + h, 1 - dc : 1 - dc + w]
        peak |= (sector == k) & (magnitude >= ahead) & (magnitude >= behind)
    # After the blur, the magnitude across a sharp step is about 2.6 times its height: this keeps
    # steps of more than about 15% of the range.
    return np.where(peak & (magnitude > F32(0.4 * 255)), F32(255), F32(0))


def edges(x, share, rng):
    return (1 - F32(share)) * x + F32(share) * edge_map(x)


# --- the registry ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Family:
    """One corruption: its group, what it does in a few words (the report shows them), its
    parameter at severities 1, 2 and 3, and the function applying one level to float32 (n, H, W)."""

    name: str
    group: str
    description: str
    levels: tuple[Any, Any, Any]
    apply: Callable[[np.ndarray, Any, np.random.Generator], np.ndarray]


FAMILIES: dict[str, Family] = {f.name: f for f in (
    Family("gaussian_noise", "noise", "Gaussian noise on every pixel (std 8%, 18%, 38% of the range)",
           (0.08, 0.18, 0.38), gaussian_noise),
    Family("shot_noise", "noise", "photon (Poisson) noise on the bright pixels, as in a dim photo (60, 12, 3 photons)",
           (60, 12, 3), shot_noise),
    Family("impulse_noise", "noise", "salt-and-pepper: pixels set to black or white (3%, 9%, 27% of them)",
           (0.03, 0.09, 0.27), impulse_noise),
    Family("gaussian_blur", "blur", "Gaussian blur (std 1, 2, 3 pixels)", (1.0, 2.0, 3.0), gaussian_blur),
    Family("glass_blur", "blur", "blurred, pixels scattered up to 1, 2, 3 pixels, blurred again, as through frosted glass",
           ((0.7, 1), (0.9, 2), (1.1, 3)), glass_blur),
    Family("motion_blur", "blur", "smeared along a line at a random angle (5, 9, 13 pixels long)", (5, 9, 13), motion_blur),
    Family("translate", "affine", "shifted diagonally by 2, 4, 6 pixels in each direction", (2, 4, 6), translate),
    Family("rotate", "affine", "rotated about the centre by 11, 23, 34 degrees, either way", (0.2, 0.4, 0.6), rotate),
    Family("scale", "affine", "shrunk about the centre to 85%, 70%, 55% of its size", (0.85, 0.70, 0.55), scale),
    Family("shear", "affine", "sheared sideways by 0.2, 0.4, 0.6 pixels per row, either way", (0.2, 0.4, 0.6), shear),
    Family("brightness", "brightness and contrast", "brighter: 10%, 30%, 50% of the range added to every pixel",
           (0.1, 0.3, 0.5), brightness),
    Family("contrast", "brightness and contrast", "contrast cut to 40%, 20%, 10% around the image's mean",
           (0.4, 0.2, 0.1), contrast),
    Family("stripe", "occlusion", "a band at each side inverted, 2, 4, 7 pixels wide", (2, 4, 7), stripe),
    Family("patches", "occlusion", "grey 7-pixel squares over the middle of the image (1, 3, 5 of them)", (1, 3, 5), patches),
    Family("dotted_line", "occlusion", "dotted lines drawn across the image (1, 2, 3 of them)", (1, 2, 3), dotted_line),
    Family("zigzag", "occlusion", "zigzag lines drawn across the image (1, 2, 3 of them)", (1, 2, 3), zigzag),
    Family("edges", "edges", "its outline (Sobel edges, thinned and thresholded) mixed in: a third, two thirds, all",
           (1 / 3, 2 / 3, 1.0), edges),
)}


def check_families(families: Iterable[str], key: str = "robustness.families") -> list[str]:
    """The family names as a list; ConfigError naming `key` for an unknown, repeated or missing one."""
    if isinstance(families, str):
        raise ConfigError(f"config key {key!r}: expected a list of family names, got the string {families!r}")
    names = list(families)
    unknown = [name for name in names if name not in FAMILIES]
    if unknown:
        raise ConfigError(f"config key {key!r}: unknown corruption famil{'y' if len(unknown) == 1 else 'ies'} "
                          f"{', '.join(map(repr, unknown))}; known: {', '.join(FAMILIES)}")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"config key {key!r}: {', '.join(map(repr, repeated))} listed more than once")
    if not names:
        raise ConfigError(f"config key {key!r}: lists no family; give at least one, or set robustness: null")
    return names


def check_severity(severity: int, key: str = "severity") -> int:
    if isinstance(severity, bool) or not isinstance(severity, int | np.integer) or not 0 <= severity <= MAX_SEVERITY:
        raise ConfigError(f"{key}: {severity!r} is not a severity; expected an integer from 0 to {MAX_SEVERITY}")
    return int(severity)


def _generator(family: str, seed: int, stream: int) -> np.random.Generator:
    # The family's name, not its place in the registry, picks its stream, so adding a family
    # changes no other; the severity is left out, so the severities share their draws.
    return np.random.default_rng(np.random.SeedSequence([seed, zlib.crc32(family.encode()), stream]))


def _images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 3 or 0 in images.shape[1:]:
        raise ValueError(f"images must be uint8 (n, H, W), got {images.dtype} {images.shape}")
    return images


def corrupt(images: np.ndarray, family: str, severity: int, seed: int = 0, stream: int = 0) -> np.ndarray:
    """uint8 (n, H, W) images corrupted by `family` at `severity` (0: unchanged copy, 1..3).

    seed and stream (both >= 0) choose the random draws: the same arguments give the same bytes.
    A caller that corrupts a large set in batches gives each batch its own stream.
    """
    images = _images(images)
    if family not in FAMILIES:
        raise ValueError(f"unknown corruption family {family!r}; known: {', '.join(FAMILIES)}")
    severity = check_severity(severity)
    if severity == 0 or len(images) == 0:
        return images.copy()
    spec = FAMILIES[family]
    return _finish(spec.apply(images.astype(F32), spec.levels[severity - 1], _generator(family, seed, stream)))


def shift(images: np.ndarray, dy: int | np.ndarray, dx: int | np.ndarray) -> np.ndarray:
    """uint8 (n, H, W) images moved down by dy and right by dx whole pixels (scalars or (n,)),
    black where nothing moved in; a shift by 0 returns the images unchanged."""
    images = _images(images)
    n = len(images)
    dy, dx = (np.broadcast_to(np.asarray(d, dtype=np.int64), (n,)) for d in (dy, dx))
    return _finish(_translate(images.astype(F32), dy.astype(np.float64), dx.astype(np.float64)))
