"""A k-times larger Fashion-MNIST, as a custom IDX dataset, for measuring cost as the data grows.

    python benchmarks/scaled_dataset.py /usr/share/datasets/fashion-mnist OUT_DIR --factor 10

Writes the four IDX files (gzipped) to OUT_DIR: copy 0 of each split is the original, copy
j > 0 is every image shifted by SHIFTS[j - 1] pixels (zero fill), with the same labels. Both
splits grow: 60k * k training and 10k * k test images, so every stage, evaluate and report
included, sees k times the data. The source split is held once (47 MB for the training
images); each copy is shifted and streamed into the gzip file in turn, so memory does not
grow with k. The bytes depend only on the source and k (gzip mtime 0). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

from mnist_pipeline.data.download import locate_idx
from mnist_pipeline.data.idx import encode_header, read_images_and_labels
from mnist_pipeline.fileio import atomic_path

# (rows, cols) of copy j, for j = 1, 2, ...; the nearest shifts first, as augmentation would.
SHIFTS = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (1, -1), (-1, 1), (-1, -1), (0, 2), (0, -2), (2, 0), (-2, 0)]
SPLITS = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"), "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}


def shifted(images: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """images (n, h, w) moved down `rows` and right `cols` pixels; what moves in is 0."""
    out = np.zeros_like(images)
    h, w = images.shape[1:]
    out[:, max(rows, 0) : h + min(rows, 0), max(cols, 0) : w + min(cols, 0)] = images[
        :, max(-rows, 0) : h - max(rows, 0), max(-cols, 0) : w - max(cols, 0)
    ]
    return out


def write_copies(path: Path, array: np.ndarray, factor: int, transform) -> None:
    """IDX of `factor` copies of `array` one after another, copy j being transform(array, j)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=6, mtime=0, filename="") as out:
        out.write(encode_header(array.dtype, (len(array) * factor, *array.shape[1:]), str(path)))
        for copy in range(factor):
            out.write(np.ascontiguousarray(transform(array, copy)).tobytes())


def build(source: Path, out_dir: Path, factor: int) -> dict:
    if not 1 <= factor <= len(SHIFTS) + 1:
        raise SystemExit(f"--factor {factor}: expected 1 to {len(SHIFTS) + 1} (one copy per shift in SHIFTS, plus the original)")
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split, (image_stem, label_stem) in SPLITS.items():
        images, labels = read_images_and_labels(locate_idx(source, image_stem), locate_idx(source, label_stem))
        write_copies(out_dir / f"{image_stem}.gz", images, factor, lambda a, j: a if j == 0 else shifted(a, *SHIFTS[j - 1]))
        write_copies(out_dir / f"{label_stem}.gz", labels, factor, lambda a, j: a)
        counts[split] = len(labels) * factor
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="directory with the four Fashion-MNIST IDX files")
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--factor", type=int, default=10, help="how many copies of each split (1 = the original)")
    args = parser.parse_args()
    start = time.perf_counter()
    counts = build(args.source, args.out_dir, args.factor)
    print(json.dumps({"out_dir": str(args.out_dir), "factor": args.factor, **counts, "seconds": round(time.perf_counter() - start, 1)}))


if __name__ == "__main__":
    main()
