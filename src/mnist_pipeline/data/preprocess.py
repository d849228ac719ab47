"""New images to the network's input: read PNG/JPEG/IDX/.npy and convert them the way MNIST was made.

MNIST (LeCun et al.) is a light digit on a dark background, size-normalised to fit a 20x20 box
with its aspect ratio kept (anti-aliased, hence grey levels), then placed in a 28x28 field so that
its centre of mass lies at the field's centre. A photo or a drawing from a browser canvas is dark on
light, off-centre and of any size; `to_mnist` undoes all three. An image that is already 28x28 is
taken to be in the dataset's own format and left as it is (apart from inverting a dark-on-light
one), because re-framing a Fashion-MNIST picture, which fills its frame, would shrink it.

A model trained on a custom dataset of H x W images gets H x W images made the same way, with
the box and the centre scaled in proportion (a 20/28 box of each side, the centre of mass at
the centre of the field).
"""

from __future__ import annotations

import io
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from mnist_pipeline.data.idx import DTYPES, GZIP_MAGIC, read_idx_bytes
from mnist_pipeline.data.splits import Normalization
from mnist_pipeline.errors import ImageInputError

SIDE = 28
MNIST_SHAPE = (SIDE, SIDE)
# Ink below this fraction of the brightest stroke counts as background: it removes JPEG noise
# and paper texture, which would otherwise stretch the bounding box to the whole photo.
INK_THRESHOLD = 0.1
NPY_MAGIC = b"\x93NUMPY"
CENTER_MODES = ("auto", "always", "never")
# Larger images are refused before they are decoded: the conversion holds about 20 bytes per
# pixel (a 50-megapixel photo takes 1 GB), and a small PNG can declare billions of pixels.
MAX_IMAGE_PIXELS = 50_000_000


@dataclass(frozen=True)
class Framing:
    """How a digit is placed in the 28x28 field: the side of the box its longer side is scaled
    to (pixels of a 28-pixel side, scaled in proportion for other sizes), and whether its
    centre of mass (else its bounding box) goes to the centre."""

    box: int = 20
    by_mass: bool = True


MNIST_FRAMING = Framing()
# Zalando's conversion for Fashion-MNIST: the longest edge resized to 28, the item centred.
FRAMINGS = {"fashion-mnist": Framing(box=SIDE, by_mass=False)}


def framing_for(dataset: str | None) -> Framing:
    """The framing of the dataset a model was trained on; MNIST's for any other."""
    return FRAMINGS.get(dataset or "", MNIST_FRAMING)


def needs_inversion(gray: np.ndarray) -> bool:
    """True when the image is dark on light: its one-pixel border is light on average."""
    border = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]]) if min(gray.shape) > 1 else gray.ravel()
    return float(border.mean()) > 127.5


def ink(gray: np.ndarray) -> np.ndarray:
    """Light-on-dark ink of a grayscale image uint8 (h, w), as float32 in [0, 255].

    Inverted if dark on light; the background level (median of the border) is subtracted
    and the contrast stretched so that the darkest stroke becomes 255, as in MNIST.
    """
    values = gray.astype(np.float32)
    if needs_inversion(gray):
        values = 255 - values
    border = np.concatenate([values[0], values[-1], values[:, 0], values[:, -1]])
    background, top = float(np.median(border)), float(values.max())
    if top - background < 16:
        raise ImageInputError("no digit found: the image is blank (all pixels have about the same value)")
    strokes = np.clip((values - background) * (255 / (top - background)), 0, 255)
    strokes[strokes < INK_THRESHOLD * 255] = 0
    return strokes


