"""Turning user images into MNIST-format input: inversion, cropping, scaling, centring, file formats."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageDraw

from hostile import huge_png
from mnist_pipeline.data.idx import read_idx, write_idx
from mnist_pipeline.data.preprocess import (
    FRAMINGS,
    MAX_IMAGE_PIXELS,
    MNIST_FRAMING,
    array_images,
    as_dataset_image,
    check_image_size,
    decode_image,
    load_images,
    model_inputs,
    to_gray,
    to_mnist,
)
from mnist_pipeline.data.splits import Normalization
from mnist_pipeline.errors import IdxFormatError, ImageInputError


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    ys, xs = np.indices(image.shape)
    total = image.astype(np.float64).sum()
    return float((ys * image).sum() / total), float((xs * image).sum() / total)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of two 28x28 images, the best over shifts of one pixel: centring rounds to whole
    pixels, so the same digit drawn at two sizes may land one pixel apart."""
    padded = np.pad(b.astype(np.float64), 1)
    return max(
        float(np.corrcoef(a.ravel(), padded[1 + dy : 29 + dy, 1 + dx : 29 + dx].ravel())[0, 1])
        for dy in (-1, 0, 1) for dx in (-1, 0, 1)
    )


def ink_box(image: np.ndarray, level: int = 40) -> tuple[int, int]:
    """Height and width of the box around pixels brighter than `level`."""
    rows, cols = np.flatnonzero((image > level).any(axis=1)), np.flatnonzero((image > level).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def seven(size: tuple[int, int], origin: tuple[int, int], scale: float, ink: str, paper: str, mode: str = "L") -> Image.Image:
    """A hand-drawn-looking 7 (two thick strokes) at `origin`, `scale` times a 20-px glyph, on `paper`."""
    image = Image.new(mode, size, paper)
    draw = ImageDraw.Draw(image)
    x, y = origin
    points = [(x, y), (x + 16 * scale, y), (x + 6 * scale, y + 20 * scale)]
    draw.line(points, fill=ink, width=max(1, round(2.5 * scale)), joint="curve")
    return image


def test_off_centre_inverted_large_image_becomes_mnist_like():
    # Black pen on white paper, 600x400, the digit up in the right-hand corner at 12x MNIST size.
    photo = seven((600, 400), origin=(380, 30), scale=9, ink="black", paper="white")
    digit = to_mnist(to_gray(photo))
    assert digit.shape == (28, 28) and digit.dtype == np.uint8
    # Light ink on black, like MNIST: mostly black, the strokes bright.
    assert (digit == 0).mean() > 0.6 and digit[:4, :4].max() == digit[:4, -4:].max() == 0
    assert digit.max() >= 250
    # The longer side fits the 20-pixel box; the centre of mass is at the field's centre.
    assert max(ink_box(digit)) in (19, 20, 21)
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    # The same 7 drawn small, light on dark and centred gives (nearly) the same image.
    clean = to_mnist(np.asarray(seven((80, 80), origin=(10, 8), scale=3, ink="white", paper="black")))
    assert similarity(digit, clean) > 0.9


def test_real_images_enlarged_and_moved_are_recovered(fashion_dir):
    """Real grey-level images, inverted, 7x larger and off-centre, framed like the originals.

    Faint parts (a sandal's straps) fall under the ink threshold once enlarged, so single
    images may differ more than the typical one.
    """
    images = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")[:30]
    for framing in (FRAMINGS["fashion-mnist"], MNIST_FRAMING):
        scores = []
        for original in images:
            big = Image.fromarray(255 - original).resize((196, 196), Image.Resampling.BICUBIC)
            page = Image.new("L", (500, 300), 255)
            page.paste(big, (290, 90))
            recovered = to_mnist(np.asarray(page), framing)
            # Compared with what the same framing makes of the dataset image itself...
            scores.append(similarity(recovered, to_mnist(original, framing)))
            if framing.box == 28:
                # ...and, for Fashion-MNIST's own framing (the item fills the field), with the image.
                scores.append(similarity(recovered, original))
        assert min(scores) > 0.8 and np.mean(scores) > 0.93


def test_dataset_images_pass_through_unchanged(fashion_dir):
    images = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")
    for image in images[:: 5]:
        assert np.array_equal(as_dataset_image(image), image)


def test_dark_on_light_28x28_is_inverted_not_reframed():
    image = np.full((28, 28), 255, np.uint8)
    image[3:9, 2:6] = 0
    out = as_dataset_image(image)
    assert np.array_equal(out, 255 - image)
    assert not np.array_equal(as_dataset_image(image, center="always"), out)


@settings(max_examples=40, deadline=None)
@given(
    width=st.integers(60, 500), height=st.integers(60, 500), fx=st.floats(0, 1), fy=st.floats(0, 1),
    scale=st.floats(1.5, 2.8), dark_on_light=st.booleans(),
)
def test_any_placement_is_centred_by_mass(width, height, fx, fy, scale, dark_on_light):
    glyph = (round(16 * scale) + 4, round(20 * scale) + 4)
    origin = (2 + round(fx * (width - glyph[0] - 4)), 2 + round(fy * (height - glyph[1] - 4)))
    ink, paper = ("black", "white") if dark_on_light else ("white", "black")
    size = (max(width, glyph[0] + 4), max(height, glyph[1] + 4))
    digit = to_mnist(to_gray(seven(size, origin, scale, ink, paper)))
    cy, cx = centre_of_mass(digit)
    assert abs(cy - 14) <= 0.5 and abs(cx - 14) <= 0.5
    assert max(ink_box(digit)) <= 21 and digit[0].max() == 0


def test_aspect_ratio_is_kept():
    bar = np.zeros((300, 300), np.uint8)
    bar[20:220, 100:120] = 255  # 200 tall, 20 wide: a "1"
    height, width = ink_box(to_mnist(bar))
    assert height == 20 and width == 2


def test_ink_at_the_edge_is_clipped_not_an_error():
    # Nearly all the mass is in one corner blob with a long thin tail: centring by mass
    # pushes the tail out of the field.
    image = np.zeros((200, 200), np.uint8)
    image[0:40, 0:40] = 255
    image[0:2, 40:200] = 255
    digit = to_mnist(image)
    assert digit.shape == (28, 28) and digit.max() > 200


def test_blank_and_transparent_images_are_refused():
    with pytest.raises(ImageInputError, match="blank"):
        to_mnist(np.full((50, 50), 200, np.uint8))
    with pytest.raises(ImageInputError, match="transparent"):
        to_gray(Image.new("RGBA", (50, 50), (0, 0, 0, 0)))


@pytest.mark.parametrize("stroke", ["white", "black", "red"])
def test_canvas_drawing_on_transparent_background(stroke):
    """A browser canvas exports RGBA with transparent paper: the strokes are the ink, whatever their colour."""
    drawing = seven((280, 280), origin=(70, 40), scale=8, ink=stroke, paper=(0, 0, 0, 0), mode="RGBA")
    opaque = seven((280, 280), origin=(70, 40), scale=8, ink="white", paper="black")
    assert similarity(to_mnist(to_gray(drawing)), to_mnist(np.asarray(opaque))) > 0.98


def test_decode_16_bit_and_palette_images():
    deep = np.zeros((40, 40), np.uint16)
    deep[10:30, 18:22] = 65535
    buffer = io.BytesIO()
    Image.fromarray(deep).save(buffer, format="PNG")
    gray = decode_image(buffer.getvalue())
    assert gray.dtype == np.uint8 and gray.max() == 255 and gray[0, 0] == 0
    buffer = io.BytesIO()
    seven((60, 60), (10, 10), 2, "black", "white").convert("P").save(buffer, format="GIF")
    assert decode_image(buffer.getvalue()).min() == 0


@pytest.mark.parametrize(
    "array, count, indexed",
    [
        (np.zeros(784, np.uint8), 1, False),
        (np.zeros((3, 784), np.uint8), 3, True),
        (np.zeros((28, 28), np.uint8), 1, False),
        (np.zeros((2, 28, 28), np.int64), 2, True),
        (np.ones((28, 28), bool), 1, False),
        (np.full((50, 40), 0.5, np.float32), 1, False),
    ],
)
def test_array_shapes_and_types(array, count, indexed):
    images, stacked = array_images(array, "a.npy")
    assert images.dtype == np.uint8 and len(images) == count and stacked is indexed


def test_array_values_scaled_from_unit_floats():
    images, _ = array_images(np.array([[0.0, 1.0], [0.5, 0.25]]), "a.npy")
    assert images[0].tolist() == [[0, 255], [128, 64]]


@pytest.mark.parametrize(
    "array, message",
    [
        (np.full((28, 28), -0.4), r"\[-0.4, -0.4\].*\[0, 255\]"),
        (np.full((28, 28), 300), r"\[300, 300\]"),
        (np.array([[np.nan, 1.0]]), "NaN"),
        (np.zeros((2, 2, 28, 28)), r"shape \(2, 2, 28, 28\)"),
        (np.array([["a", "b"]]), "dtype"),
    ],
)
def test_bad_arrays_name_the_file_and_the_problem(array, message):
    with pytest.raises(ImageInputError, match=message) as info:
        array_images(array, "bad.npy")
    assert "bad.npy" in str(info.value)


def test_format_is_told_by_content_not_name(tmp_path, fashion_dir):
    images = read_idx(fashion_dir / "t10k-images-idx3-ubyte.gz")[:4]
    write_idx(tmp_path / "looks-like.png", images)  # IDX, uncompressed, under a misleading name
    Image.fromarray(images[0]).save(tmp_path / "looks-like.npy", format="PNG")
    idx = load_images(tmp_path / "looks-like.png")
    assert idx.indexed and np.array_equal(idx.images, images)
    png = load_images(tmp_path / "looks-like.npy")
    assert not png.indexed and np.array_equal(png.images[0], images[0])


def test_damaged_inputs(tmp_path):
    good = io.BytesIO()
    Image.new("L", (64, 64), 0).save(good, format="PNG")
    (tmp_path / "cut.png").write_bytes(good.getvalue()[:40])
    with pytest.raises(ImageInputError, match="cut.png"):
        load_images(tmp_path / "cut.png")
    (tmp_path / "short.idx").write_bytes(b"\x00\x00\x08\x03" + b"\x00\x00\x00\x05" * 3 + b"\x00" * 10)
    with pytest.raises(IdxFormatError, match="short.idx"):
        load_images(tmp_path / "short.idx")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(ImageInputError, match="not a PNG, JPEG, IDX or .npy"):
        load_images(tmp_path / "text.png")


def test_images_past_the_pixel_limit_are_refused_with_their_size():
    assert MAX_IMAGE_PIXELS == 50_000_000
    # Past our limit, below Pillow's: refused from the header, before decoding.
    with pytest.raises(ImageInputError) as caught:
        decode_image(huge_png(8000, 6251), "wide.png")
    assert str(caught.value) == (
        "wide.png: the image is too large: 8000x6251 pixels (50,008,000), more than the 50,000,000 pixels accepted;"
        " scale it down first"
    )
    # Past Pillow's own limit, which it enforces as it opens the file.
    with pytest.raises(ImageInputError, match=r"^huge.png: the image is too large: 400,000,000 pixels, more than"):
        decode_image(huge_png(20000, 20000), "huge.png")
    check_image_size((10_000, 5_000), "fits.png")  # exactly the limit: taken
    stack = np.broadcast_to(np.uint8(0), (2, 8000, 6251))  # no memory: every element is the same byte
    with pytest.raises(ImageInputError, match=r"^stack.npy: the image is too large: 6251x8000 pixels"):
        array_images(stack, "stack.npy")


def test_an_empty_file_is_called_empty(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ImageInputError) as caught:
        load_images(tmp_path / "empty.png")
    assert str(caught.value) == f"{tmp_path / 'empty.png'}: the file is empty (0 bytes); expected a PNG, JPEG, IDX or .npy file"


def test_a_npy_header_declaring_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "|u1", "fortran_order": False, "shape": (10**11,)})
    (tmp_path / "lying.npy").write_bytes(header.getvalue() + bytes(10))
    with pytest.raises(ImageInputError) as caught:
        load_images(tmp_path / "lying.npy")
    assert str(caught.value) == (
        f"{tmp_path / 'lying.npy'}: damaged .npy file (its header declares shape (100000000000,) of uint8,"
        " 100,000,000,000 bytes, but only 10 bytes follow it)"
    )


