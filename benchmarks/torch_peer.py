"""PyTorch (CPU) peer of train_speed.py: the same data, network, batch and optimiser, trained by torch.

    python benchmarks/torch_peer.py DATA_DIR --mode sgd [--epochs 5] [--threads 2]
    python benchmarks/torch_peer.py DATA_DIR --mode recipe [--hidden 1024 512] [--epochs 2] [--threads 2]
    python benchmarks/torch_peer.py DATA_DIR --mode cnn [--conv 32 64 --hidden 256 --batch 64 --shift 2] [--epochs 2]

Each mode is the peer of one mode of train_speed.py; speed_vs_torch.py runs the two in turn and
gives the peer the flags of the experiment it times. A mode sets the defaults of every flag,
and any flag given replaces its mode's default.

  sgd     train_speed.py's SGD mode: pixels / 255, the whole training set, [Linear, ReLU] per
          hidden layer, cross-entropy, SGD with momentum at a constant rate.
  recipe  train_speed.py's recipe mode for an MLP (defaults: config.yaml's baseline): a
          stratified, seeded validation split held out, inputs standardised by the mean and
          std of pixel / 255 over the training images left, [Linear, BatchNorm1d, ReLU, Dropout]
          per hidden layer, label-smoothed cross-entropy, AdamW with weight decay on the
          weights (not on biases or batch norm, as ours), a cosine decay set every step.
  cnn     the recipe with [3x3 conv (same padding), 2x2 max pool, BatchNorm2d, ReLU] blocks
          before the dense layers, and random shifts of each training image (defaults:
          examples/cnn.yaml).

Only the initial weights (PyTorch's default, ours He) and the random draws differ from ours, so
accuracies agree within noise, not exactly. Prints one JSON line per epoch (train_s: seconds of
the epoch's training loop; test_accuracy, measured after it, untimed) and a last line with
median_epoch_s and final_test_accuracy, as train_speed.py does.

PyTorch is no dependency of the package: `pip install -e '.[bench]'`, or torch and numpy in a
venv of their own (docs/performance.md). This file imports nothing of mnist_pipeline, so that
such a venv is all it needs.
"""

from __future__ import annotations

import argparse
import gzip
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

INSTALL = (
    "pip install -e '.[bench]' (torch into this Python), or a venv of its own: "
    "python3 -m venv torchvenv && torchvenv/bin/pip install torch==2.13.0 numpy, "
    "then run this file with torchvenv/bin/python (speed_vs_torch.py: --python-peer torchvenv/bin/python)"
)

# Each mode's defaults; sgd mirrors train_speed.py's SGD flags, recipe config.yaml's train
# section, cnn examples/cnn.yaml's experiment.
MODES: dict[str, dict] = {
    "sgd": {"hidden": [256, 128], "conv": [], "batch": 128, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0,
            "dropout": 0.0, "batch_norm": False, "label_smoothing": 0.0, "shift": 0, "val_fraction": 0.0},
    "recipe": {"hidden": [1024, 512], "conv": [], "batch": 128, "lr": 0.002, "momentum": 0.9, "weight_decay": 0.01,
               "dropout": 0.4, "batch_norm": True, "label_smoothing": 0.1, "shift": 0, "val_fraction": 0.1},
    "cnn": {"hidden": [256], "conv": [32, 64], "batch": 64, "lr": 0.002, "momentum": 0.9, "weight_decay": 0.05,
            "dropout": 0.4, "batch_norm": True, "label_smoothing": 0.1, "shift": 2, "val_fraction": 0.1},
}
EVAL_ROWS = 1000  # test images per inference chunk: a conv block's maps of 10,000 would take a GB


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line, each flag left out at its mode's default."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", type=Path, help="the four IDX files (.gz or raw)")
    parser.add_argument("--mode", choices=sorted(MODES), default="sgd")
    parser.add_argument("--hidden", type=int, nargs="+", help="sizes of the hidden dense layers")
    parser.add_argument("--conv", type=int, nargs="*", help="output channels of each conv block (none: an MLP)")
    parser.add_argument("--batch", type=int, help="examples per step")
    parser.add_argument("--lr", type=float, help="learning rate (the cosine's start in recipe and cnn modes)")
    parser.add_argument("--momentum", type=float, help="sgd mode's momentum")
    parser.add_argument("--weight-decay", type=float, help="on the weights: L2 in sgd mode, decoupled (AdamW) otherwise")
    parser.add_argument("--dropout", type=float, help="rate after each hidden activation; 0 turns it off")
    parser.add_argument("--batch-norm", action=argparse.BooleanOptionalAction, help="before each hidden activation")
    parser.add_argument("--label-smoothing", type=float)
    parser.add_argument("--shift", type=int, help="largest random shift of a training image, in pixels; 0 turns it off")
    parser.add_argument("--val-fraction", type=float, help="held out of the training set, stratified; 0 holds none")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="torch's intra-op threads; 0: torch's default")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for key, default in MODES[args.mode].items():
        if getattr(args, key) is None:
            setattr(args, key, default)
    if args.epochs < 1 or args.batch < 1 or min(args.hidden + args.conv, default=1) < 1 or args.shift < 0:
        parser.error("--epochs, --batch, --hidden and --conv must be positive, --shift at least 0")
    if not (0 <= args.dropout < 1 and 0 <= args.label_smoothing < 1 and 0 <= args.val_fraction < 1):
        parser.error("--dropout, --label-smoothing and --val-fraction must be in [0, 1)")
    return args