def to_mnist(gray: np.ndarray, framing: Framing = MNIST_FRAMING, shape: tuple[int, int] = MNIST_SHAPE) -> np.ndarray:
    """A grayscale image uint8 (h, w) of any size as an MNIST-style image uint8 `shape` (rows, cols)."""
    strokes = ink(np.asarray(gray, dtype=np.uint8))
    rows, cols = np.flatnonzero(strokes.any(axis=1)), np.flatnonzero(strokes.any(axis=0))
    crop = strokes[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    height, width = crop.shape
    box_rows, box_cols = (framing.box * side / SIDE for side in shape)
    scale = min(box_rows / height, box_cols / width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Lanczos on the 8-bit image: anti-aliased like MNIST's, and Pillow clips the ringing.
    digit = np.asarray(Image.fromarray(crop.round().astype(np.uint8)).resize(size, Image.Resampling.LANCZOS), dtype=np.float32)
    if framing.by_mass and digit.sum() > 0:
        ys, xs = np.indices(digit.shape)
        centre = ((ys * digit).sum() / digit.sum(), (xs * digit).sum() / digit.sum())
        targets = (shape[0] / 2, shape[1] / 2)
    else:
        centre = ((digit.shape[0] - 1) / 2, (digit.shape[1] - 1) / 2)
        targets = ((shape[0] - 1) / 2, (shape[1] - 1) / 2)
    top, left = (int(np.floor(target - c + 0.5)) for target, c in zip(targets, centre, strict=False))
    return _paste(digit, top, left, shape).round().astype(np.uint8)


def _paste(digit: np.ndarray, top: int, left: int, shape: tuple[int, int]) -> np.ndarray:
    """digit placed with its corner at (top, left) of a black field of `shape`, cut at the edges."""
    field = np.zeros(shape, np.float32)
    y0, x0 = max(top, 0), max(left, 0)
    y1, x1 = min(top + digit.shape[0], shape[0]), min(left + digit.shape[1], shape[1])
    if y1 > y0 and x1 > x0:
        field[y0:y1, x0:x1] = digit[y0 - top : y1 - top, x0 - left : x1 - left]
    return field


def as_dataset_image(
    gray: np.ndarray, framing: Framing = MNIST_FRAMING, center: str = "auto", shape: tuple[int, int] = MNIST_SHAPE
) -> np.ndarray:
    """uint8 `shape` (the model's rows, cols) for one grayscale image uint8 (h, w).

    center: "auto" re-frames only images that are not of `shape`; "always" re-frames every
    image; "never" only inverts (and resizes to `shape` if needed).
    """
    if center not in CENTER_MODES:
        raise ValueError(f"center must be one of {', '.join(CENTER_MODES)}, got {center!r}")
    gray = np.asarray(gray, dtype=np.uint8)
    shape = tuple(shape)
    if center == "always" or (center == "auto" and gray.shape != shape):
        return to_mnist(gray, framing, shape)
    if gray.shape != shape:
        gray = np.asarray(Image.fromarray(gray).resize((shape[1], shape[0]), Image.Resampling.LANCZOS))
    return 255 - gray if needs_inversion(gray) else gray.copy()


def decode_image(data: bytes, source: str = "<image>") -> np.ndarray:
    """Grayscale uint8 (h, w) of an image file's bytes in any format Pillow reads (see to_gray).

    Images of more than MAX_IMAGE_PIXELS are refused from their header, before decoding.
    """
    if not data:
        raise ImageInputError(f"{source}: the file is empty (0 bytes); expected a PNG, JPEG, IDX or .npy file")
    try:
        image = Image.open(io.BytesIO(data))
        check_image_size(image.size, source)
        image.load()
    except UnidentifiedImageError:
        raise ImageInputError(f"{source}: not a PNG, JPEG, IDX or .npy file (it starts with {data[:8]!r})") from None
    except Image.DecompressionBombError as exc:
        # Pillow's own limit is above ours, so it refused a size ours refuses too.
        pixels = re.search(r"\((\d+) pixels\)", str(exc))
        raise ImageInputError(_too_large(source, f"{int(pixels[1]):,} pixels" if pixels else "its size")) from None
    except ImageInputError:
        raise
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageInputError(f"{source}: damaged image file ({exc})") from None
    try:
        # Phone photos are stored sideways with an EXIF note to rotate them.
        return to_gray(ImageOps.exif_transpose(image))
    except ImageInputError as exc:
        raise ImageInputError(f"{source}: {exc}") from None


def check_image_size(size: tuple[int, int], source: str) -> None:
    """ImageInputError naming `source` when an image of `size` (width, height) has more than MAX_IMAGE_PIXELS."""
    width, height = size
    if width * height > MAX_IMAGE_PIXELS:
        raise ImageInputError(_too_large(source, f"{width}x{height} pixels ({width * height:,})"))


def _too_large(source: str, size: str) -> str:
    return f"{source}: the image is too large: {size}, more than the {MAX_IMAGE_PIXELS:,} pixels accepted; scale it down first"


def to_gray(image: Image.Image) -> np.ndarray:
    """Grayscale uint8 (h, w) of a Pillow image of any mode.

    Transparent pixels are laid on whichever of black or white the visible strokes stand out
    against, so a drawing exported with a transparent background keeps its ink. 16-bit and
    float images are scaled to their full range.
    """
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        peak = 1.0 if image.mode == "F" and values.max() <= 1 else (255.0 if values.max() <= 255 else 65535.0)
        return np.clip(values * (255 / peak), 0, 255).round().astype(np.uint8)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32) / 255
        if not alpha.any():
            raise ImageInputError("the image is fully transparent: nothing is drawn")
        luminance = np.asarray(rgba.convert("RGB").convert("L"), dtype=np.float32)
        background = 255.0 if float((luminance * alpha).sum() / alpha.sum()) < 127.5 else 0.0
        return (luminance * alpha + background * (1 - alpha)).round().astype(np.uint8)
    return np.asarray(image.convert("L"), dtype=np.uint8)


def array_images(array: np.ndarray, source: str, shape: tuple[int, int] = MNIST_SHAPE) -> tuple[np.ndarray, bool]:
    """Images of an IDX/.npy array as uint8, and whether the array holds a stack of them.

    Accepted, for a model of `shape` (H, W): (H*W,), (n, H*W), (h, w), (n, h, w); integers in
    [0, 255], booleans, or floats in [0, 1] or [0, 255]. Returns uint8 (n, h, w) and False for
    a single image.
    """
    array = np.asarray(array)
    flat = shape[0] * shape[1]
    if array.ndim == 1 and array.size == flat:
        array = array.reshape(shape)
    elif array.ndim == 2 and array.shape[1] == flat and tuple(array.shape) != tuple(shape):
        array = array.reshape(-1, *shape)
    if array.ndim not in (2, 3) or 0 in array.shape:
        raise ImageInputError(
            f"{source}: array of shape {array.shape} is not an image or a stack of images;"
            f" expected (h, w), (n, h, w), ({flat},) or (n, {flat})"
        )
    stacked = array.ndim == 3
    check_image_size(array.shape[:-3:-1], source)
    return _to_bytes(array, source).reshape(-1, *array.shape[-2:]), stacked


def _to_bytes(array: np.ndarray, source: str) -> np.ndarray:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind not in "iuf":
        raise ImageInputError(f"{source}: array of dtype {array.dtype} holds no pixel values (expected integers or floats)")
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise ImageInputError(f"{source}: array holds NaN or infinite values")
    low, high = float(array.min()), float(array.max())
    if low < 0 or high > 255:
        raise ImageInputError(
            f"{source}: pixel values range over [{low:g}, {high:g}], expected raw pixels in [0, 255]"
            " (or [0, 1] for floats); already-normalised arrays cannot be classified"
        )
    if array.dtype.kind == "f" and high <= 1:
        array = array * 255
    return np.asarray(np.round(array), dtype=np.uint8) if array.dtype.kind == "f" else array.astype(np.uint8)


def read_array(data: bytes, source: str) -> np.ndarray:
    """The array in .npy or IDX (gzipped or not) bytes; ImageInputError/IdxFormatError naming `source`."""
    if data.startswith(NPY_MAGIC):
        stream = io.BytesIO(data)
        try:
            check_npy_size(stream, len(data))
            return np.lib.format.read_array(stream, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise ImageInputError(f"{source}: damaged .npy file ({exc})") from None
    return read_idx_bytes(data, source)


def check_npy_size(stream: io.BytesIO, size: int) -> None:
    """ValueError when a .npy header declares more data than the file (`size` bytes) holds,
    before NumPy allocates an array of the declared size; leaves `stream` at the start."""
    version = np.lib.format.read_magic(stream)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read_header(stream)
    declared, held = math.prod(shape) * dtype.itemsize, size - stream.tell()
    if declared > held:
        raise ValueError(f"its header declares shape {shape} of {dtype}, {declared:,} bytes, but only {held:,} bytes follow it")
    stream.seek(0)


def looks_like_array(data: bytes) -> bool:
    """True for .npy, gzip (our only compressed input is IDX) and IDX magic numbers."""
    if data.startswith((NPY_MAGIC, GZIP_MAGIC)):
        return True
    return len(data) >= 4 and data[0] == 0 and data[1] == 0 and data[2] in DTYPES and 1 <= data[3] <= 4


@dataclass(frozen=True)
class InputImages:
    """The images of one input file: uint8 (n, H, W), and indexed=True when the file holds a
    stack (IDX/.npy with an image axis), so each image is reported with its index."""

    path: str
    images: np.ndarray
    indexed: bool


def load_images(
    path: str | os.PathLike, framing: Framing = MNIST_FRAMING, center: str = "auto", shape: tuple[int, int] = MNIST_SHAPE
) -> InputImages:
    """Read one input file (format told by its content, not its name) as dataset-format images
    of `shape` (the model's rows, cols).

    Raises ImageInputError or IdxFormatError naming the file; OSError if it cannot be read.
    """
    source = os.fspath(path)
    data = Path(path).read_bytes()
    if looks_like_array(data):
        grays, indexed = array_images(read_array(data, source), source, shape)
    else:
        grays, indexed = decode_image(data, source)[None], False
    try:
        images = np.stack([as_dataset_image(gray, framing, center, shape) for gray in grays])
    except ImageInputError as exc:
        raise ImageInputError(f"{source}: {exc}") from None
    return InputImages(source, images, indexed)


# Weights far larger than training makes them overflow the network's outputs to inf and NaN:
# what the command line and the app say instead of a probability.
OVERFLOW = "the model's outputs for it overflow float32, so there are no probabilities (its weights are far larger than training makes them)"


def model_inputs(images: np.ndarray, normalization: dict) -> np.ndarray:
    """Network input float32 (n, H*W) of uint8 images (n, H, W), normalised like the training data."""
    return Normalization(mean=float(normalization["mean"]), std=float(normalization["std"])).apply(images)
