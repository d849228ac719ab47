"""Run the workflow on one dataset and record each stage's exact peak RSS beside Snakemake's benchmarks.

    python benchmarks/scaling_run.py DATASET SOURCE [--cores 2] [--configfile benchmarks/scaling.yaml]

Runs `snakemake --cores N --configfile FILE --config dataset=DATASET source=SOURCE` from the
current directory and, while it runs, reads every stage script's VmHWM (the kernel's
high-water mark of its resident memory) every 0.1 s. Snakemake's own benchmark files sample
RSS only every 0.5 s, and every 30 s after the first 15 s, so they miss a job that ends
within half a second and can miss a short spike in a long one; VmHWM never goes down, so
the last reading is the peak up to the last 0.1 s. Writes
results/DATASET/benchmarks/peak_rss.json ({stage: MiB}), which scaling_table.py prefers.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil

from mnist_pipeline.fileio import write_json

# Snakemake runs a rule's script as .snakemake/scripts/tmp<random>.<script name>; ours are named after their rules.
SCRIPT = re.compile(r"\.snakemake/scripts/tmp[^/\s]*\.(\w+)\.py")


def stage_processes(root: psutil.Process) -> dict[psutil.Process, str]:
    """Each stage script running under `root` (Snakemake), with its stage."""
    found = {}
    for proc in root.children(recursive=True):
        try:
            match = SCRIPT.search(" ".join(proc.cmdline()))
        except psutil.Error:
            continue
        if match:
            found[proc] = match.group(1)
    return found


def high_water_mib(proc: psutil.Process) -> float | None:
    """The process's peak resident memory so far, MiB (VmHWM is in KiB)."""
    try:
        for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("source")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", default="benchmarks/scaling.yaml")
    args = parser.parse_args()
    command = ["snakemake", "--cores", str(args.cores), "--configfile", args.configfile,
               "--config", f"dataset={args.dataset}", f"source={args.source}"]
    peaks: dict[str, float] = {}
    run = subprocess.Popen(command)
    root = psutil.Process(run.pid)
    while run.poll() is None:
        for proc, stage in stage_processes(root).items():
            mib = high_water_mib(proc)
            if mib is not None:
                peaks[stage] = max(peaks.get(stage, 0.0), mib)
        time.sleep(0.1)
    if run.returncode:
        sys.exit(f"snakemake failed (exit {run.returncode}): {' '.join(command)}")
    out = Path("results") / args.dataset / "benchmarks" / "peak_rss.json"
    write_json(out, {stage: round(mib, 1) for stage, mib in sorted(peaks.items())})
    print(json.dumps({"dataset": args.dataset, "peak_rss_mib": peaks}))


if __name__ == "__main__":
    main()
