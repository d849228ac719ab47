"""How much parsing the training images costs beyond decompressing them.

    python benchmarks/parse_speed.py DATA_DIR [--repeat 9]

Times read_idx on DATA_DIR/train-images-idx3-ubyte(.gz) against a bare gzip.decompress of
the same file (both read the file from disk each run), alternating the two, and prints one
JSON line with the median seconds of each and their ratio. The target is a ratio of about
1.2 or less: the parse itself should be a view on the decompressed bytes, not a copy loop.
"""

from __future__ import annotations

import argparse
import gzip
import json
import statistics
import time
from pathlib import Path

from mnist_pipeline.data.download import locate_idx
from mnist_pipeline.data.idx import read_idx


def bare_gunzip(path: Path) -> bytes:
    data = path.read_bytes()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    path = locate_idx(args.data_dir, "train-images-idx3-ubyte")

    timings: dict[str, list[float]] = {"gzip_decompress_s": [], "read_idx_s": []}
    for _ in range(args.repeat):
        for key, run in (("gzip_decompress_s", bare_gunzip), ("read_idx_s", read_idx)):
            start = time.perf_counter()
            result = run(path)
            timings[key].append(time.perf_counter() - start)
            del result
    shape = read_idx(path).shape
    medians = {key: statistics.median(values) for key, values in timings.items()}
    print(
        json.dumps(
            {
                "file": str(path),
                "shape": list(shape),
                "repeat": args.repeat,
                **{key: round(value, 4) for key, value in medians.items()},
                "ratio": round(medians["read_idx_s"] / medians["gzip_decompress_s"], 3),
            }
        )
    )


if __name__ == "__main__":
    main()
