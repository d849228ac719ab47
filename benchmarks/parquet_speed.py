#!/usr/bin/env python3
"""How fast and how large the prepared Parquet splits are, per encoding, on real IDX files.

    python benchmarks/parquet_speed.py /usr/share/datasets/fashion-mnist [--repeat 5]

Normalizes the 60k training images as the prepare stage does, writes them with each candidate
encoding, reads them back through `tables.read_split` into a float32 (n, 784) array, and prints
one JSON line per encoding (write and read seconds as medians, size, size relative to the
gzipped IDX files). The encoding tables.py ships is marked "chosen".
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from unittest import mock

import numpy as np

from mnist_pipeline.data import tables
from mnist_pipeline.data.download import locate_idx
from mnist_pipeline.data.idx import read_images_and_labels
from mnist_pipeline.data.splits import fit_normalization

CANDIDATES = {
    "zstd-1 + dictionary": dict(compression="zstd", compression_level=1, use_dictionary=True),
    "zstd-3 + dictionary": dict(compression="zstd", compression_level=3, use_dictionary=True),
    "zstd-9 + dictionary": dict(compression="zstd", compression_level=9, use_dictionary=True),
    "snappy + dictionary": dict(compression="snappy", use_dictionary=True),
    "uncompressed + dictionary": dict(compression="none", use_dictionary=True),
    "zstd-3 plain": dict(compression="zstd", compression_level=3, use_dictionary=False),
    "zstd-3 byte-stream-split": dict(compression="zstd", compression_level=3, use_dictionary=False, column_encoding={"pixels": "BYTE_STREAM_SPLIT"}),
}


def median_seconds(action, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    images_path = locate_idx(args.data_dir, "train-images-idx3-ubyte")
    labels_path = locate_idx(args.data_dir, "train-labels-idx1-ubyte")
    images, labels = read_images_and_labels(images_path, labels_path)
    pixels = fit_normalization(images).apply(images)
    gz_bytes = images_path.stat().st_size + labels_path.stat().st_size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        shipped = dict(tables._WRITE_OPTIONS)
        for name, options in CANDIDATES.items():
            with mock.patch.dict(tables._WRITE_OPTIONS, options, clear=True):
                write_s = median_seconds(lambda: tables.write_split(path, np.arange(len(labels)), labels, pixels, {"name": "train"}), args.repeat)
            read_s = median_seconds(lambda: tables.read_split(path), args.repeat)
            back = tables.read_split(path).pixels
            assert np.array_equal(back, pixels) and back.flags.c_contiguous, name
            size = path.stat().st_size
            chosen = options == shipped
            print(json.dumps({"encoding": name, "rows": len(labels), "write_s": round(write_s, 3), "read_s": round(read_s, 3),
                              "mb": round(size / 1e6, 2), "vs_gz_idx": round(size / gz_bytes, 3), "chosen": chosen}), flush=True)


if __name__ == "__main__":
    main()
