"""The network as a sequence of layers, its architecture as JSON, and saving and loading it
(the file format and its checks are nn.modelfile's).

All parameters live in one flat vector (`flat_params`, gradients in `flat_grads`) that the
layers' `params` arrays are views into; the optimiser, gradient clipping and early-stopping
snapshots each work on that one vector. Weights under weight decay come first, `n_decay` of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mnist_pipeline.errors import ConfigError
from mnist_pipeline.nn.activations import ACTIVATIONS
from mnist_pipeline.nn.columns import ColumnStep, column_groups
from mnist_pipeline.nn.conv import Conv2D, MaxPool2D
from mnist_pipeline.nn.init import INITIALISERS
from mnist_pipeline.nn.layers import BatchNorm, Dense, Dropout, Flatten, Layer, Reshape
from mnist_pipeline.nn.losses import cross_entropy, softmax
from mnist_pipeline.nn.modelfile import (
    FORMAT,
    FORMAT_VERSION,
    MAX_VALUES,
    check_architecture,
    read_model_file,
    too_many_values,
    write_model_file,
)
from mnist_pipeline.nn.optim import Optimizer
from mnist_pipeline.nn.parallel import SERIAL, Workers
from mnist_pipeline.nn.settings import TrainSettings

LAYER_TYPES: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Dense, Dropout, BatchNorm, Reshape, Flatten, Conv2D, MaxPool2D, *ACTIVATIONS.values())
}
_PARAMETRIC = (Dense, BatchNorm, Conv2D)


def max_conv_blocks(image_shape: tuple[int, int]) -> int:
    """How many conv-pool blocks an image of `image_shape` (rows, cols) takes: each 2x2 pool
    halves both sides (rounding down), and a side of 1 cannot be pooled again."""
    return max(min(image_shape), 1).bit_length() - 1


def check_conv_fits(conv_channels, image_shape: tuple[int, int]) -> None:
    """ConfigError unless every block of `conv_channels` fits an image of `image_shape`."""
    blocks, fit = len(conv_channels), max_conv_blocks(image_shape)
    if blocks > fit:
        rows, cols = image_shape
        raise ConfigError(
            f"conv_channels: {list(conv_channels)} is {blocks} conv-pool blocks, but a {rows}x{cols} image fits at most "
            f"{fit} (each block halves both sides); use at most {fit} entries, or model: mlp"
        )


def image_shape_of(n_inputs: int) -> tuple[int, int]:
    """The image size of a flat input whose size is all that is known: 28x28 for 784 (every model
    file written before the size was recorded), else the square it is, else one row."""
    side = math.isqrt(n_inputs)
    return (side, side) if side * side == n_inputs else (1, n_inputs)


def architecture(settings: TrainSettings, n_inputs: int, n_classes: int, image_shape: tuple[int, int] | None = None) -> dict:
    """The JSON-able architecture the training settings describe.

    `image_shape` (rows, cols) is the size of the images the n_inputs pixels come from,
    row-major; None means square. mlp: [dense, (batch norm), activation, (dropout)] per
    hidden size, then a dense output. cnn: the flat input as a one-channel image, [3x3 conv,
    2x2 max pool, (batch norm), activation] per conv channel count, flatten, then the mlp part.
    """
    rows, cols = image_shape if image_shape is not None else image_shape_of(n_inputs)
    if rows * cols != n_inputs:
        raise ValueError(f"image_shape {rows}x{cols} does not hold {n_inputs} inputs")
    layers: list[dict] = []
    width = n_inputs
    if settings.model == "cnn":
        check_conv_fits(settings.conv_channels, (rows, cols))
        layers.append({"type": "reshape", "shape": [rows, cols, 1]})
        channels = 1
        for out_channels in settings.conv_channels:
            layers.append({"type": "conv2d", "in_channels": channels, "out_channels": out_channels, "kernel_size": 3})
            # Pooling first: every activation here is non-decreasing and so commutes with max,
            # which makes the order change only the cost; batch norm then normalises the pooled
            # maps, and both run on a quarter of the values.
            layers.append({"type": "max_pool"})
            layers += _normalised_activation(settings, out_channels)
            rows, cols, channels = rows // 2, cols // 2, out_channels
        layers.append({"type": "flatten"})
        width = rows * cols * channels
    for size in settings.hidden:
        layers.append({"type": "dense", "n_in": width, "n_out": size})
        layers += _normalised_activation(settings, size)
        if settings.dropout:
            layers.append({"type": "dropout", "rate": settings.dropout})
        width = size
    layers.append({"type": "dense", "n_in": width, "n_out": n_classes})
    shape = list(image_shape) if image_shape is not None else list(image_shape_of(n_inputs))
    arch = {"model": settings.model, "n_inputs": n_inputs, "image_shape": shape, "n_classes": n_classes, "layers": layers}
    # Refused here, before training, rather than by load_model after it.
    declared = check_architecture(arch)
    if declared.largest > MAX_VALUES:
        raise ConfigError(f"{shape[0]}x{shape[1]} images: {too_many_values(declared)}; use smaller images, or fewer channels")
    return arch


def _normalised_activation(settings: TrainSettings, width: int) -> list[dict]:
    norm = [{"type": "batch_norm", "n_features": width, "momentum": 0.9, "eps": 1e-5}] if settings.batch_norm else []
    return norm + [{"type": settings.activation}]


def build_layer(spec: dict, dtype=np.float32) -> Layer:
    """A layer from its spec (see Layer.spec); ValueError for an unknown type or bad arguments."""
    kind = spec.get("type")
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r}; expected one of {sorted(LAYER_TYPES)}")
    cls = LAYER_TYPES[kind]
    kwargs = {key: value for key, value in spec.items() if key != "type"}
    if issubclass(cls, _PARAMETRIC):
        kwargs["dtype"] = dtype
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ValueError(f"layer {kind!r}: bad arguments {kwargs}: {exc}") from None


class Model:
    """A stack of layers. forward(x (n, n_inputs)) -> logits (n, n_classes)."""

    def __init__(self, architecture: dict, dtype=np.float32) -> None:
        self.architecture = architecture
        self.layers = [build_layer(spec, dtype) for spec in architecture["layers"]]
        shape: tuple[int, ...] = (int(architecture["n_inputs"]),)
        for layer in self.layers:
            shape = layer.output_shape(shape)
        if shape != (int(architecture["n_classes"]),):
            raise ValueError(f"the layers end in shape {shape}, expected ({architecture['n_classes']},)")
        for layer, after in zip(self.layers, self.layers[1:], strict=False):
            if isinstance(layer, Conv2D) and isinstance(after, MaxPool2D):
                layer.fuse(after)
        # Chained, layers reuse their buffers and activations work in place. A layer that writes
        # over what it is given is chained only where that is always an array of the chain's
        # own: a layer before it made the input, and one after it makes the gradient it gets
        # (the caller's x and dlogits are never written).
        for i, layer in enumerate(self.layers):
            layer.chained = not layer.overwrites or (
                any(before.makes_new_arrays for before in self.layers[:i])
                and any(after.makes_new_arrays for after in self.layers[i + 1 :]))
        # Layers before the first with parameters (a reshape) need no backward pass at all.
        self._first = next((i for i, layer in enumerate(self.layers) if layer.params), len(self.layers))
        self.workers = SERIAL
        self._columns: ColumnStep | None = None  # training's forward and backward, when train_by_columns is on
        self._update_runs: dict[int, list[slice]] = {}  # batch size -> Model.backward's runs of small parameters
        self._gather(dtype)

    def _gather(self, dtype, empty=np.empty) -> None:
        """Move every parameter, gradient and buffer into flat vectors the layers keep views of
        (made by `empty(size, dtype)`), their values kept."""
        params = [(layer, name) for layer in self.layers for name in layer.params]
        # Stable sort: decayed weights first, each group in layer order.
        params.sort(key=lambda entry: entry[1] not in entry[0].decay)
        self.n_decay = sum(layer.params[name].size for layer, name in params if name in layer.decay)
        self.flat_params = _flatten(params, "params", dtype, empty)
        self.flat_grads = _flatten(params, "grads", dtype, empty)
        # Where each parameter sits in the flat vectors, for updates made layer by layer.
        sizes = [layer.params[name].size for layer, name in params]
        starts = np.cumsum([0, *sizes])
        self._ranges = {(id(layer), name): slice(int(start), int(start + size))
                        for (layer, name), start, size in zip(params, starts, sizes, strict=False)}
        # What Model.backward updates after the layers' pass whatever the batch: all but dense weights.
        self._rest = [self._ranges[(id(layer), name)] for layer, name in params
                      if not (isinstance(layer, Dense) and name == "W")]
        buffers = [(layer, name) for layer in self.layers for name in layer.buffers]
        self.flat_buffers = _flatten(buffers, "buffers", dtype, empty)

    @property
    def has_convolutions(self) -> bool:
        return any(isinstance(layer, Conv2D) for layer in self.layers)

    @property
    def n_parameters(self) -> int:
        return int(self.flat_params.size)

    @property
    def eval_batch_size(self) -> int:
        """Rows per inference chunk: convolutions keep n*H*W*9*C patch matrices, so fewer of them."""
        return 256 if self.has_convolutions else 1024

    def initialize(self, init: str, rng: np.random.Generator) -> None:
        initialiser = INITIALISERS[init]
        for layer in self.layers:
            layer.initialize(initialiser, rng)

    def set_dropout_rng(self, rng: np.random.Generator) -> None:
        for layer in self.layers:
            if isinstance(layer, Dropout):
                layer.rng = rng

    def set_workers(self, workers: Workers) -> None:
        """The thread pool every layer splits its element-wise work over."""
        self.workers = workers
        for layer in self.layers:
            layer.workers = workers
        arena = workers.arena
        if arena is not None and arena.locate(self.flat_params) is None:
            # Helper processes read the parameters and write gradients: into the shared arena.
            self._gather(self.flat_params.dtype, arena.empty)

    @property
    def column_step(self) -> ColumnStep | None:
        """The step train_by_columns made, or None: training then goes layer by layer."""
        return self._columns

    @property
    def trains_by_columns(self) -> bool:
        """Whether the layers are an MLP that columns.ColumnStep can train (see train_by_columns)."""
        return column_groups(self.layers) is not None

    def train_by_columns(self, seed: int) -> None:
        """Make training's forward and backward a columns.ColumnStep over `self.workers`: each
        hidden layer's work as one job of feature blocks, its dropout masks keyed by `seed`.
        ValueError unless trains_by_columns. The weights trained differ from the layer-by-layer
        step's (other sums, other masks) and are the same bytes at any worker count."""
        groups = column_groups(self.layers)
        if groups is None:
            raise ValueError("train_by_columns: the layers are not an MLP of dense, [batch norm], ReLU or leaky ReLU, "
                             "[dropout] groups")
        output = self.layers[-1]
        weights = {id(group.dense): self._ranges[(id(group.dense), "W")] for group in groups}
        rest = _runs([*self._rest, self._ranges[(id(output), "W")]])
        self._columns = ColumnStep(groups, output, weights, rest, self.workers, seed)

    def train_step(self, x: np.ndarray, labels: np.ndarray, label_smoothing: float,
                   optimizer: Optimizer) -> tuple[float, int]:
        """A whole training step by columns (train_by_columns on, `optimizer` begun): forward,
        softmax cross-entropy against `labels`, backward and the update, in one hand-off to the
        helpers (ColumnStep.step). Returns (the mean loss, the correct predictions); the weights
        are the same bytes as forward, the loss and backward in turn."""
        if self._columns is None:
            raise ValueError("train_step: the model does not train by columns (train_by_columns)")
        return self._columns.step(x, labels, label_smoothing, optimizer)

    def forward(self, x: np.ndarray, train: bool = False) -> np.ndarray:
        """Logits (n, n_classes), a new array; x is left as it was.

        With train=True it also keeps what backward needs, for the backward that follows.
        """
        if train and self._columns is not None:
            return self._columns.forward(x).copy()
        for layer in self.layers:
            x = layer.forward(x, train)
        # The last layer's own buffer would change at the next forward; the logits are small.
        return x.copy()

    def backward(self, dlogits: np.ndarray, optimizer: Optimizer | None = None) -> None:
        """Fill flat_grads from the gradient of the loss with respect to the last forward's logits.

        With `optimizer` (after optimizer.begin(flat_params, flat_grads, lr)), also make its
        step: each parameter is updated as soon as its gradient is final, a dense layer's
        weights block by block on the worker that computed the block's gradient, while the
        layers below are still going back. The step is element-wise, so the weights are the
        same bytes as backward() then optimizer.step().
        """
        if self._columns is not None:
            self._columns.backward(dlogits, optimizer)
            return
        d, pending, later = dlogits, [], list(self._rest)
        for i in range(len(self.layers) - 1, self._first - 1, -1):
            layer, need_dx = self.layers[i], i > self._first
            if optimizer is None or not isinstance(layer, Dense):
                d = layer.backward(d, need_dx=need_dx)
            elif len(layer.weight_blocks(len(d))) == 1:
                # One block is not worth handing over (parallel.MIN_PRODUCT): it stays with
                # this thread, and its weights are updated with the small parameters below.
                d = layer.backward(d, need_dx=need_dx)
                later.append(self._ranges[(id(layer), "W")])
            else:
                start = self._ranges[(id(layer), "W")].start
                d, job = layer.backward_deferred(
                    d, need_dx, lambda lo, hi, start=start: optimizer.update(slice(start + lo, start + hi)))
                pending.append(job)
        if optimizer is not None:
            # Each update costs a dozen NumPy calls whatever its size: the small parameters
            # (biases, batch-norm scales, convolution kernels) go in a few contiguous runs.
            # Which these are depends on the batch size alone, so they are found once per size.
            runs = self._update_runs.get(len(dlogits))
            if runs is None:
                runs = self._update_runs[len(dlogits)] = _runs(later)
            for run in runs:
                optimizer.update(run)
        for job in pending:
            self.workers.wait(job)

    def predict_proba(self, x: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Class probabilities (n, n_classes) float32, computed in chunks of batch_size rows."""
        x = np.asarray(x, dtype=self.flat_params.dtype)
        out = np.empty((len(x), self.architecture["n_classes"]), self.flat_params.dtype)
        step = batch_size or self.eval_batch_size
        for start in range(0, len(x), step):
            logits = self.forward(x[start : start + step], train=False)
            softmax(logits, out=out[start : start + step])
        return out

    def loss_and_accuracy(self, x: np.ndarray, y: np.ndarray, batch_size: int | None = None) -> tuple[float, float]:
        """(mean cross-entropy, accuracy) over x (n, n_inputs), y (n,), without label smoothing."""
        total_loss, correct = 0.0, 0
        step = batch_size or self.eval_batch_size
        for start in range(0, len(x), step):
            logits = self.forward(x[start : start + step], train=False)
            labels = y[start : start + step]
            correct += int(np.count_nonzero(logits.argmax(axis=1) == labels))
            total_loss += cross_entropy(logits, labels, out=logits) * len(labels)
        return total_loss / len(x), correct / len(x)

    def snapshot(self) -> tuple[np.ndarray, np.ndarray]:
        return self.flat_params.copy(), self.flat_buffers.copy()

    def restore(self, state: tuple[np.ndarray, np.ndarray]) -> None:
        self.flat_params[...], self.flat_buffers[...] = state

    def named_arrays(self) -> dict[str, np.ndarray]:
        """'layer{i}.{name}' -> parameter or buffer array (views into the flat vectors)."""
        return {
            f"layer{i}.{name}": array
            for i, layer in enumerate(self.layers)
            for name, array in (*layer.params.items(), *layer.buffers.items())
        }


def _runs(pieces: list[slice]) -> list[slice]:
    """The same entries as `pieces` (disjoint slices), adjacent ones joined, in order."""
    runs: list[slice] = []
    for piece in sorted(pieces, key=lambda s: s.start):
        if runs and runs[-1].stop == piece.start:
            runs[-1] = slice(runs[-1].start, piece.stop)
        else:
            runs.append(piece)
    return runs


def _flatten(entries: list[tuple[Layer, str]], attribute: str, dtype, empty=np.empty) -> np.ndarray:
    flat = empty(sum(getattr(layer, attribute)[name].size for layer, name in entries), dtype)
    offset = 0
    for layer, name in entries:
        arrays = getattr(layer, attribute)
        array = arrays[name]
        view = flat[offset : offset + array.size].reshape(array.shape)
        view[...] = array
        arrays[name] = view
        offset += array.size
    return flat


@dataclass
class LoadedModel:
    model: Model
    normalization: dict
    classes: list[str]
    metadata: dict

    @property
    def image_shape(self) -> tuple[int, int]:
        """(rows, cols) of the images the model takes; files from before it was recorded are 28x28."""
        arch = self.model.architecture
        shape = arch.get("image_shape")
        return (int(shape[0]), int(shape[1])) if shape else image_shape_of(int(arch["n_inputs"]))


def save_model(path, model: Model, *, normalization: dict, classes: list, metadata: dict) -> None:
    """Write the model as one `.npz` file (see nn.modelfile): its architecture, normalization,
    classes and metadata as a JSON header, and one float32 array per parameter and buffer."""
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "architecture": model.architecture,
        "normalization": normalization,
        "classes": [str(c) for c in classes],
        "metadata": metadata,
    }
    write_model_file(path, header, model.named_arrays())


def load_model(path) -> LoadedModel:
    """Read a file save_model wrote, checked whole before the Model is built (see nn.modelfile).

    FileNotFoundError when there is no such file; ModelFormatError, naming the file and what is
    wrong with it, for anything save_model did not write.
    """
    checked = read_model_file(path)
    header = checked.header
    model = Model(header["architecture"])
    for name, target in model.named_arrays().items():
        target[...] = checked.arrays[name]
    return LoadedModel(model, header["normalization"], header["classes"], header.get("metadata", {}))
