"""Hostile files made in the test and small on disk: a gzip bomb and a PNG of huge declared size.

Both hold long runs of zero bytes. Deflate reset by a full flush encodes the same input as the
same bytes, so one megabyte of zeros is compressed once (about 1 kB) and repeated: a gigabyte of
content costs a megabyte on disk and a fraction of a second to make, with valid checksums.
"""

from __future__ import annotations

import struct
import zlib

MIB = 1 << 20
_ZERO_MIB = bytes(MIB)


def _deflate_zeros(prefix: bytes, n_zeros: int) -> bytes:
    """Raw deflate of `prefix` followed by n_zeros zero bytes."""
    n_mib, rest = divmod(n_zeros, MIB)
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = packer.compress(prefix) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(_ZERO_MIB) + packer.flush(zlib.Z_FULL_FLUSH)
    return head + block * n_mib + packer.compress(bytes(rest)) + packer.flush()


def _checksum(function, start: int, prefix: bytes, n_zeros: int) -> int:
    """zlib.crc32 or zlib.adler32 of `prefix` followed by n_zeros zero bytes."""
    n_mib, rest = divmod(n_zeros, MIB)
    value = function(prefix, start)
    for _ in range(n_mib):
        value = function(_ZERO_MIB, value)
    return function(bytes(rest), value)


def gzip_bomb(prefix: bytes, n_zeros: int) -> bytes:
    """A valid .gz of `prefix` (say an IDX header) followed by n_zeros zero bytes."""
    crc = _checksum(zlib.crc32, 0, prefix, n_zeros)
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"  # deflate, no name, mtime 0
    trailer = struct.pack("<II", crc, (len(prefix) + n_zeros) & 0xFFFFFFFF)
    return header + _deflate_zeros(prefix, n_zeros) + trailer


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def huge_png(width: int, height: int) -> bytes:
    """A valid black 1-bit grayscale PNG of width x height (a 20000x20000 one is about 50 kB).

    Its pixel data is rows of zeros (filter byte 0, then width/8 zero bytes): all zero bytes."""
    n_zeros = height * (1 + (width + 7) // 8)
    adler = _checksum(zlib.adler32, 1, b"", n_zeros)
    stream = b"\x78\xda" + _deflate_zeros(b"", n_zeros) + struct.pack(">I", adler)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", stream) + _png_chunk(b"IEND", b"")
