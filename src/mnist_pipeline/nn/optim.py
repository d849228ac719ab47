"""Optimisers over one flat parameter vector, and global-norm gradient clipping.

A model keeps all its parameters in one contiguous float32 vector (and their gradients in
another), with the weights that decay applies to first, so a step is a handful of whole-vector
NumPy operations whatever the number of layers. `step(w, g, lr)` updates `w` in place and
leaves `g` as it was. The update rules follow PyTorch's, so a learning rate means the same there.
"""

from __future__ import annotations

import math

import numpy as np

from mnist_pipeline.nn.parallel import SERIAL, Workers
from mnist_pipeline.nn.settings import TrainSettings

#: Elements per block of an optimiser step. Its ten-odd passes over five vectors run from the
#: last-level cache whatever the block size, so larger blocks only save calls: on the default
#: MLP's 1.34M parameters, 1.49 ms a step with blocks of 64k, 1.33 ms with 128k.
STEP_BLOCK = 1 << 17


class Optimizer:
    """Base: L2 weight decay on the first `n_decay` entries, added to the gradient.

    A step cuts the vectors into fixed blocks of STEP_BLOCK and runs the update on
    each, spread over `workers`: every rule is element-wise, so a block's result is the same
    bytes whoever computes it and however many workers there are (begin/update make the same
    step in pieces of the caller's choosing).
    """

    #: the threads a step is split over (the trainer sets them)
    workers: Workers = SERIAL
    #: names of the per-parameter state vectors (zeros at the start) _update is given, in order
    STATE: tuple[str, ...] = ()

    def __init__(self, weight_decay: float = 0.0, n_decay: int = 0) -> None:
        self.weight_decay, self.n_decay = float(weight_decay), int(n_decay)
        self.t = 0  # steps taken
        self._tmp: np.ndarray | None = None
        self._numbers: np.ndarray | None = None  # (lr, t) of the step begun: see flat_arguments

    def step(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        self.begin(w, g, lr)
        self.workers.map_blocks(self.update, w.size, STEP_BLOCK, elements=w.size)

    def begin(self, w: np.ndarray, g: np.ndarray, lr: float) -> None:
        """Start a step of w (updated in place) by g at rate lr, to be made by update() in pieces.

        Every rule is element-wise, so update() may cover w in any pieces, in any order and on
        any thread (each piece once): the result is the same bytes as one step() over the whole.
        The trainer updates each layer's weights this way as soon as their gradient is final.
        """
        self.t += 1
        if self._tmp is None or self._tmp.shape != w.shape:
            self._tmp = self._zeros(w)
        if self._numbers is None:
            self._numbers = self.workers.empty(2, np.float64)
        self._numbers[:] = (lr, self.t)
        for name in self.STATE:
            if getattr(self, name, None) is None:
                setattr(self, name, self._zeros(w))
        self._w, self._g, self._lr = w, g, lr
        self._states = [getattr(self, name) for name in self.STATE]

    def _zeros(self, w: np.ndarray) -> np.ndarray:
        """A vector of zeros like w: in the workers' shared arena if they have one, where helper
        processes update it (columns.ColumnStep)."""
        zeros = self.workers.empty(w.shape, w.dtype)
        zeros[...] = 0
        return zeros

    def update(self, s: slice) -> None:
        """The step begun by begin(), on the entries s of w."""
        self.apply(s, self._w, self._g, self._lr, self._tmp, self._states)

    def apply(self, s: slice, w: np.ndarray, g: np.ndarray, lr: float, tmp: np.ndarray, states) -> None:
        """The step on the entries s of the vectors given (update's, or a helper process's views
        of them: see flat_arguments and state_vectors)."""
        split = max(s.start, min(s.stop, self.n_decay)) if self.weight_decay else s.start
        # The entries under weight decay, then the rest, each a step of its own: element-wise,
        # so the same bytes as one step over s.
        for part in (slice(s.start, split), slice(split, s.stop)):
            if part.stop > part.start:
                gradient = self._decay(w[part], g[part], lr, tmp[part]) if part.start < split else g[part]
                self._update(w[part], gradient, lr, tmp[part], *(state[part] for state in states))

    def flat_arguments(self) -> tuple:
        """(w, g, scratch, numbers) of the step begun, for apply_numbered() elsewhere: `numbers`
        holds the step's rate and count, written where the vectors lie (the shared arena under
        helper processes), so that a copy of this optimiser sent once follows every step."""
        return self._w, self._g, self._tmp, self._numbers

    def apply_numbered(self, s: slice, w: np.ndarray, g: np.ndarray, tmp: np.ndarray, numbers: np.ndarray,
                       states) -> None:
        """apply() at the rate and step count in `numbers` (flat_arguments)."""
        self.t = int(numbers[1])
        self.apply(s, w, g, float(numbers[0]), tmp, states)

    def state_vectors(self) -> list[np.ndarray]:
        """The rule's state vectors (STATE, in order) of the step begun, for apply() elsewhere."""
        return self._states

    def __getstate__(self) -> dict:
        # Sent to helper processes once (columns.ColumnStep) for its rule and settings alone:
        # the vectors and the step's numbers go as the job's arrays, from the shared arena.
        vectors = {*self.STATE, "_tmp", "_w", "_g", "_states", "_numbers", "workers"}
        return {name: value for name, value in self.__dict__.items() if name not in vectors}

    def _decay(self, w: np.ndarray, g: np.ndarray, lr: float, tmp: np.ndarray) -> np.ndarray:
        """Apply weight decay to the entries w; returns the gradient the step then follows (L2:
        g + wd w, in tmp: the step's scratch, not another vector to stream through memory)."""
        np.multiply(w, self.weight_decay, out=tmp)
        tmp += g
        return tmp

    def _update(self, w: np.ndarray, g: np.ndarray, lr: float, tmp: np.ndarray, *state: np.ndarray) -> None:
        """One rule's step on a piece. g may be tmp itself (the decayed gradient): read g before
        the first write to tmp."""
        raise NotImplementedError


class SGD(Optimizer):
    """w -= lr * g"""

    def _update(self, w, g, lr, tmp):
        np.multiply(g, lr, out=tmp)
        w -= tmp


class Momentum(Optimizer):
    """v = mu * v + g;  w -= lr * v  (heavy ball, as torch.optim.SGD)."""

    STATE = ("velocity",)

    def __init__(self, momentum: float = 0.9, weight_decay: float = 0.0, n_decay: int = 0) -> None:
        super().__init__(weight_decay, n_decay)
        self.momentum = float(momentum)
        self.velocity: np.ndarray | None = None

    def _update(self, w, g, lr, tmp, v):
        v *= self.momentum
        v += g
        np.multiply(v, lr, out=tmp)
        w -= tmp


class Nesterov(Momentum):
    """v = mu * v + g;  w -= lr * (g + mu * v)  (as torch.optim.SGD with nesterov=True)."""

    def _update(self, w, g, lr, tmp, v):
        v *= self.momentum
        v += g
        # g + mu v, into tmp, which may be g: through a temporary of this piece's size.
        np.add(g, v * self.momentum, out=tmp)
        tmp *= lr
        w -= tmp


class Adam(Optimizer):
    """Adam (Kingma and Ba) with bias correction; weight decay as L2 added to the gradient.

    The moments are kept divided by (1 - beta): m' = m / (1 - beta1), v' = v / (1 - beta2),
    so that each update is `m' = beta1 m' + g` (two passes over memory, not three) and the
    factors (1 - beta) join the bias corrections in the step's scalars. The step is memory-bound
    (13 -> 10 passes over the parameters' vectors), and a step takes some 15% less time.
    """

    STATE = ("m", "v")

    def __init__(self, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0, n_decay: int = 0) -> None:
        super().__init__(weight_decay, n_decay)
        self.beta1, self.beta2 = (float(b) for b in betas)
        self.eps = float(eps)
        self.m: np.ndarray | None = None
        self.v: np.ndarray | None = None

    def _update(self, w, g, lr, tmp, m, v):
        m *= self.beta1
        m += g
        v *= self.beta2
        np.square(g, out=tmp)
        v += tmp
        # w -= lr * m_hat / (sqrt(v_hat) + eps), with m_hat = m' (1 - b1) / (1 - b1^t) and
        # sqrt(v_hat) = c sqrt(v'), c = sqrt((1 - b2) / (1 - b2^t)): the same as
        # w -= [lr (1 - b1) / ((1 - b1^t) c)] * m' / (sqrt(v') + eps / c).
        c = math.sqrt((1 - self.beta2) / (1 - self.beta2**self.t))
        np.sqrt(v, out=tmp)
        tmp += self.eps / c
        np.divide(m, tmp, out=tmp)
        tmp *= lr * (1 - self.beta1) / ((1 - self.beta1**self.t) * c)
        w -= tmp


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov and Hutter): w *= 1 - lr * wd, then Adam."""

    def _decay(self, w, g, lr, tmp):
        w *= 1 - lr * self.weight_decay
        return g


def clip_grad_norm(g: np.ndarray, max_norm: float) -> float:
    """Scale g in place so that its L2 norm is at most max_norm; returns the norm before clipping."""
    norm = math.sqrt(float(np.dot(g, g)))
    if norm > max_norm:
        g *= max_norm / norm
    return norm


def make_optimizer(settings: TrainSettings, n_decay: int) -> Optimizer:
    """The optimiser `settings.optimizer` names, with its keys from the settings."""
    name, wd = settings.optimizer, settings.weight_decay
    if name == "sgd":
        return SGD(wd, n_decay)
    if name == "momentum":
        return Momentum(settings.momentum, wd, n_decay)
    if name == "nesterov":
        return Nesterov(settings.momentum, wd, n_decay)
    cls = Adam if name == "adam" else AdamW
    return cls(settings.betas, weight_decay=wd, n_decay=n_decay)
