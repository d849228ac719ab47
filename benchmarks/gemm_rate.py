"""The machine's float32 GEMM rate: the ceiling that the trainer's epoch time is measured against.

    python benchmarks/gemm_rate.py [--threads 2] [--size 2048] [--repeat 20]

Prints one JSON line: the BLAS library and the kernel it chose (threadpoolctl), the rate of
a large square product, and the rate at each product shape of one MLP training step
(784-256-128-10, batch 128), which are too small to reach the ceiling. Unset
OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE for the command when they force a slower kernel.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path

from threadpoolctl import threadpool_info, threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from nn_bench import gemm_rate, gemm_seconds

# (m, k, n) of the products in one training step of 784-256-128-10 at batch 128.
MLP_STEP = {
    "forward 1: (128,784)@(784,256)": (128, 784, 256),
    "forward 2: (128,256)@(256,128)": (128, 256, 128),
    "forward 3: (128,128)@(128,10)": (128, 128, 10),
    "weight grad 1: (784,128)@(128,256)": (784, 128, 256),
    "weight grad 2: (256,128)@(128,128)": (256, 128, 128),
    "input grad 2: (128,128)@(128,256)": (128, 128, 256),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=0, help="BLAS threads; 0 leaves the library's default")
    parser.add_argument("--size", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=20)
    args = parser.parse_args()
    limits = threadpool_limits(args.threads, user_api="blas") if args.threads else contextlib.nullcontext()
    with limits:
        blas = [pool for pool in threadpool_info() if pool["user_api"] == "blas"]
        shapes = {name: round(2 * m * k * n / gemm_seconds(m, k, n, 200) / 1e9, 1) for name, (m, k, n) in MLP_STEP.items()}
        print(json.dumps({
            "blas": [f"{pool['internal_api']} {pool.get('version')} {pool.get('architecture')}" for pool in blas],
            "threads": blas[0]["num_threads"] if blas else None,
            f"square_{args.size}_gflops": round(gemm_rate(args.size, args.repeat) / 1e9, 1),
            "mlp_step_gflops": shapes,
        }))


if __name__ == "__main__":
    main()
