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
"""

from __future__ import annotations

import contextlib
import mmap
import multiprocessing
import os
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
#: Seconds a helper (and the caller, waiting for the helpers' answers) keeps polling its pipe
#: before it sleeps on it. Waking a sleeping process costs 5-50 us, by machine (the most in a
#: VM whose idle vCPU halts), and a training step's jobs come within a few hundred us of each
#: other: polling that long saves a wake per job, at the cost of a core that has no task then.
POLL_SECONDS = 0.0005
#: Arrays whose places in the arena the caller keeps, and a helper the arrays it made from
#: them (a kernel's job may pass twenty, each costing 1-2 us to locate or make); beyond this
#: many each starts again.
VIEWS_KEPT = 4096


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


class Helpers:
    """`processes` forked helper processes that run kernels' tasks together with the caller.

    `run(kernel, n_tasks, *args)` runs kernel(i, *args) for i in range(n_tasks), spread over
    the caller and the helpers, and returns when every task is done; the first error, the
    caller's or a helper's, is raised there.
    """

    def __init__(self, processes: int, arena: Arena) -> None:
        self.arena = arena
        context = multiprocessing.get_context("fork")
        # [next task to hand out, number of tasks]; the lock makes taking one atomic.
        self._counter = arena.empty(2, np.int64)
        self._lock = context.Lock()
        self._pipes, self._processes = [], []
        for i in range(processes):
            ours, theirs = context.Pipe()
            # The child closes every parent end it inherits, so that the parent's death reads as
            # the end of its pipe (EOFError) and an orphaned helper ends.
            process = context.Process(target=_serve, args=(theirs, [*self._pipes, ours], arena, self._counter,
                                                           self._lock), name=f"nn-helper-{i + 1}", daemon=True)
            process.start()
            theirs.close()
            self._pipes.append(ours)
            self._processes.append(process)
        self._staging: dict[tuple, np.ndarray] = {}
        self._places: dict[int, tuple[np.ndarray, tuple]] = {}

    @property
    def processes(self) -> int:
        return len(self._processes)

    def run(self, kernel: Callable, n_tasks: int, *args) -> None:
        helpers = min(n_tasks - 1, len(self._processes))
        if helpers <= 0:
            for i in range(n_tasks):
                kernel(i, *args)
            return
        local, sent, places, copies = [], [], [], []
        for k, arg in enumerate(args):
            if isinstance(arg, np.ndarray):
                where = self._place(arg)
                if where is None:
                    # An array of the caller's the arena does not hold: the job works on a copy.
                    copy = self._staged(k, arg)
                    copies.append((arg, copy))
                    arg, where = copy, self._place(copy)
                places.append(k)
                local.append(arg)
                sent.append(where)
            else:
                local.append(arg)
                sent.append(arg)
        self._counter[:] = (0, n_tasks)
        # Plain tuples pickle in a microsecond or two; the helper makes each array from its place.
        message = (kernel, tuple(sent), tuple(places))
        for pipe in self._pipes[:helpers]:
            pipe.send(message)
        error = None
        try:
            _take_tasks(kernel, local, self._counter, self._lock)
        except BaseException as exc:  # the helpers still write into the arena: wait for them first
            error = exc
            _stop_handing_out(self._counter, self._lock)
        try:
            failures, died = self._answers(helpers, kernel)
        except BaseException:
            # Interrupted while waiting (Ctrl-C): an answer may still be on its way and would
            # be taken for the next job's. The pool ends here; run() goes on in the caller alone.
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
        """A copy of `array` in the arena, in a buffer kept for this argument position, shape and dtype."""
        key = (position, array.shape, array.dtype.str)
        buffer = self._staging.get(key)
        if buffer is None:
            buffer = self._staging[key] = self.arena.empty(array.shape, array.dtype)
        buffer[...] = array
        return buffer

    def _answers(self, helpers: int, kernel: Callable) -> tuple[list[str], bool]:
        """Wait for each helper's answer to the job: (the failures, as messages; whether one died)."""
        failures, died = [], False
        for pipe, process in zip(self._pipes[:helpers], self._processes, strict=False):
            if not _poll(pipe):
                wait_for([pipe, process.sentinel])
            try:
                answer = pipe.recv()
            except EOFError:  # it died: its end of the pipe closed with it
                process.join()
                died = True
                failures.append(f"training helper process {process.name} (pid {process.pid}) ended with exit "
                                f"code {process.exitcode} during {kernel.__name__}; the step cannot go on")
                continue
            if answer is not None:
                failures.append(f"training helper process {process.name} failed in {kernel.__name__}:\n{answer}")
        return failures, died

    def close(self) -> None:
        """Stop the helpers (a helper that does not stop within 5 s is terminated)."""
        for pipe in self._pipes:
            with contextlib.suppress(OSError):  # it has ended already
                pipe.send(None)
        for process in self._processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
        for pipe in self._pipes:
            pipe.close()
        self._pipes, self._processes = [], []


def _poll(pipe) -> bool:
    """Whether `pipe` has something to read within POLL_SECONDS, asked without sleeping."""
    deadline = time.perf_counter() + POLL_SECONDS
    while time.perf_counter() < deadline:
        if pipe.poll():
            return True
    return False


def _take_tasks(kernel: Callable, args: list, counter: np.ndarray, lock) -> None:
    while True:
        with lock:
            i = int(counter[0])
            if i >= counter[1]:
                return
            counter[0] = i + 1
        kernel(i, *args)


def _stop_handing_out(counter: np.ndarray, lock) -> None:
    with lock:
        counter[0] = counter[1]


def _serve(pipe, parent_ends: list, arena: Arena, counter: np.ndarray, lock) -> None:
    """A helper's life: run the tasks of each job it is sent, answer None or the traceback."""
    for end in parent_ends:
        end.close()
    # Ctrl-C reaches the whole process group: the parent stops us, we print nothing of our own.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threadpool_limits(limits=1, user_api="blas")
    # A training step sends the same arrays step after step: each is made once from its place.
    views: dict[tuple, np.ndarray] = {}
    while True:
        try:
            _poll(pipe)
            job = pipe.recv()
        except EOFError:  # the parent is gone
            return
        if job is None:
            return
        kernel, args, places = job
        args = list(args)
        for k in places:
            view = views.get(args[k])
            if view is None:
                if len(views) >= VIEWS_KEPT:
                    views.clear()
                view = views[args[k]] = arena.view(*args[k])
            args[k] = view
        try:
            _take_tasks(kernel, args, counter, lock)
        except BaseException:
            _stop_handing_out(counter, lock)
            pipe.send(traceback.format_exc())
        else:
            pipe.send(None)