def import_torch():
    """torch, or SystemExit naming the ways to install it."""
    try:
        import torch
    except ImportError:
        raise SystemExit(f"torch_peer.py needs PyTorch, which {sys.executable} does not have. {INSTALL}") from None
    return torch


def read_idx(path: Path) -> np.ndarray:
    """An unsigned-byte IDX file (gzip or raw) as a uint8 array of the shape its header gives."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        data = gzip.decompress(data)
    if data[:3] != b"\x00\x00\x08":
        raise SystemExit(f"{path}: not an unsigned-byte IDX file (it starts {data[:4].hex()})")
    ndim = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(shape)


def idx_file(data_dir: Path, stem: str) -> np.ndarray:
    for name in (stem, stem + ".gz"):
        if (data_dir / name).is_file():
            return read_idx(data_dir / name)
    raise SystemExit(f"{data_dir}: neither {stem} nor {stem}.gz is there")


def validation_rows(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """round(fraction * count) rows of each class, drawn with `seed`, as the prepare stage holds out."""
    rng = np.random.default_rng(seed)
    parts = [rng.permutation(np.flatnonzero(labels == c))[: round(fraction * np.count_nonzero(labels == c))]
             for c in np.unique(labels)]
    return np.sort(np.concatenate(parts))


def pixel_statistics(images: np.ndarray) -> tuple[float, float]:
    """Mean and std of pixel / 255 over uint8 images, from a byte histogram counted in blocks."""
    counts = np.zeros(256, np.int64)
    for start in range(0, len(images), 4096):
        counts += np.bincount(images[start : start + 4096].reshape(-1), minlength=256)
    values = np.arange(256) / 255.0
    mean = counts @ values / counts.sum()
    return float(mean), float(np.sqrt(counts @ (values - mean) ** 2 / counts.sum()))


def load(args: argparse.Namespace) -> dict:
    """The training and test rows (float32 (n, H*W), labels int64), the image shape, the class
    count and the value of a blank pixel; sgd mode scales by 1/255, the others standardise."""
    images = idx_file(args.data_dir, "train-images-idx3-ubyte")
    labels = idx_file(args.data_dir, "train-labels-idx1-ubyte").astype(np.int64)
    test_images = idx_file(args.data_dir, "t10k-images-idx3-ubyte")
    test_labels = idx_file(args.data_dir, "t10k-labels-idx1-ubyte").astype(np.int64)
    keep = np.setdiff1d(np.arange(len(labels)), validation_rows(labels, args.val_fraction, args.seed))
    images, labels = images[keep], labels[keep]
    mean, std = (0.0, 1.0) if args.mode == "sgd" else pixel_statistics(images)

    def rows(x: np.ndarray) -> np.ndarray:
        out = x.reshape(len(x), -1).astype(np.float32)
        out *= np.float32(1 / (255 * std))  # in place: one float32 copy of the images, not two
        out -= np.float32(mean / std)
        return out

    return {"x": rows(images), "y": labels, "x_test": rows(test_images), "y_test": test_labels,
            "shape": tuple(images.shape[1:]), "classes": int(max(labels.max(), test_labels.max())) + 1,
            "blank": -mean / std}


def network(torch, args: argparse.Namespace, shape: tuple[int, int], classes: int):
    """The layers of our architecture() for these flags, in PyTorch's NCHW layout."""
    nn = torch.nn
    layers, (rows, cols), channels = [], shape, 1
    if args.conv:
        layers.append(nn.Unflatten(1, (1, rows, cols)))
        for out in args.conv:
            # Pool before batch norm and ReLU, as ours: a ReLU commutes with max, so only the cost changes.
            layers += [nn.Conv2d(channels, out, 3, padding=1), nn.MaxPool2d(2)]
            layers += [nn.BatchNorm2d(out)] if args.batch_norm else []
            layers.append(nn.ReLU())
            rows, cols, channels = rows // 2, cols // 2, out
        layers.append(nn.Flatten())
    width = channels * rows * cols
    for size in args.hidden:
        layers.append(nn.Linear(width, size))
        layers += [nn.BatchNorm1d(size)] if args.batch_norm else []
        layers.append(nn.ReLU())
        layers += [nn.Dropout(args.dropout)] if args.dropout else []
        width = size
    layers.append(nn.Linear(width, classes))
    return nn.Sequential(*layers)


