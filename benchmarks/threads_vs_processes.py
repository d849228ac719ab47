"""The CNN's layers on one worker, on two threads and on a thread plus a helper process.

    python benchmarks/threads_vs_processes.py [--workers 2] [--rounds 5] [--repeat 20]

Each layer of the issue's CNN (conv 32, 64 with fused 2x2 pools, batch norm and ReLU on the
maps, batch 128 of 28x28 images) runs forward and backward as in a training step, with the
same kernels (Workers.run_kernel) on three pools: Workers(1); Workers(N) of threads; and
Workers(N, processes=True), whose helpers are processes (nn/processes.py). The three alternate
round by round; each figure is the median over rounds of a round's median call, in ms, and
the speed-ups are against one worker. Where threads gain little and processes much, the
tasks' NumPy calls are too short for threads to share (the GIL); where neither gains, the
work is bound by memory. BLAS runs one thread per call, as in training. Unset
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the command when they force a slower kernel.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mnist_pipeline.nn.activations import ReLU
from mnist_pipeline.nn.conv import Conv2D, MaxPool2D
from mnist_pipeline.nn.init import INITIALISERS
from mnist_pipeline.nn.layers import BatchNorm
from mnist_pipeline.nn.parallel import Workers

BATCH = 128


def layers(workers: Workers) -> dict[str, tuple]:
    """name -> (forward(), backward()) of each layer of the CNN's maps, on `workers`."""
    rng = np.random.default_rng(0)
    empty = np.empty if workers.arena is None else workers.arena.empty
    cases = {}
    for name, (channels_in, channels_out, side) in {"conv 1->32, 28x28": (1, 32, 28),
                                                    "conv 32->64, 14x14": (32, 64, 14)}.items():
        conv, pool = Conv2D(channels_in, channels_out), MaxPool2D()
        conv.fuse(pool)
        for layer in (conv, pool):
            layer.chained, layer.workers = True, workers
        for key in ("W", "b"):
            conv.params[key] = empty(conv.params[key].shape, np.float32)
            conv.grads[key] = empty(conv.grads[key].shape, np.float32)
        conv.initialize(INITIALISERS["he"], rng)
        x = empty((BATCH, side, side, channels_in), np.float32)
        x[...] = rng.standard_normal(x.shape)
        out = pool.forward(conv.forward(x, True), True)
        dout = empty(out.shape, np.float32)
        dout[...] = rng.standard_normal(out.shape)
        need_dx = channels_in > 1  # the first layer of a network needs no dx
        cases[name] = (lambda conv=conv, pool=pool, x=x: pool.forward(conv.forward(x, True), True),
                       lambda conv=conv, dout=dout, need_dx=need_dx: conv.backward(dout, need_dx))
    maps = (BATCH, 14, 14, 32)
    norm, relu = BatchNorm(32), ReLU()
    for layer in (norm, relu):
        layer.chained, layer.workers = True, workers
    for key in ("gamma", "beta"):
        norm.params[key] = empty(32, np.float32)
        norm.grads[key] = empty(32, np.float32)
    norm.initialize(None, rng)
    x = empty(maps, np.float32)
    x[...] = rng.standard_normal(maps)
    dout = empty(maps, np.float32)
    dout[...] = rng.standard_normal(maps)
    norm.forward(x, True)
    cases["batch norm, 128x14x14x32"] = (lambda: norm.forward(x, True), lambda: norm.backward(dout))
    cases["relu, 128x14x14x32"] = (lambda: relu.forward(x, True), lambda: relu.backward(dout))
    return cases


def median_ms(call, repeat: int) -> float:
    call()  # warm up: scratch arrays, a helper's first wake
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    pools = {"one worker": (1, False), "threads": (args.workers, False), "processes": (args.workers, True)}
    rounds: dict[tuple[str, str, str], list[float]] = {}
    with threadpool_limits(limits=1, user_api="blas"):
        for _ in range(args.rounds):
            for pool, (count, processes) in pools.items():
                with Workers(count, processes=processes) as workers:
                    for name, (forward, backward) in layers(workers).items():
                        for direction, call in (("forward", forward), ("backward", backward)):
                            rounds.setdefault((name, direction, pool), []).append(median_ms(call, args.repeat))
    print(f"{'layer':28s} {'pass':9s} {'1 worker':>9s} {'threads':>9s} {'processes':>9s}   speed-up threads / processes")
    for name, direction in dict.fromkeys((name, direction) for name, direction, _ in rounds):
        ms = {pool: statistics.median(rounds[(name, direction, pool)]) for pool in pools}
        one = ms["one worker"]
        print(f"{name:28s} {direction:9s} {one:9.3f} {ms['threads']:9.3f} {ms['processes']:9.3f}   "
              f"{one / ms['threads']:.2f}x / {one / ms['processes']:.2f}x")
        print(json.dumps({"layer": name, "pass": direction, "workers": args.workers,
                          **{f"{pool.replace(' ', '_')}_ms": round(value, 3) for pool, value in ms.items()}}))


if __name__ == "__main__":
    main()