def test_model_inputs_normalise_like_the_prepared_splits():
    images = np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8)
    x = model_inputs(images, {"mean": 0.28, "std": 0.35, "scale": 255.0})
    assert x.dtype == np.float32 and x.shape == (3, 784)
    np.testing.assert_array_equal(x, Normalization(0.28, 0.35).apply(images))
    np.testing.assert_allclose(x[0, :5], (images[0, 0, :5] / 255 - 0.28) / 0.35, rtol=1e-5)


@pytest.mark.parametrize("shape", [(20, 20), (32, 32), (20, 40)])
def test_framing_scales_the_box_and_the_centre_to_the_models_size(shape):
    photo = seven((600, 400), origin=(380, 30), scale=9, ink="black", paper="white")
    digit = to_mnist(to_gray(photo), MNIST_FRAMING, shape)
    assert digit.shape == shape and digit.max() >= 250
    # MNIST's 20-of-28 box, in proportion: the 7 is taller than wide, so its height sets the scale.
    assert abs(ink_box(digit)[0] - 20 * shape[0] / 28) <= 1.5
    cy, cx = centre_of_mass(digit)
    assert abs(cy - shape[0] / 2) <= 0.5 and abs(cx - shape[1] / 2) <= 0.5


def test_images_and_flat_arrays_of_the_models_size_are_taken_as_they_are(tmp_path):
    image = np.zeros((20, 20), np.uint8)
    image[4:9, 10:15] = 200
    assert np.array_equal(as_dataset_image(image, shape=(20, 20)), image)
    np.save(tmp_path / "flat.npy", np.stack([image.reshape(400)] * 3))
    loaded = load_images(tmp_path / "flat.npy", shape=(20, 20))
    assert loaded.images.shape == (3, 20, 20) and loaded.indexed and np.array_equal(loaded.images[1], image)
