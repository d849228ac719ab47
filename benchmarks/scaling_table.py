"""Each stage's time and peak memory across datasets of growing size, against the memory bound.

    python benchmarks/scaling_table.py fmnist-x1 fmnist-x3 fmnist-x10 [--results DIR ...] [--experiment baseline]

Reads the benchmark files Snakemake wrote under DIR/<dataset>/benchmarks/ (train's and
evaluate's in the folder of the experiment's current run, DIR/<dataset>/runs/<run>/) and the
stage_usage.json that scaling_run.py writes there, and prints a Markdown table: per stage
and dataset the wall seconds, the CPU seconds and the peak RSS (MiB) beside its bound, and
from each dataset to the next how much the data grew beside how much each time grew (at
most linear when neither is above the data's growth). Given several --results directories
(repeated runs), each time is the fastest run's, as waiting for a core on a shared machine
only ever adds time, and the RSS the highest.

The bound is 1.5 times the float32 size of the images the stage holds, plus 300 MiB:

    download, parse, prepare   every training and test image
    train                      the train and val splits
    evaluate                   the test and val splits
    report                     the test images

Row counts come from the prepared Parquet files' footers, the image size from
parsed/dataset.json. Without stage_usage.json the RSS is Snakemake's max_rss, which is
sampled (every 0.5 s for 15 s, then every 30 s): it misses jobs shorter than half a second
and can miss a spike late in a long one.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
from pathlib import Path

import pyarrow.parquet as pq

from mnist_pipeline.fileio import read_json
from mnist_pipeline.layout import DatasetLayout
from mnist_pipeline.runstore.store import current_runs

MIB = 2**20
BASE_MIB = 300
# Stage -> the splits whose images it holds (see the module docstring).
STAGES = {
    "download": ("train", "val", "test"),
    "parse": ("train", "val", "test"),
    "prepare": ("train", "val", "test"),
    "train": ("train", "val"),
    "evaluate": ("test", "val"),
    "report": ("test",),
}
RUN_STAGES = ("train", "evaluate")  # their benchmark files sit in the run's folder


def benchmark(layout: DatasetLayout, stage: str, experiment: str) -> dict[str, float]:
    """Wall seconds, CPU seconds (nan if unknown) and peak RSS MiB of one stage of one workflow run."""
    in_run = stage in RUN_STAGES
    tsv = layout.run(current_runs(layout.root)[experiment], f"{stage}.tsv") if in_run else layout.benchmark(stage)
    with open(tsv, newline="") as handle:
        row = next(csv.DictReader(handle, delimiter="\t"))
    usage_file = Path(layout.benchmark("stage_usage")).with_suffix(".json")  # scaling_run.py's
    usage = read_json(usage_file)[stage] if usage_file.is_file() else {"peak_rss_mib": float(row["max_rss"]), "cpu_s": math.nan}
    return {"s": float(row["s"]), "cpu": usage["cpu_s"], "rss": usage["peak_rss_mib"]}


def dataset_sizes(layout: DatasetLayout) -> tuple[dict[str, int], int]:
    """Rows of each prepared split and pixels per image."""
    rows = {split: pq.ParquetFile(layout.prepared(split)).metadata.num_rows for split in ("train", "val", "test")}
    return rows, math.prod(read_json(layout.parsed("dataset.json"))["image_shape"])


def measure(results: list[Path], dataset: str, experiment: str) -> dict[str, dict[str, float]]:
    """Per stage: fastest time, highest RSS over the runs in `results`, the bound, and the dataset's row count."""
    layouts = [DatasetLayout(base, dataset) for base in results]
    rows, pixels = dataset_sizes(layouts[0])
    out = {}
    for stage, holds in STAGES.items():
        runs = [benchmark(layout, stage, experiment) for layout in layouts]
        float32_mib = sum(rows[split] for split in holds) * pixels * 4 / MIB
        out[stage] = {
            "s": min(run["s"] for run in runs), "cpu": min((run["cpu"] for run in runs if not math.isnan(run["cpu"])), default=math.nan), "rss": max(run["rss"] for run in runs),
            "bound": 1.5 * float32_mib + BASE_MIB, "n": sum(rows.values()),
        }
    return out


def table(runs: dict[str, dict[str, dict[str, float]]]) -> str:
    """Markdown: per stage, seconds and peak RSS / bound for each dataset, then data and time growth."""
    names = list(runs)
    steps = list(itertools.pairwise(names))
    header = ["stage", *(f"{name}: wall s (CPU s)" for name in names), *(f"{name}: peak RSS / bound, MiB" for name in names),
              *(f"{b} / {a}: data, wall, CPU" for a, b in steps)]
    lines = ["| " + " | ".join(header) + " |", "|---" * len(header) + "|"]
    for stage in STAGES:
        figures = [runs[name][stage] for name in names]
        times = [f"{m['s']:.1f} ({m['cpu']:.1f})" for m in figures]
        memory = [f"{m['rss']:.0f} / {m['bound']:.0f}" + ("" if m["rss"] < m["bound"] else " **over**") for m in figures]
        growth = []
        for a, b in steps:
            was, now = runs[a][stage], runs[b][stage]
            growth.append(f"{now['n'] / was['n']:.2f}x, {now['s'] / was['s']:.2f}x, {now['cpu'] / was['cpu']:.2f}x")
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