def optimizer(torch, args: argparse.Namespace, net):
    """SGD with momentum (sgd mode) or AdamW, decaying the weights of dense and conv layers only."""
    weights = [m.weight for m in net.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    ids = {id(w) for w in weights}
    groups = [{"params": weights, "weight_decay": args.weight_decay},
              {"params": [p for p in net.parameters() if id(p) not in ids], "weight_decay": 0.0}]
    if args.mode == "sgd":
        return torch.optim.SGD(groups, lr=args.lr, momentum=args.momentum)
    return torch.optim.AdamW(groups, lr=args.lr, betas=(0.9, 0.999), eps=1e-8)


def shifted(torch, x, shape: tuple[int, int], most: int, blank: float, generator):
    """Each row of x (b, H*W) moved by up to `most` pixels along each axis, the band uncovered `blank`."""
    b, (h, w) = len(x), shape
    offsets = torch.randint(-most, most + 1, (b, 2), generator=generator)
    padded = torch.full((b, h + 2 * most, w + 2 * most), blank)
    padded[:, most : most + h, most : most + w] = x.view(b, h, w)
    rows = most - offsets[:, :1] + torch.arange(h)  # (b, h): the source row of each output row
    cols = most - offsets[:, 1:] + torch.arange(w)
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]].reshape(b, h * w)


def accuracy(torch, net, x, y) -> float:
    net.eval()
    with torch.no_grad():
        right = sum(int((net(x[i : i + EVAL_ROWS]).argmax(1) == y[i : i + EVAL_ROWS]).sum()) for i in range(0, len(x), EVAL_ROWS))
    return right / len(x)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch = import_torch()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    data = load(args)
    x, y = torch.from_numpy(data["x"]), torch.from_numpy(data["y"])
    x_test, y_test = torch.from_numpy(data["x_test"]), torch.from_numpy(data["y_test"])
    net = network(torch, args, data["shape"], data["classes"])
    opt = optimizer(torch, args, net)
    loss_of = torch.nn.CrossEntropyLoss(label_smoothing=args.label_smoothing)
    generator = torch.Generator().manual_seed(args.seed)
    batch = min(args.batch, len(x))
    steps_per_epoch = math.ceil(len(x) / batch)
    total_steps = args.epochs * steps_per_epoch
    times, test_accuracy = [], 0.0
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        net.train()
        order = torch.randperm(len(x), generator=generator)
        loss_sum = torch.zeros(())
        for step, first in enumerate(range(0, len(x), batch), start=(epoch - 1) * steps_per_epoch):
            index = order[first : first + batch]
            if len(index) == 1 and args.batch_norm:
                continue  # batch norm cannot train on one example
            xb = x[index]
            if args.shift:
                xb = shifted(torch, xb, data["shape"], args.shift, data["blank"], generator)
            if args.mode != "sgd":  # cosine decay towards zero, the rate of each step as our Schedule gives it
                for group in opt.param_groups:
                    group["lr"] = args.lr * 0.5 * (1 + math.cos(math.pi * min(step, total_steps) / total_steps))
            opt.zero_grad(set_to_none=True)
            loss = loss_of(net(xb), y[index])
            loss.backward()
            opt.step()
            loss_sum += loss.detach() * len(index)
        times.append(time.perf_counter() - start)
        test_accuracy = accuracy(torch, net, x_test, y_test)
        print(json.dumps({"epoch": epoch, "train_s": round(times[-1], 4), "test_accuracy": round(test_accuracy, 4),
                          "train_loss": round(float(loss_sum) / len(x), 4)}), flush=True)
    print(json.dumps({"trainer": "torch", "mode": args.mode, "torch": torch.__version__, "threads": torch.get_num_threads(),
                      "median_epoch_s": round(statistics.median(times), 4),
                      "final_test_accuracy": round(test_accuracy, 4)}))


if __name__ == "__main__":
    main()
