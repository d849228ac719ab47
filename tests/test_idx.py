"""IDX reading and writing: the published layout, every refusal, and property tests."""

from __future__ import annotations

import gzip
import struct
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from hostile import MIB, gzip_bomb
from mnist_pipeline.data.idx import (
    DTYPES,
    MAX_IDX_BYTES,
    encode_idx,
    parse_idx,
    read_header,
    read_idx,
    read_images_and_labels,
    write_idx,
)
from mnist_pipeline.errors import IdxFormatError

# Every dtype the format has, in both byte orders a caller might hand us.
DTYPE_CHOICES = [dtype.newbyteorder(order) for dtype in DTYPES.values() for order in "<>"]
arrays = hnp.arrays(
    dtype=st.sampled_from(DTYPE_CHOICES),
    shape=hnp.array_shapes(min_dims=1, max_dims=4, min_side=0, max_side=5),
)


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Equal shape, kind and size, and equal bytes in one byte order (NaN payloads and -0.0 included)."""
    big = a.dtype.newbyteorder(">")
    return a.shape == b.shape and (a.dtype.kind, a.dtype.itemsize) == (b.dtype.kind, b.dtype.itemsize) and (
        a.astype(big).tobytes() == b.astype(big).tobytes()
    )


# --- the published layout -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "values", "payload"),
    [
        (0x08, np.array([1, 255], np.uint8), b"\x01\xff"),
        (0x09, np.array([1, -1], np.int8), b"\x01\xff"),
        (0x0B, np.array([0x0102, -2], np.int16), b"\x01\x02\xff\xfe"),
        (0x0C, np.array([0x01020304, -2], np.int32), b"\x01\x02\x03\x04\xff\xff\xff\xfe"),
        (0x0D, np.array([1.0, -2.0], np.float32), b"\x3f\x80\x00\x00\xc0\x00\x00\x00"),
        (0x0E, np.array([1.0, -2.0], np.float64), b"\x3f\xf0" + bytes(6) + b"\xc0\x00" + bytes(6)),
    ],
)
def test_every_dtype_code_is_big_endian_on_disk_and_native_in_memory(code, values, payload):
    data = bytes((0, 0, code, 1)) + struct.pack(">I", 2) + payload
    parsed = parse_idx(data, "x.idx")
    assert parsed.dtype == values.dtype and parsed.dtype.isnative
    np.testing.assert_array_equal(parsed, values)
    assert encode_idx(values) == data
    assert encode_idx(values.astype(values.dtype.newbyteorder(">"))) == data


def test_mnist_style_header_and_many_dimensions():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    data = encode_idx(images)
    assert data[:16] == b"\x00\x00\x08\x03" + struct.pack(">III", 2, 3, 4)
    five = np.zeros((1, 2, 1, 2, 1), np.float32)
    assert parse_idx(encode_idx(five), "five").shape == (1, 2, 1, 2, 1)


def test_ubyte_parse_is_a_read_only_view_not_a_copy():
    data = encode_idx(np.arange(12, dtype=np.uint8).reshape(3, 4))
    parsed = parse_idx(data, "x")
    assert parsed.base is not None and not parsed.flags.writeable
    assert np.shares_memory(parsed, np.frombuffer(data, np.uint8))


def test_gzip_is_detected_by_magic_not_by_name(tmp_path):
    array = np.arange(6, dtype=np.int16).reshape(2, 3)
    write_idx(tmp_path / "a.gz", array)
    (tmp_path / "a.gz").rename(tmp_path / "gzipped-but-no-suffix")
    write_idx(tmp_path / "raw", array)
    (tmp_path / "raw").rename(tmp_path / "raw-but-named.gz")
    for name in ("gzipped-but-no-suffix", "raw-but-named.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / name), array)


def test_written_gzip_is_deterministic_without_time_or_name(tmp_path):
    array = np.arange(100, dtype=np.float64)
    write_idx(tmp_path / "one.gz", array)
    write_idx(tmp_path / "two.gz", array)
    data = (tmp_path / "one.gz").read_bytes()
    assert data == (tmp_path / "two.gz").read_bytes()
    assert data[:2] == b"\x1f\x8b" and data[3] & 0x08 == 0, "no FNAME field"
    assert data[4:8] == b"\x00\x00\x00\x00", "mtime 0"
    assert gzip.decompress(data) == encode_idx(array)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.gz", "two.gz"], "no temporary file left"


@pytest.mark.parametrize(
    ("array", "fault"),
    [
        (np.zeros(3, np.int64), "cannot store dtype int64"),
        (np.zeros(3, bool), "cannot store dtype bool"),
        (np.zeros(3, np.uint16), "cannot store dtype uint16"),
        (np.array(5, np.uint8), "1 to 255 dimensions, the array has 0"),
    ],
)
def test_writer_refuses_what_idx_cannot_hold(tmp_path, array, fault):
    with pytest.raises(IdxFormatError, match=fault) as caught:
        write_idx(tmp_path / "out.idx", array)
    assert str(tmp_path / "out.idx") in str(caught.value)
    assert list(tmp_path.iterdir()) == []


# --- refusals, each naming the file and the fault -----------------------------------------

GOOD = encode_idx(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))


@pytest.mark.parametrize(
    ("data", "fault"),
    [
        (b"\x01\x00" + GOOD[2:], "bad magic number 0x01000803"),
        (b"PK\x03\x04" + GOOD[4:], "bad magic number 0x504b0304"),
        (GOOD[:2] + b"\x0a" + GOOD[3:], "unknown IDX dtype code 0x0A"),
        (b"\x00\x00\x08\x00", "declares zero dimensions"),
        (b"\x00\x00", "2 bytes is too short"),
        (GOOD[:10], "3 dimensions, which need 16 header bytes, but the file has only 10"),
        (GOOD[:-1], r"payload is shorter than the header says: shape \(2, 3, 4\) of uint8 needs 24 bytes"),
        (GOOD + b"\x00", r"payload is longer than the header says: .* the file has 25"),
        (b"\x00\x00\x0d\x01" + struct.pack(">I", 2**32 - 1), "needs 17179869180 bytes"),
    ],
)
def test_faults_are_refused_naming_file_and_fault(tmp_path, data, fault):
    path = tmp_path / "train-images-idx3-ubyte"
    path.write_bytes(data)
    with pytest.raises(IdxFormatError, match=fault) as caught:
        read_idx(path)
    assert str(caught.value).startswith(f"{path}: ")


@pytest.mark.parametrize(
    ("mangle", "fault"),
    [
        (lambda gz: gz[:-10], "Compressed file ended before the end-of-stream marker"),
        (lambda gz: gz[:-8] + bytes(4) + gz[-4:], "CRC check failed"),
        (lambda gz: gz[:12] + bytes(8) + gz[20:], ""),
        (lambda gz: gz + b"trailing junk", "Not a gzipped file"),
    ],
)
def test_a_bad_gzip_stream_is_refused(tmp_path, mangle, fault):
    path = tmp_path / "t10k-labels-idx1-ubyte.gz"
    path.write_bytes(mangle(gzip.compress(GOOD, mtime=0)))
    with pytest.raises(IdxFormatError, match=f"^{path}: bad gzip stream: .*{fault}"):
        read_idx(path)


# --- hostile files: bounded memory ---------------------------------------------------------

# 1000 images of 28x28: 784,000 bytes of payload after a 16-byte header.
THOUSAND_IMAGES = b"\x00\x00\x08\x03" + struct.pack(">III", 1000, 28, 28)


def peak_bytes_allocated(action) -> int:
    """The most memory Python and NumPy held at once while `action()` ran (it must raise IdxFormatError)."""
    tracemalloc.start()
    try:
        with pytest.raises(IdxFormatError):
            action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_gzip_bomb_is_refused_at_the_size_its_header_declares(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    path.write_bytes(gzip_bomb(THOUSAND_IMAGES, 256 * MIB))  # 256 MiB of zeros, 0.3 MB on disk
    stored = path.stat().st_size
    with pytest.raises(IdxFormatError) as caught:
        read_idx(path)
    assert str(caught.value) == (
        f"{path}: payload is longer than the header says: shape (1000, 28, 28) of uint8 needs 784000 bytes after"
        f" the 16-byte header, but the {stored}-byte gzip file decompresses to more than 784016 bytes;"
        " decompression stopped there (a damaged file, or a decompression bomb)"
    )
    # The declared content and a chunk, never the 256 MiB.
    assert peak_bytes_allocated(lambda: read_idx(path)) < 784_016 + 4 * MIB


def test_a_header_declaring_more_than_the_ceiling_is_refused_before_decompressing(tmp_path):
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    declared = 16 + 100_000 * 100 * 200  # 2 GB
    path.write_bytes(gzip_bomb(b"\x00\x00\x08\x03" + struct.pack(">III", 100_000, 100, 200), 64 * MIB))
    with pytest.raises(IdxFormatError, match=f"^{path}: .* {declared} bytes in all, more than the {MAX_IDX_BYTES} bytes"):
        read_idx(path)
    assert peak_bytes_allocated(lambda: read_idx(path)) < MIB


# --- read_images_and_labels ---------------------------------------------------------------------------


@pytest.fixture
def split(tmp_path):
    def write(images, labels):
        write_idx(tmp_path / "images.gz", images)
        write_idx(tmp_path / "labels.gz", labels)
        return tmp_path / "images.gz", tmp_path / "labels.gz"

    return write


def test_read_images_and_labels_returns_images_and_labels(split):
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    labels = np.array([0, 9, 3, 3, 1], np.uint8)
    got_images, got_labels = read_images_and_labels(*split(images, labels), n_classes=10)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)
    assert got_images.dtype == np.uint8 and got_labels.dtype == np.uint8


def test_read_images_and_labels_refuses_count_mismatch_naming_both_files(split):
    images_path, labels_path = split(np.zeros((5, 2, 2), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(IdxFormatError, match="holds 5 images but .* holds 4 labels") as caught:
        read_images_and_labels(images_path, labels_path)
    assert str(images_path) in str(caught.value) and str(labels_path) in str(caught.value)


def test_read_images_and_labels_refuses_labels_outside_the_class_range(split):
    images_path, labels_path = split(np.zeros((4, 2, 2), np.uint8), np.array([0, 1, 10, 12], np.uint8))
    with pytest.raises(IdxFormatError, match=rf"^{labels_path}: label 10 at index 2 is outside the class range \[0, 10\) \(2 labels"):
        read_images_and_labels(images_path, labels_path, n_classes=10)
    assert read_images_and_labels(images_path, labels_path, n_classes=13)[1].max() == 12


def test_read_images_and_labels_refuses_negative_labels_without_class_count(split):
    images_path, labels_path = split(np.zeros((2, 2, 2), np.uint8), np.array([0, -1], np.int8))
    with pytest.raises(IdxFormatError, match="label -1 at index 1 is outside the class range of non-negative labels"):
        read_images_and_labels(images_path, labels_path)


@pytest.mark.parametrize(
    ("images", "labels", "blamed", "fault"),
    [
        (np.zeros((2, 4), np.uint8), np.zeros(2, np.uint8), 0, r"shape \(n, rows, cols\), got uint8 with shape \(2, 4\)"),
        (np.zeros((2, 2, 2), np.float32), np.zeros(2, np.uint8), 0, "got float32"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros((2, 1), np.uint8), 1, r"shape \(n,\), got uint8 with shape \(2, 1\)"),
        (np.zeros((2, 2, 2), np.uint8), np.zeros(2, np.float64), 1, "integer labels"),
    ],
)
def test_read_images_and_labels_refuses_wrong_kinds_of_array(split, images, labels, blamed, fault):
    paths = split(images, labels)
    with pytest.raises(IdxFormatError, match=fault) as caught:
        read_images_and_labels(*paths)
    assert str(caught.value).startswith(f"{paths[blamed]}: ")


# --- properties ---------------------------------------------------------------------------


@given(arrays)
def test_round_trip_in_memory_is_exact(array):
    parsed = parse_idx(encode_idx(array), "mem")
    assert parsed.dtype.isnative and same_bits(parsed, array)


@settings(max_examples=40, deadline=None)
@given(arrays, st.sampled_from(["a.idx", "a.idx.gz"]))
def test_round_trip_through_files_is_exact(array, name):
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / name
        write_idx(path, array)
        assert same_bits(read_idx(path), array)


@given(arrays, st.data())
def test_any_truncation_is_refused(array, data):
    encoded = encode_idx(array)
    cut = data.draw(st.integers(0, len(encoded) - 1))
    with pytest.raises(IdxFormatError, match="^mem: "):
        parse_idx(encoded[:cut], "mem")


@given(arrays, st.binary(min_size=1, max_size=20))
def test_any_extra_bytes_are_refused(array, extra):
    with pytest.raises(IdxFormatError, match="^mem: payload is longer"):
        parse_idx(encode_idx(array) + extra, "mem")


@given(arrays, st.data())
def test_changed_bytes_are_refused_or_read_exactly_as_written(array, data):
    """IDX has no checksum, so a changed value is valid IDX; what it must never do is parse
    into something other than what the bytes say, or crash with anything but IdxFormatError."""
    encoded = bytearray(encode_idx(array))
    for _ in range(data.draw(st.integers(1, 3))):
        # Mostly the header, where a change shifts everything after it.
        limit = data.draw(st.sampled_from([min(len(encoded), 4 + 4 * array.ndim), len(encoded)]))
        encoded[data.draw(st.integers(0, limit - 1))] = data.draw(st.integers(0, 255))
    try:
        parsed = parse_idx(bytes(encoded), "mem")
    except IdxFormatError as error:
        assert str(error).startswith("mem: ")
    else:
        assert encode_idx(parsed) == bytes(encoded)


@given(st.binary(max_size=64))
def test_random_bytes_never_crash(blob):
    try:
        parsed = parse_idx(blob, "mem")
    except IdxFormatError:
        return
    assert encode_idx(parsed) == blob


@settings(max_examples=60, deadline=None)
@given(arrays, st.data())
def test_corrupted_gzip_is_refused_or_gives_the_original(array, data):
    packed = bytearray(gzip.compress(encode_idx(array), mtime=0))
    position = data.draw(st.integers(2, len(packed) - 1))  # keep the magic: else it is read as raw IDX
    packed[position] ^= data.draw(st.integers(1, 255))
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "x.gz"
        path.write_bytes(bytes(packed))
        try:
            parsed = read_idx(path)
        except IdxFormatError as error:
            assert str(error).startswith(f"{path}: ")
        else:  # a flip in the gzip header's time or OS byte changes nothing that matters
            assert same_bits(parsed, array)


@pytest.mark.parametrize("name", ["images-idx3-ubyte.gz", "images-idx3-ubyte"])
def test_read_header_reads_only_the_header(tmp_path, name):
    path = tmp_path / name
    write_idx(path, np.zeros((7, 20, 32), np.uint8))
    header = read_header(path)
    assert header.shape == (7, 20, 32) and header.dtype == np.uint8
    # Cut off the payload: the header alone is still read, the full parse refuses the file.
    raw = gzip.decompress(path.read_bytes()) if name.endswith(".gz") else path.read_bytes()
    path.write_bytes(gzip.compress(raw[:20]) if name.endswith(".gz") else raw[:20])
    assert read_header(path).shape == (7, 20, 32)
    with pytest.raises(IdxFormatError, match="shorter"):
        read_idx(path)
