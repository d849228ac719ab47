"""What handing work to the trainer's worker threads costs here: the floor under every split.

    python benchmarks/handoff.py [--threads 2] [--repeat 300]

Runs a (128, 784) @ (784, 256) product, the SGD MLP's first layer, with BLAS at one thread
per call: whole in the caller, and as two column halves shared by the trainer's own pool
(mnist_pipeline.nn.parallel.Workers). Prints one JSON line of medians in microseconds: both
times, the overhead of the split (two halves minus half the whole), how long after run() is
called a helper starts its half, and how long after the helper's half ends run() returns
(the caller waking). Where the halves take longer than the whole product, the product is too
small to split: this is the measurement behind parallel.MIN_PRODUCT. Unset
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the command when they force a slower kernel.

It also times a job of two empty tasks handed to the helper processes (Workers(threads,
processes=True)): its round trip, the floor under every job of a column step or a convolution,
as a new job each time (sent as what changed) and as a prepared chain (the same list of jobs).
In a loop the code and the board stay in cache; in a training step, after a task has streamed
megabytes through the core, the same hand-off takes some three times as long.
"""

from __future__ import annotations

import argparse
import json
import statistics
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mnist_pipeline.nn.parallel import Workers


def median_us(function, repeat: int) -> float:
    function()  # warm up: buffers, the helper's first wake
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return round(statistics.median(times) * 1e6, 1)


def nothing(i: int, scratch: np.ndarray) -> None:
    """An empty task: a helper process finds it by name, as every kernel."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=300)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((128, 784), dtype=np.float32)
    w = rng.standard_normal((784, 256), dtype=np.float32)
    out = np.empty((128, 256), np.float32)
    halves = [slice(0, 128), slice(128, 256)]
    caller = threading.get_ident()
    helper_times: list[tuple[float, float]] = []  # (start, end) of a half a helper ran

    def half(i: int) -> None:
        start = time.perf_counter()
        np.matmul(x, w[:, halves[i]], out=out[:, halves[i]])
        if threading.get_ident() != caller:
            helper_times.append((start, time.perf_counter()))

    starts, waits = [], []

    def split(workers: Workers) -> None:
        helper_times.clear()
        called = time.perf_counter()
        workers.run(half, 2)
        returned = time.perf_counter()
        if helper_times:
            starts.append(helper_times[0][0] - called)
            waits.append(returned - helper_times[0][1])

    with threadpool_limits(limits=1, user_api="blas"), Workers(args.threads) as workers:
        whole = median_us(lambda: np.matmul(x, w, out=out), args.repeat)
        halves_us = median_us(lambda: split(workers), args.repeat)
        result = {
            "threads": workers.threads,
            "product_whole_us": whole,
            "product_two_halves_us": halves_us,
            "split_overhead_us": round(halves_us - whole / 2, 1),
            "helper_starts_after_us": round(statistics.median(starts) * 1e6, 1) if starts else None,
            "caller_returns_after_helper_us": round(statistics.median(waits) * 1e6, 1) if waits else None,
        }
    with Workers(args.threads, processes=True) as workers:
        if workers.processes:
            scratch = workers.arena.empty(8, np.float32)
            prepared = [(nothing, 2, (scratch,), {})]
            result["process_job_us"] = median_us(lambda: workers.run_kernel(nothing, 2, scratch), args.repeat)
            result["process_prepared_job_us"] = median_us(lambda: workers.run_kernels(prepared), args.repeat)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
