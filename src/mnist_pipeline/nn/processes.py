"""Helper processes for tasks made of many short NumPy calls, and the shared memory they work in.

Threads share a step's work well only where each NumPy call runs long: a thread takes the GIL
back after every call, and where a thread that finds it taken must sleep and be woken (on a VM
whose idle vCPU halts, tens of microseconds) short calls on two threads run no faster than on
one. A convolution's block of images is a dozen calls of 2-15 us (padding, patches, pooling,
unpooling): two threads ran the CNN's first layer no faster than one, two processes twice as
fast (docs/parallel-training.md; `benchmarks/threads_vs_processes.py`). Each process has a GIL
of its own, so such tasks go to helper processes.

A helper is forked when the pool is made. It runs kernels, module-level functions
`kernel(i, *args)` for task i, whose array arguments are views of one shared arena: a memory
file mapped before the fork, so that the parent and the helpers see the same pages. An array
argument the arena does not hold is copied in for the job and back after it. Tasks are handed
out one at a time from a counter in the arena, whoever is free taking the next, so the caller
starts at once and a helper woken late costs nothing; each task is a computation of its own,
so the result is the same bytes whoever runs which task.

A job is handed over on a *board* in the arena, not down a pipe: the caller writes the job
there and counts it, the helpers, watching the count, take it and count themselves finished
there, and the caller, watching that count, goes on. Each meeting costs about a microsecond;
a pipe's message cost 15-50 us to write and as much again to answer (it wakes the process
reading it), a tenth of a column job of the default recipe. A pipe still wakes a process
that has slept (no job for POLL_SECONDS), and carries a helper's traceback.

What does cost is the Python around a hand-off: placing and pickling the arguments, reading
them back, all of it running after a task has flushed the core's caches (30-100 us a job in a
training step, against 5 us in a loop). So several kernels can go in one hand-off, a *chain*
(`run_chain`): their tasks are numbered on, and a task of a later kernel starts once every
task before it is done (the count of tasks done is on the board too), so the kernels run in
turn as if handed over one by one, with the same bytes, and the workers wait for each other
only where the next kernel needs what the last one wrote.
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
import pickle
import signal
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import wait as wait_for

import numpy as np
from threadpoolctl import threadpool_limits

#: Virtual size of the arena. A memory file takes pages only as they are written, so this is
#: address space, not memory; what is used is the training step's buffers (MBs to some 100 MB).
ARENA_BYTES = 1 << 36
#: Alignment of every array in the arena: a cache line.
ALIGN = 64
#: Seconds a helper (and the caller, waiting for the helpers to finish) keeps watching the
#: board before it sleeps on its pipe. Waking a sleeping process costs 15-50 us, by machine (the
#: most in a VM whose idle vCPU halts), and a training step's hand-offs come 0.2-1 ms apart (the
#: caller's own work between them: the output layer, the loss, the next batch): at 0.5 ms, 3-20%
#: of the default recipe's hand-offs had to wake their helper. After SPIN_SECONDS the watcher
#: yields its core at each look, so that a process that needs it (more threads than cores) runs.
POLL_SECONDS = 0.002
SPIN_SECONDS = 0.0001
#: Room on the board for a job's message: the kernel's name and its arguments, pickled, arrays
#: as their places (some 200 bytes to a few kB; an optimiser passes its settings).
MESSAGE_BYTES = 1 << 20
# The board's counts (int64): the job's number, how many helpers it asks for, the next task
# to hand out, the number of tasks and of tasks done, whether the job was stopped (an error),
# the helpers finished and failed, the message's length, whether the caller sleeps; then
# whether each helper sleeps.
_SEQ, _WANTED, _NEXT, _TASKS, _DONE, _STOPPED, _FINISHED, _FAILED, _LENGTH, _CALLER_ASLEEP, _ASLEEP = range(11)
#: Arrays whose places in the arena the caller keeps, and a helper the arrays it made from
#: them (a kernel's job may pass twenty, each costing 1-2 us to locate or make); beyond this
#: many each starts again.
VIEWS_KEPT = 4096
#: Chains (kernels and task counts) whose last arguments the caller and the helpers keep, to
#: send only what changed: a training step has two to five.
CHAINS_KEPT = 64
#: Argument types sent again only when their value changes; any other is sent every time.
_VALUES = (int, float, bool, str, type(None), tuple)


def processes_available() -> bool:
    """Whether helper processes can be forked here (Linux: fork and memfd_create)."""
    return sys.platform.startswith("linux") and hasattr(os, "memfd_create")


class Arena:
    """Shared memory for the arrays helper processes read and write.

    Arrays are cut from the front of one mapping and never freed: the callers (layers'
    buffers, a model's flat vectors) keep what they get for their lifetime and ask again only
    when a buffer must grow, so the part in use stays about one training step's buffers.
    """

    def __init__(self, size: int = ARENA_BYTES) -> None:
        fd = os.memfd_create("mnist-pipeline-arena")
        try:
            os.ftruncate(fd, size)
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)
        self._bytes = np.frombuffer(self._map, np.uint8)
        self._base = self._bytes.ctypes.data
        self.used = 0

    def empty(self, shape: int | tuple[int, ...], dtype) -> np.ndarray:
        """A new C-contiguous array in the arena; its values are whatever the memory holds."""
        dtype = np.dtype(dtype)
        shape = (int(shape),) if isinstance(shape, int | np.integer) else tuple(int(n) for n in shape)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        start = -(-self.used // ALIGN) * ALIGN
        if start + nbytes > len(self._bytes):
            raise MemoryError(f"the shared arena of {len(self._bytes)} bytes is full: {self.used} used, "
                              f"{nbytes} more asked for an array of shape {shape} ({dtype})")
        self.used = start + nbytes
        return self._bytes[start : start + nbytes].view(dtype).reshape(shape)

    def locate(self, array: np.ndarray) -> tuple | None:
        """(offset, shape, strides, dtype) of a view of the arena; None if `array` is not wholly in it."""
        if array.size == 0:
            return None
        offset = array.__array_interface__["data"][0] - self._base
        if array.flags.c_contiguous:
            low, high = offset, offset + array.nbytes
        else:
            low = high = offset
            for stride, n in zip(array.strides, array.shape, strict=True):
                if stride < 0:
                    low += stride * (n - 1)
                else:
                    high += stride * (n - 1)
            high += array.itemsize
        if low < 0 or high > len(self._bytes):
            return None
        return offset, array.shape, array.strides, array.dtype.str

    def view(self, offset: int, shape: tuple[int, ...], strides: tuple[int, ...], dtype: str) -> np.ndarray:
        """The array `locate` described, over this process's mapping of the arena."""
        return np.ndarray(shape, np.dtype(dtype), self._map, offset, strides)


class _Chain:
    """What the helpers were last sent for a chain: its arguments, as the caller passed them,
    and how many helpers (the first so many) have all of them."""

    def __init__(self, number: int, args: list[list]) -> None:
        self.number, self.args, self.helpers = number, args, 0
        # The list of kernels last run, the caller's arguments for them, the tasks in all, a name.
        self.kernels: list | None = None
        self.local: list = []
        self.tasks, self.name = 0, ""


class Helpers:
    """`processes` forked helper processes that run kernels' tasks together with the caller.

    `run_chain([(kernel, n_tasks, args), ...])` runs kernel(i, *args) for i in range(n_tasks),
    kernel after kernel, spread over the caller and the helpers, and returns when every task is
    done; the first error, the caller's or a helper's, is raised there.
    """

    def __init__(self, processes: int, arena: Arena) -> None:
        self.arena = arena
        context = multiprocessing.get_context("fork")
        # Every count on the board is written under the lock, which also makes what was written
        # before it (a job's message, a task's results) seen by whoever takes the lock next.
        self._board = arena.empty(_ASLEEP + processes, np.int64)
        self._board[...] = 0
        # Its counts as Python ints: read and written in a tenth of a microsecond, a numpy scalar's double.
        self._counts = counts = memoryview(self._board)
        self._message = memoryview(arena.empty(MESSAGE_BYTES, np.uint8))
        self._lock = context.Lock()
        self._pipes, self._processes = [], []
        for i in range(processes):
            ours, theirs = context.Pipe()
            # The child closes every parent end it inherits, so that the parent's death reads as
            # the end of its pipe (EOFError) and an orphaned helper ends.
            process = context.Process(target=_serve, args=(i, theirs, [*self._pipes, ours], arena, counts,
                                                           self._message, self._lock),
                                      name=f"nn-helper-{i + 1}", daemon=True)
            process.start()
            theirs.close()
            self._pipes.append(ours)
            self._processes.append(process)
        self._staging: dict[tuple, np.ndarray] = {}
        self._places: dict[int, tuple[np.ndarray, tuple]] = {}
        self._chains: dict[tuple, _Chain] = {}  # by (kernel, n_tasks, number of args) of each kernel

    @property
    def processes(self) -> int:
        return len(self._processes)

    def run_chain(self, kernels: list[tuple[Callable, int, tuple]]) -> None:
        """For each (kernel, n_tasks, args) in turn, kernel(i, *args) for i in range(n_tasks),
        in one hand-off: a task starts once every task of the kernels before its own is done.

        A chain of the same kernels and task counts as before is sent as what changed: the
        arguments that are not the same arrays or equal values (numbers, strings, None, tuples
        of them) as last time. Any other argument (an optimiser, say) is sent every time, but
        for `kernels` the very same list as last time, a prepared chain: then nothing is sent
        again, its arrays' values being read where they lie, and the objects it holds must not
        change what a kernel reads of them (what changes between jobs goes in an array)."""
        helpers = min(max(n_tasks for _, n_tasks, _ in kernels) - 1, len(self._processes))
        if helpers <= 0:
            for kernel, n_tasks, args in kernels:
                for i in range(n_tasks):
                    kernel(i, *args)
            return
        key = tuple((kernel, n_tasks, len(args)) for kernel, n_tasks, args in kernels)
        chain = self._chains.get(key)
        if chain is None:
            if len(self._chains) >= CHAINS_KEPT:
                self._chains.clear()  # numbers are given again: a new chain is always sent whole
            chain = self._chains[key] = _Chain(len(self._chains), [[None] * len(args) for _, _, args in kernels])
        # Whole to a helper that may have missed a change (it was not asked to the last job).
        whole, chain.helpers = chain.helpers < helpers, 0  # until this job is posted
        if kernels is chain.kernels and not whole:
            self._post((chain.number, None, ()), helpers, chain.tasks, chain.name)
            chain.helpers = helpers
            self._run_posted(chain.local, helpers, chain.name, ())
            return
        local, changes, copies, first = [], [], [], 0
        for phase, (kernel, n_tasks, args) in enumerate(kernels):
            before, now = chain.args[phase], list(args)
            for k, arg in enumerate(args):
                kind = type(arg)
                if kind is np.ndarray and arg is before[k] and not whole:
                    continue  # the array of last time (a staged copy never is: it is made again)
                if isinstance(arg, np.ndarray):
                    where = self._place(arg)
                    if where is None:
                        # An array of the caller's the arena does not hold: the job works on a copy.
                        copy = self._staged(len(copies), arg)
                        copies.append((arg, copy))
                        arg, where = copy, self._place(copy)
                    now[k] = arg
                    if whole or arg is not before[k]:
                        changes.append((phase, k, where, True))
                elif whole or kind not in _VALUES or kind is not type(before[k]) or arg != before[k]:
                    changes.append((phase, k, arg, False))
            chain.args[phase] = now
            local.append((kernel, now, first))
            first += n_tasks
        # Plain tuples pickle in a microsecond or two; the helper makes each array from its place.
        phases = tuple((kernel, len(args), start) for (kernel, args, start) in local) if whole else None
        name = " then ".join(kernel.__name__ for kernel, _, _ in kernels)
        self._post((chain.number, phases, changes), helpers, first, name)
        chain.helpers = helpers
        # A staged copy is made again at each job: such a chain is never sent as unchanged.
        chain.kernels, chain.local, chain.tasks, chain.name = (None if copies else kernels), local, first, name
        self._run_posted(local, helpers, name, copies)

    def _run_posted(self, local: list, helpers: int, name: str, copies: list) -> None:
        """The caller's part of the job just posted: take tasks, wait for the helpers, raise the
        first failure, copy staged arrays back."""
        error = None
        try:
            _take_tasks(local, self._counts, self._lock, self._alive)
        except BaseException as exc:  # the helpers still write into the arena: wait for them first
            error = exc
            _stop_handing_out(self._counts, self._lock)
        try:
            failures, died = self._finished(helpers, name)
        except BaseException:
            # Interrupted while waiting (Ctrl-C): the helpers may still be writing this job's
            # results. The pool ends here; run() goes on in the caller alone.
            self.close()
            raise
        if died:
            self.close()  # the same: a pool with a helper missing is not used again
        if error is not None:
            raise error
        if failures:
            raise RuntimeError(failures[0])
        for arg, copy in copies:
            if arg.flags.writeable:
                arg[...] = copy

    def _alive(self) -> bool:
        return all(process.is_alive() for process in self._processes)

    def _place(self, array: np.ndarray) -> tuple | None:
        """arena.locate(array), remembered for the array (held, so that its id is not reused):
        a training step passes the same arrays step after step, and locating one costs 2 us."""
        kept = self._places.get(id(array))
        if kept is not None and kept[0] is array:
            return kept[1]
        where = self.arena.locate(array)
        if where is not None:
            if len(self._places) >= VIEWS_KEPT:
                self._places.clear()
            self._places[id(array)] = (array, where)
        return where

    def _staged(self, position: int, array: np.ndarray) -> np.ndarray:
        """A copy of `array` in the arena, in a buffer kept for this position among a job's
        copies, shape and dtype."""
        key = (position, array.shape, array.dtype.str)
        buffer = self._staging.get(key)
        if buffer is None:
            buffer = self._staging[key] = self.arena.empty(array.shape, array.dtype)
        buffer[...] = array
        return buffer

    def _post(self, job: tuple | None, helpers: int, n_tasks: int, name: str = "stop", timeout: float = -1) -> bool:
        """Put `job` on the board for the first `helpers` helpers (None: every helper stops),
        waking those that sleep; False if the lock was not had within `timeout` s (-1: wait)."""
        message = pickle.dumps(job, protocol=pickle.HIGHEST_PROTOCOL)
        if len(message) > len(self._message):
            raise ValueError(f"the job {name} pickles to {len(message)} bytes, more than the "
                             f"{len(self._message)} the board holds: pass large values as arrays")
        board = self._counts
        if not self._lock.acquire(timeout=None if timeout < 0 else timeout):
            return False
        try:
            self._message[: len(message)] = message
            board[_LENGTH], board[_WANTED] = len(message), helpers
            board[_NEXT], board[_TASKS], board[_DONE], board[_STOPPED] = 0, n_tasks, 0, 0
            board[_FINISHED], board[_FAILED], board[_CALLER_ASLEEP] = 0, 0, 0
            board[_SEQ] += 1
            asleep = [k for k in range(helpers) if board[_ASLEEP + k]]
            for k in asleep:
                board[_ASLEEP + k] = 0
        finally:
            self._lock.release()
        for k in asleep:
            with contextlib.suppress(OSError):  # it has died: the wait for it says so
                self._pipes[k].send(None)
        return True

    def _finished(self, helpers: int, name: str) -> tuple[list[str], bool]:
        """Wait for the job's helpers to finish: (their failures, as messages; whether one died)."""
        board, pipes, processes = self._counts, self._pipes[:helpers], self._processes[:helpers]
        failures, slept = [], False
        while True:
            _watch(lambda: board[_FINISHED] >= helpers)
            with self._lock:  # also makes the helpers' results seen here
                done, failed = board[_FINISHED] >= helpers, board[_FAILED]
                if not done:
                    board[_CALLER_ASLEEP] = slept = 1
            if done:
                break
            # Asleep until the last helper to finish wakes us, one sends a traceback or one dies.
            ready = wait_for(pipes + [process.sentinel for process in processes])
            for pipe, process in zip(pipes, processes, strict=True):
                failures += self._read(pipe, process, name)
                if process.sentinel in ready:
                    process.join()
                    failures.append(f"training helper process {process.name} (pid {process.pid}) ended with exit "
                                    f"code {process.exitcode} during {name}; the step cannot go on")
                    _stop_handing_out(board, self._lock)
                    return failures, True
        if failed > len(failures) or slept:
            # A traceback is sent before its helper counts itself finished: it is here by now.
            for pipe, process in zip(pipes, processes, strict=True):
                failures += self._read(pipe, process, name)
        return failures, False

    @staticmethod
    def _read(pipe, process, name: str) -> list[str]:
        """What a helper has sent and not yet been read: a wake (None) is nothing, a traceback a failure."""
        failures = []
        with contextlib.suppress(EOFError, OSError):  # it has died: the caller sees its sentinel
            while pipe.poll():
                text = pipe.recv()
                if text is not None:
                    failures.append(f"training helper process {process.name} failed in {name}:\n{text}")
        return failures

    def close(self) -> None:
        """Stop the helpers (a helper that does not stop within 5 s is terminated)."""
        if self._processes:
            # A helper killed while holding the lock would hold it for ever: then they are terminated.
            self._post(None, len(self._processes), 0, timeout=1.0)
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []


def _take_tasks(kernels: list[tuple[Callable, list, int]], board: memoryview, lock,
                alive: Callable[[], bool]) -> None:
    """Take tasks of a chain (kernel, args, number of its first task) until none is left, each
    once every task before its kernel's first is done; return early if the job is stopped."""
    done, which = False, 0
    while True:
        with lock:
            board[_DONE] += done
            i = board[_NEXT]
            if i >= board[_TASKS]:
                return
            board[_NEXT] = i + 1
        while which + 1 < len(kernels) and i >= kernels[which + 1][2]:
            which += 1
        kernel, args, first = kernels[which]
        if first and board[_DONE] < first and not _await_done(board, first, lock, alive):
            return
        kernel(i - first, *args)
        done = True


def _watch(ready: Callable[[], bool], seconds: float = POLL_SECONDS) -> bool:
    """Whether ready() comes true within `seconds`, asked without sleeping (see POLL_SECONDS)."""
    start = time.perf_counter()
    while not ready():
        waited = time.perf_counter() - start
        if waited > seconds:
            return False
        if waited > SPIN_SECONDS:
            os.sched_yield()
    return True


def _await_done(board: memoryview, tasks: int, lock, alive: Callable[[], bool]) -> bool:
    """Wait until `tasks` tasks are done (True), or the job is stopped or a process it needs
    has ended (False): the wait is for a task of another worker, the end of the kernel before."""
    while not _watch(lambda: board[_DONE] >= tasks or board[_STOPPED]):
        if not alive():
            return False
    with lock:  # makes what those tasks wrote seen here
        return not board[_STOPPED]


def _stop_handing_out(board: memoryview, lock) -> None:
    with lock:
        board[_NEXT] = board[_TASKS]
        board[_STOPPED] = 1


def _serve(me: int, pipe, parent_ends: list, arena: Arena, board: memoryview, message: memoryview, lock) -> None:
    """Helper `me`'s life: take each job (a chain of kernels) off the board, run its tasks, count
    itself finished (a failure's traceback goes down the pipe first); sleep on the pipe when no
    job comes."""
    for end in parent_ends:
        end.close()
    # Ctrl-C reaches the whole process group: the parent stops us, we print nothing of our own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(limits=1, user_api="blas")
    # A training step sends the same arrays step after step: each is made once from its place.
    views: dict[tuple, np.ndarray] = {}
    # Each chain's kernels and their arguments as last sent (Helpers.run_chain), by number.
    chains: dict[int, list[tuple[Callable, list, int]]] = {}
    parent = os.getppid()

    def parent_alive() -> bool:  # an orphan is given another parent
        return os.getppid() == parent

    seen = 0
    while True:
        _watch(lambda seen=seen: board[_SEQ] != seen)
        with lock:
            asleep = board[_SEQ] == seen
            if asleep:
                board[_ASLEEP + me] = 1
            else:
                seen, wanted = board[_SEQ], board[_WANTED]
                job = pickle.loads(message[: board[_LENGTH]])
        if asleep:
            try:
                pipe.recv()  # the caller's wake, sent once it has put a job for us on the board
            except EOFError:  # the parent is gone
                return
            continue
        if job is None:
            return
        if me >= wanted:
            continue
        number, phases, changes = job
        if phases is not None:
            chains[number] = [(kernel, [None] * n_args, first) for kernel, n_args, first in phases]
        kernels = chains[number]
        for phase, k, value, place in changes:
            if place:
                view = views.get(value)
                if view is None:
                    if len(views) >= VIEWS_KEPT:
                        views.clear()
                    view = views[value] = arena.view(*value)
                value = view
            kernels[phase][1][k] = value
        failed = False
        try:
            _take_tasks(kernels, board, lock, parent_alive)
        except BaseException:
            _stop_handing_out(board, lock)
            failed = True
            pipe.send(traceback.format_exc())
        with lock:
            board[_FINISHED] += 1
            board[_FAILED] += failed
            wake = board[_FINISHED] == wanted and board[_CALLER_ASLEEP]
            if wake:
                board[_CALLER_ASLEEP] = 0
        if wake:
            pipe.send(None)
