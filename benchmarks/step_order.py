"""Backward and the optimiser's step, in the plain order against the step made as the gradients come.

    python benchmarks/step_order.py [--workload recipe|sgd|cnn] [--threads 2] [--steps 300]

One model (the default recipe's MLP, the SGD MLP 784-256-128-10 with momentum, or the CNN of
conv 32, 64 and dense 256), one batch of 128 random inputs. Each step runs forward and the
loss, then times either `backward()` and `optimizer.step()` (plain) or `optimizer.begin()` and
`backward(optimizer)` (as the gradients come, Model.backward), the two alternating step by step
in one process so that a machine whose speed drifts moves both alike. Prints one JSON line:
the median milliseconds of each and their ratio. Both give the same weights (tests/test_nn_train.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from threadpoolctl import threadpool_limits

from mnist_pipeline.nn import TrainSettings
from mnist_pipeline.nn.losses import softmax_cross_entropy
from mnist_pipeline.nn.model import Model, architecture
from mnist_pipeline.nn.optim import make_optimizer
from mnist_pipeline.nn.parallel import Workers

WORKLOADS = {
    "recipe": {},
    "sgd": {"hidden": [256, 128], "batch_norm": False, "dropout": 0.0, "optimizer": "momentum"},
    "cnn": {"model": "cnn", "conv_channels": [32, 64], "hidden": [256]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workload", choices=sorted(WORKLOADS), default="recipe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    settings = TrainSettings(**WORKLOADS[args.workload])
    model = Model(architecture(settings, 784, 10))
    model.initialize(settings.init, np.random.default_rng(0))
    optimizer = make_optimizer(settings, model.n_decay)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((128, 784), dtype=np.float32), rng.integers(0, 10, 128)
    times: dict[str, list[float]] = {"plain": [], "as_gradients_come": []}
    with threadpool_limits(limits=1, user_api="blas"), Workers(args.threads) as workers:
        model.set_workers(workers)
        optimizer.workers = workers
        for step in range(args.steps):
            for kind in (("plain", "as_gradients_come") if step % 2 else ("as_gradients_come", "plain")):
                logits = model.forward(x, train=True)
                _, dlogits = softmax_cross_entropy(logits, y, out=logits)
                start = time.perf_counter()
                if kind == "plain":
                    model.backward(dlogits)
                    optimizer.step(model.flat_params, model.flat_grads, 1e-4)
                else:
                    optimizer.begin(model.flat_params, model.flat_grads, 1e-4)
                    model.backward(dlogits, optimizer)
                times[kind].append(time.perf_counter() - start)
    ms = {kind: round(statistics.median(values) * 1e3, 3) for kind, values in times.items()}
    print(json.dumps({"workload": args.workload, "threads": args.threads, "median_ms": ms,
                      "ratio": round(ms["as_gradients_come"] / ms["plain"], 3)}))


if __name__ == "__main__":
    main()
