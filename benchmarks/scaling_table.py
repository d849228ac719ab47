"""Each stage's time and peak memory across datasets of growing size, against the memory bound.

    python benchmarks/scaling_table.py fmnist-x1 fmnist-x3 fmnist-x10 [--results DIR ...] [--experiment baseline]

Reads the benchmark files Snakemake wrote under DIR/<dataset>/benchmarks/ (and
peak_rss.json, which scaling_run.py writes there) and prints a Markdown table: per stage
and dataset the wall seconds and the peak RSS (MiB) beside its bound,
and from each dataset to the next how much the data grew beside how much the time grew
(at most linear when the second is not above the first). Given several --results
directories (repeated runs), the time is the fastest run's, as waiting for a core on a
shared machine only ever adds time, and the RSS the highest.

The bound is 1.5 times the float32 size of the images the stage holds, plus 300 MiB:

    download, parse, prepare   every training and test image
    train                      the train and val splits
    evaluate                   the test and val splits
    report                     the test images

Row counts come from the prepared Parquet files' footers, the image size from
parsed/dataset.json. The peak RSS is peak_rss.json's when there is one: Snakemake's max_rss
is sampled (every 0.5 s for 15 s, then every 30 s), so it misses jobs shorter than half a
second and can miss a spike late in a long one.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from pathlib import Path

import pyarrow.parquet as pq

from mnist_pipeline.fileio import read_json

MIB = 2**20
BASE_MIB = 300
STAGES = {
    "download": ("download.tsv", ("train", "val", "test")),
    "parse": ("parse.tsv", ("train", "val", "test")),
    "prepare": ("prepare.tsv", ("train", "val", "test")),
    "train": ("train/{experiment}.tsv", ("train", "val")),
    "evaluate": ("evaluate/{experiment}.tsv", ("test", "val")),
    "report": ("report.tsv", ("test",)),
}


def benchmark(base: Path, stage: str, tsv: str) -> tuple[float, float]:
    """(wall seconds, peak RSS MiB) of a stage: Snakemake's benchmark file, the RSS from peak_rss.json if there."""
    with open(base / "benchmarks" / tsv, newline="") as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    exact = base / "benchmarks" / "peak_rss.json"
    rss = read_json(exact)[stage] if exact.is_file() else float(row["max_rss"])
    return float(row["s"]), rss


def dataset_sizes(base: Path) -> tuple[dict[str, int], int]:
    """Rows of each prepared split and pixels per image."""
    rows = {split: pq.ParquetFile(base / "prepared" / f"{split}.parquet").metadata.num_rows for split in ("train", "val", "test")}
    return rows, math.prod(read_json(base / "parsed" / "dataset.json")["image_shape"])


def measure(results: list[Path], dataset: str, experiment: str) -> dict[str, dict[str, float]]:
    """Per stage: fastest time, highest RSS over the runs in `results`, the bound, and the dataset's row count."""
    rows, pixels = dataset_sizes(results[0] / dataset)
    out = {}
    for stage, (tsv, holds) in STAGES.items():
        runs = [benchmark(base / dataset, stage, tsv.format(experiment=experiment)) for base in results]
        float32_mib = sum(rows[split] for split in holds) * pixels * 4 / MIB
        out[stage] = {
            "s": min(s for s, _ in runs), "rss": max(rss for _, rss in runs),
            "bound": 1.5 * float32_mib + BASE_MIB, "n": sum(rows.values()),
        }
    return out


def table(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: per stage, seconds and peak RSS / bound for each dataset, then data and time growth."""
    names = list(runs)
    steps = list(itertools.pairwise(names))
    header = ["stage", *(f"{name} s" for name in names), *(f"{name} peak RSS / bound, MiB" for name in names),
              *(f"{b} / {a}: data, time" for a, b in steps)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for stage in STAGES:
        figures = [runs[name][stage] for name in names]
        times = [f"{m['s']:.1f}" for m in figures]
        memory = [f"{m['rss']:.0f} / {m['bound']:.0f}" + ("" if m["rss"] < m["bound"] else " **over**") for m in figures]
        growth = [f"{runs[b][stage]['n'] / runs[a][stage]['n']:.2f}x, {runs[b][stage]['s'] / runs[a][stage]['s']:.2f}x" for a, b in steps]
        lines.append("| " + " | ".join([stage, *times, *memory, *growth]) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("datasets", nargs="+", help="dataset names under each results directory, smallest first")
    parser.add_argument("--results", type=Path, action="append", help="a results directory (repeat for repeated runs; default: results)")
    parser.add_argument("--experiment", default="baseline")
    args = parser.parse_args()
    results = args.results or [Path("results")]
    print(table({name: measure(results, name, args.experiment) for name in args.datasets}))


if __name__ == "__main__":
    main()
