"""Each stage's time and peak memory across datasets of growing size, against the memory bound.

    python benchmarks/scaling_table.py fmnist-x1 fmnist-x3 fmnist-x10 [--results results] [--experiment baseline]

Reads the benchmark files Snakemake wrote under RESULTS/<dataset>/benchmarks/ (`s`,
`cpu_time` and `max_rss` in MB) and prints a Markdown table: per stage and dataset the wall
and CPU seconds, the peak RSS and its bound, and from each dataset to the next the growth of
the data beside the growth of both times (at most linear when neither exceeds the data's).
CPU seconds are the steadier figure on a shared machine, where waiting for a core inflates
wall time. The bound is 1.5 times the
float32 size of the images the stage holds, plus 300 MB:

    download, parse, prepare   every training and test image
    train                      the train and val splits
    evaluate                   the test and val splits
    report                     the test images

Row counts come from the prepared Parquet files' footers, the image size from parsed/dataset.json.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from pathlib import Path

import pyarrow.parquet as pq

from mnist_pipeline.fileio import read_json

MB = 1e6
BASE_MB = 300
STAGES = {
    "download": ("download.tsv", ("train", "val", "test")),
    "parse": ("parse.tsv", ("train", "val", "test")),
    "prepare": ("prepare.tsv", ("train", "val", "test")),
    "train": ("train/{experiment}.tsv", ("train", "val")),
    "evaluate": ("evaluate/{experiment}.tsv", ("test", "val")),
    "report": ("report.tsv", ("test",)),
}


def benchmark(path: Path) -> dict[str, float]:
    """Wall seconds, CPU seconds and max_rss (MB) of a Snakemake benchmark file; its median run if it holds several."""
    with open(path, newline="") as handle:
        rows = sorted(csv.DictReader(handle, delimiter="\t"), key=lambda row: float(row["s"]))
    row = rows[len(rows) // 2]
    return {"s": float(row["s"]), "cpu": float(row["cpu_time"]), "rss": float(row["max_rss"])}


def dataset_sizes(base: Path) -> tuple[dict[str, int], int]:
    """Rows of each prepared split and pixels per image."""
    rows = {split: pq.ParquetFile(base / "prepared" / f"{split}.parquet").metadata.num_rows for split in ("train", "val", "test")}
    return rows, math.prod(read_json(base / "parsed" / "dataset.json")["image_shape"])


def measure(results: Path, dataset: str, experiment: str) -> dict[str, dict[str, float]]:
    base = results / dataset
    rows, pixels = dataset_sizes(base)
    out = {}
    for stage, (tsv, holds) in STAGES.items():
        figures = benchmark(base / "benchmarks" / tsv.format(experiment=experiment))
        float32_mb = sum(rows[split] for split in holds) * pixels * 4 / MB
        out[stage] = {**figures, "bound": 1.5 * float32_mb + BASE_MB, "n": rows["train"] + rows["val"] + rows["test"]}
    return out


def table(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: per stage, wall (CPU) seconds and peak RSS / bound for each dataset, then the growth of both times."""
    names = list(runs)
    steps = list(itertools.pairwise(names))
    header = (
        ["stage"] + [f"{name} s (CPU s)" for name in names] + [f"{name} peak RSS / bound, MB" for name in names]
        + [f"{b}/{a}: data, wall, CPU" for a, b in steps]
    )
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for stage in STAGES:
        figures = [runs[name][stage] for name in names]
        times = [f"{m['s']:.1f} ({m['cpu']:.1f})" for m in figures]
        memory = [f"{m['rss']:.0f} / {m['bound']:.0f}" + ("" if m["rss"] < m["bound"] else " **over**") for m in figures]
        growth = [
            f"{runs[b][stage]['n'] / runs[a][stage]['n']:.2f}x, {runs[b][stage]['s'] / runs[a][stage]['s']:.2f}x, "
            f"{runs[b][stage]['cpu'] / runs[a][stage]['cpu']:.2f}x"
            for a, b in steps
        ]
        lines.append("| " + " | ".join([stage, *times, *memory, *growth]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="dataset names under RESULTS, smallest first")
    parser.add_argument("--results", type=Path, default=Path("results"))
    parser.add_argument("--experiment", default="baseline")
    args = parser.parse_args()
    print(table({name: measure(args.results, name, args.experiment) for name in args.datasets}))


if __name__ == "__main__":
    main()
