"""Data augmentation: random shifts, horizontal flips and random erasing of a training minibatch.

Each transform works on a whole minibatch at once, in place, on the flattened rows the trainer
already gathered (n, H*W) float32; no per-image Python loop. Randomness comes from the
generator the caller passes, so the same seed gives the same augmented batches and the same
model bytes.

`fill` is the value of a blank pixel in the normalized data (pixel 0, i.e. -mean/std): what a
shift brings in at the edge and what erasing paints. Using the data's own blank rather than 0.0
keeps a shifted image's background what the network saw everywhere else.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Augmentation:
    """What to do to each training image; all off is the identity.

    shift: largest translation in pixels along each axis (uniform in [-shift, shift]).
    flip: mirror left-right with probability 1/2 (right for clothes, wrong for digits).
    erase: probability of blanking one random rectangle (Zhong et al., 2017), 2% to 25% of the
    image's area with an aspect ratio between 1/2 and 2.
    """

    shift: int = 0
    flip: bool = False
    erase: float = 0.0

    @property
    def active(self) -> bool:
        return self.shift > 0 or self.flip or self.erase > 0


def augment_batch(
    rows: np.ndarray, image_shape: tuple[int, int], augmentation: Augmentation, rng: np.random.Generator, fill: float
) -> None:
    """Augment `rows` (n, H*W) in place; `image_shape` is (H, W).

    The draws are made in a fixed order (shift, flip, erase) and always in full, whether or
    not a transform ends up changing an image, so turning one transform on or off does not
    change the random numbers the others get.
    """
    if not augmentation.active or len(rows) == 0:
        return
    images = rows.reshape(len(rows), *image_shape)
    if augmentation.shift > 0:
        offsets = rng.integers(-augmentation.shift, augmentation.shift + 1, size=(len(rows), 2))
        shift_images(images, offsets, fill)
    if augmentation.flip:
        flipped = rng.random(len(rows)) < 0.5
        images[flipped] = images[flipped, :, ::-1]
    if augmentation.erase > 0:
        erase_rectangles(images, augmentation.erase, rng, fill)


def shift_images(images: np.ndarray, offsets: np.ndarray, fill: float) -> None:
    """Translate images (n, H, W) in place; offsets (n, 2) int are (down, right) in pixels.

    A pixel moved past an edge is lost and the uncovered band is `fill`. Done as one gather:
    pad every image by the largest offset, then read each one's window at its own corner.
    """
    n, height, width = images.shape
    pad = int(np.abs(offsets).max(initial=0))
    if pad == 0:
        return
    padded = np.full((n, height + 2 * pad, width + 2 * pad), fill, dtype=images.dtype)
    padded[:, pad : pad + height, pad : pad + width] = images
    # Shifting the content down by d means reading the window that starts d rows above it.
    top = pad - offsets[:, 0]
    left = pad - offsets[:, 1]
    rows = top[:, None] + np.arange(height)
    cols = left[:, None] + np.arange(width)
    images[...] = padded[np.arange(n)[:, None, None], rows[:, :, None], cols[:, None, :]]


def erase_rectangles(images: np.ndarray, probability: float, rng: np.random.Generator, fill: float) -> None:
    """Blank one random rectangle in each image (n, H, W) with the given probability, in place."""
    n, height, width = images.shape
    chosen = rng.random(n) < probability
    area = rng.uniform(0.02, 0.25, n) * height * width
    aspect = np.exp(rng.uniform(np.log(0.5), np.log(2.0), n))
    box_h = np.clip(np.round(np.sqrt(area * aspect)), 1, height).astype(np.intp)
    box_w = np.clip(np.round(np.sqrt(area / aspect)), 1, width).astype(np.intp)
    top = (rng.random(n) * (height - box_h + 1)).astype(np.intp)
    left = (rng.random(n) * (width - box_w + 1)).astype(np.intp)
    row, col = np.arange(height), np.arange(width)
    inside_rows = (row >= top[:, None]) & (row < (top + box_h)[:, None])
    inside_cols = (col >= left[:, None]) & (col < (left + box_w)[:, None])
    mask = inside_rows[:, :, None] & inside_cols[:, None, :] & chosen[:, None, None]
    images[mask] = fill
