"""Run the workflow on one dataset and record each stage's peak RSS and CPU time beside Snakemake's benchmarks.

    python benchmarks/scaling_run.py DATASET SOURCE [--cores 2] [--configfile benchmarks/scaling.yaml] [-- SNAKEMAKE_ARGS]

(e.g. `-- --forcerun parse --until parse` to measure one stage again).

Runs `snakemake --cores N --configfile FILE --config dataset=DATASET source=SOURCE` from the
current directory and, while it runs, reads every stage script's VmHWM (the kernel's
high-water mark of its resident memory) and CPU seconds every 0.05 s. Snakemake's own
benchmark files sample RSS only every 0.5 s, and every 30 s after the first 15 s, so they
miss a job that ends within half a second and can miss a short spike in a long one; VmHWM
never goes down, so the last reading is the peak up to the last 0.05 s. CPU seconds are
the steadier time on a shared machine, where waiting for a core inflates wall time (they
miss the last 0.05 s of each process). Writes results/DATASET/benchmarks/stage_usage.json
({stage: {peak_rss_mib, cpu_s}}; the stages that ran replace their entries), which
scaling_table.py reads.
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

from mnist_pipeline.fileio import read_json, write_json
from mnist_pipeline.layout import DatasetLayout

POLL_SECONDS = 0.05
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


def usage(proc: psutil.Process) -> tuple[float, float] | None:
    """(peak resident memory so far in MiB, CPU seconds so far) of a running process."""
    try:
        with proc.oneshot():
            cpu = proc.cpu_times()
            # VmHWM, the kernel's high-water mark, is in KiB and never goes down.
            hwm = next(line for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines() if line.startswith("VmHWM:"))
        return int(hwm.split()[1]) / 1024, cpu.user + cpu.system
    except (OSError, psutil.Error, StopIteration):
        return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset")
    parser.add_argument("source")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--configfile", default="benchmarks/scaling.yaml")
    parser.add_argument("snakemake_args", nargs=argparse.REMAINDER, help="after --: more arguments for snakemake")
    args = parser.parse_args()
    extra = args.snakemake_args[1:] if args.snakemake_args[:1] == ["--"] else args.snakemake_args
    command = ["snakemake", "--cores", str(args.cores), "--configfile", args.configfile, *extra,
               "--config", f"dataset={args.dataset}", f"source={args.source}"]
    # stage -> pid -> (peak MiB, CPU s) at the last reading; a stage may run as more than one process (a shell, python).
    readings: dict[str, dict[int, tuple[float, float]]] = {}
    run = subprocess.Popen(command)
    root = psutil.Process(run.pid)
    while run.poll() is None:
        for proc, stage in stage_processes(root).items():
            reading = usage(proc)
            if reading is not None:
                readings.setdefault(stage, {})[proc.pid] = reading
        time.sleep(POLL_SECONDS)
    if run.returncode:
        sys.exit(f"snakemake failed (exit {run.returncode}): {' '.join(command)}")
    stages = {
        stage: {"peak_rss_mib": round(max(mib for mib, _ in by_pid.values()), 1), "cpu_s": round(sum(cpu for _, cpu in by_pid.values()), 2)}
        for stage, by_pid in sorted(readings.items())
    }
    out = Path(DatasetLayout(dataset=args.dataset).benchmark("stage_usage")).with_suffix(".json")
    write_json(out, {**(read_json(out) if out.is_file() else {}), **stages})
    print(json.dumps({"dataset": args.dataset, **stages}))


if __name__ == "__main__":
    main()
