"""What cutting a training step into row shards costs and gains here, threads against processes.

    python benchmarks/shard_costs.py [--rows 128] [--steps 300] [--rounds 3]

Two measurements behind docs/parallel-training.md:

1. Products cut by rows. The default recipe's products, (rows, 784) @ (784, 1024) and so on,
   whole and as 2, 4 and 8 row shards, one BLAS thread: each shard's call packs the whole
   weight matrix again, so a row shard costs more than its share of the rows.
2. The element-wise chain of a batch-normed layer, cut into two row shards: batch-norm
   statistics (per-shard sums, then a meeting to combine them), then normalise, ReLU and
   dropout, then a meeting. Run by one worker over both shards (serial), by two threads (the
   GIL is taken back between every NumPy call), and by two forked processes over shared memory
   meeting at a multiprocessing.Barrier (blocking) or at a barrier that spins on flags in
   shared memory (each process has its own GIL).

Prints one JSON line per round; compare within a round. Unset OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE for the command when they force a slower kernel.
"""

from __future__ import annotations

import argparse
import json
import mmap
import multiprocessing as mp
import threading
import time

import numpy as np
from threadpoolctl import threadpool_limits

from handoff import median_us  # this folder is on sys.path when the script runs

FEATURES = 1024


def row_shard_products(rows: int) -> dict:
    rng = np.random.default_rng(0)
    result = {}
    for depth, width in ((784, 1024), (1024, 512)):
        x = rng.standard_normal((rows, depth), dtype=np.float32)
        w = rng.standard_normal((depth, width), dtype=np.float32)
        out = np.empty((rows, width), np.float32)
        for shards in (1, 2, 4, 8):
            cut = [slice(i * rows // shards, (i + 1) * rows // shards) for i in range(shards)]

            def product(cut=cut, x=x, w=w, out=out):
                for s in cut:
                    np.matmul(x[s], w, out=out[s])

            result[f"{depth}x{width} in {shards}"] = median_us(product, 100)
    return result


class Shard:
    """One shard's arrays (rows, FEATURES) inside `memory`, and its slot of statistics."""

    def __init__(self, memory, index: int, rows: int) -> None:
        size = rows * FEATURES
        arrays = np.frombuffer(memory, np.float32, 4 * size, offset=4 * size * 4 * index).reshape(4, rows, FEATURES)
        self.x, self.out, self.mask, self.tmp = arrays
        self.bits = np.random.default_rng(index).integers(0, 1 << 16, (rows, FEATURES)).astype(np.uint16)
        self.x[...] = np.random.default_rng(10 + index).standard_normal((rows, FEATURES))
        self.index = index

    def statistics(self, stats: np.ndarray) -> None:
        stats[self.index, 0] = self.x.sum(axis=0)
        np.square(self.x, out=self.tmp)
        stats[self.index, 1] = self.tmp.sum(axis=0)

    def normalise(self, mean: np.ndarray, inv_std: np.ndarray) -> None:
        np.subtract(self.x, mean, out=self.out)
        self.out *= inv_std
        self.out *= 1.1
        self.out += 0.1
        np.greater(self.out, 0, out=self.mask)
        self.out *= self.mask
        np.greater_equal(self.bits, 26214, out=self.tmp)
        self.tmp *= 1.666
        self.out *= self.tmp


def chain(shards: list[Shard], stats: np.ndarray, meet, rows: int) -> None:
    for shard in shards:
        shard.statistics(stats)
    meet()
    total = stats.sum(axis=0)
    mean = total[0] / (2 * rows)
    inv_std = 1 / np.sqrt(total[1] / (2 * rows) - mean * mean + 1e-5)
    for shard in shards:
        shard.normalise(mean, inv_std)
    meet()


class FlagBarrier:
    """Every worker writes its round number into its own slot and spins until all slots have it."""

    def __init__(self, memory, parties: int, offset: int) -> None:
        self.slots = np.frombuffer(memory, np.int64, parties, offset=offset)
        self.round = 0

    def wait(self, me: int) -> None:
        self.round += 1
        self.slots[me] = self.round
        slots, target = self.slots, self.round
        while slots.min() < target:
            pass


def element_wise(rows: int, steps: int) -> dict:
    half = rows // 2
    memory = mmap.mmap(-1, 2 * 4 * 4 * half * FEATURES + 4 * 4 * FEATURES + 64)  # anonymous: shared after fork
    stats = np.frombuffer(memory, np.float32, 2 * 2 * FEATURES, offset=2 * 4 * 4 * half * FEATURES).reshape(2, 2, FEATURES)
    shards = [Shard(memory, i, half) for i in range(2)]

    def serial() -> float:
        start = time.perf_counter()
        for _ in range(steps):
            chain(shards, stats, lambda: None, half)
        return time.perf_counter() - start

    def threads() -> float:
        barrier = threading.Barrier(2)
        helper = threading.Thread(target=lambda: [chain([shards[1]], stats, barrier.wait, half) for _ in range(steps)])
        start = time.perf_counter()
        helper.start()
        for _ in range(steps):
            chain([shards[0]], stats, barrier.wait, half)
        helper.join()
        return time.perf_counter() - start

    def processes(spin: bool) -> float:
        context = mp.get_context("fork")
        flags = FlagBarrier(memory, 2, len(memory) - 64)
        flags.slots[...] = 0
        blocking = context.Barrier(2)

        def meet(me: int):
            return (lambda: flags.wait(me)) if spin else blocking.wait

        def helper_main() -> None:
            with threadpool_limits(limits=1, user_api="blas"):
                blocking.wait()
                for _ in range(steps):
                    chain([shards[1]], stats, meet(1), half)

        helper = context.Process(target=helper_main)
        helper.start()
        blocking.wait()
        start = time.perf_counter()
        for _ in range(steps):
            chain([shards[0]], stats, meet(0), half)
        seconds = time.perf_counter() - start
        helper.join()
        return seconds

    us = {name: round(run() / steps * 1e6, 1) for name, run in (
        ("serial", serial), ("two_threads", threads),
        ("two_processes_blocking", lambda: processes(False)), ("two_processes_spinning", lambda: processes(True)))}
    us["speedup_threads"] = round(us["serial"] / us["two_threads"], 2)
    us["speedup_processes_spinning"] = round(us["serial"] / us["two_processes_spinning"], 2)
    return us


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    with threadpool_limits(limits=1, user_api="blas"):
        for round_ in range(1, args.rounds + 1):
            print(json.dumps({"round": round_, "row_shard_products_us": row_shard_products(args.rows),
                              "element_wise_chain_us_per_step": element_wise(args.rows, args.steps)}), flush=True)


if __name__ == "__main__":
    main()
