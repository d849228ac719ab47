"""Worker threads for a training step's element-wise work, cut into blocks fixed by the data's size.

NumPy releases the GIL inside ufuncs and BLAS, so plain threads run array work side by side.
Every split here depends only on the size of the array, never on the number of threads, and
each block is a computation of its own (no sums across blocks): so a result is the same bytes
whichever thread runs a block and however many threads there are.
"""

from __future__ import annotations

import contextvars
import functools
import itertools
import os
import queue
import threading
import time
import warnings
from collections.abc import Callable

import numpy as np

from mnist_pipeline.nn.processes import Arena, Helpers, processes_available

#: Elements per block of element-wise work. Waking a worker costs some 10-50 us here (more in a
#: VM whose idle CPU must be woken), about what one pass over 64k float32 values takes, so
#: smaller blocks would spend more on the hand-off than they save.
BLOCK = 1 << 16


#: Fewest array elements worth handing to other threads. A pass over 128k float32 values in
#: cache takes 7 us here, and waking a worker and waiting for it 5-20 us more (measured with two
#: workers on 2 cores), so the batch-norm, activation and dropout passes of a 128-row batch of
#: 1024 features ran slower on two threads than on one. Smaller work runs in the caller, over
#: the same blocks in the same order: the result is the same bytes either way.
PARALLEL_MIN = 1 << 19


#: Fewest element passes (array elements times the passes over them) in element-wise work
#: worth handing to helper processes (Workers.run_kernel). A job costs 11 us there and back in
#: a loop and 60-90 us inside a training step, whose tasks leave the caches cold (its arguments
#: placed and pickled, the board, the helper's start; benchmarks/handoff.py); 2M element passes
#: take some 0.4 ms on one core, so halving them pays for it. Measured on the CNN's first maps
#: (128x14x14x32, benchmarks/threads_vs_processes.py, with jobs down a pipe at 50-90 us): ReLU's
#: two passes ran slower on a helper process than in the caller alone (0.91x), batch norm's
#: jobs of 3-4 passes faster (1.36x).
PROCESS_MIN = 1 << 21


#: Most columns per block of a product. On a 128-row batch, blocks of 128 columns cost 6-18%
#: more than one whole product on one thread (each block packs its operands again); 256 cost 0-8%.
COLUMNS = 256
#: Fewest multiply-adds in a block of a product. Handing a block to a worker and waiting for
#: it costs 60-100 us on a 2-vCPU VM (benchmarks/handoff.py: a helper starts its half of a
#: 128x784x256 product 30-40 us after it is handed over, the caller returns 30-40 us after it
#: ends, and the two halves take 195-225 us against 245 us whole), so a block must do well over
#: that: 16M multiply-adds are about 160 us at this core's 100 GMAC/s. The SGD MLP's products
#: of 26M and less, split at 4M before, made a 2-thread epoch 0.52 s against 0.40 s unsplit.
#: (An MLP's step by columns hands its jobs over in chains and has a floor of its own,
#: columns.CHAINED_PRODUCT.)
MIN_PRODUCT = 1 << 24


def _worth_processes(elements: int | None, passes: int) -> bool:
    """Whether a job is worth a hand-off to the helper processes alone: products and
    convolutions (elements None) always, element-wise work from PROCESS_MIN element passes."""
    return elements is None or elements * passes >= PROCESS_MIN


def product_block(rows: int, depth: int, width: int, least: int | None = None) -> int:
    """Columns per block when a (rows, depth) @ (depth, width) product is split by columns.

    An even number of equal blocks (784 -> 4 x 196, not 256 + 256 + 256 + 16), so that two
    threads get the same work: as many as blocks of at most COLUMNS columns need, but none
    with fewer than `least` multiply-adds (MIN_PRODUCT unless given). A product too small for
    two is one block.
    """
    least = MIN_PRODUCT if least is None else least
    pairs = min(-(-width // (2 * COLUMNS)), rows * depth * width // (2 * max(least, 1)))
    if pairs < 1:
        return max(width, 1)
    return -(-width // (2 * pairs))


def row_block(width: int) -> int:
    """Rows per block of element-wise work on an array of rows `width` elements long."""
    return max(1, BLOCK // max(width, 1))


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity, e.g. under a batch scheduler)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@functools.lru_cache(maxsize=1024)
def blocks(n: int, size: int) -> tuple[slice, ...]:
    """[0, n) cut into consecutive slices of `size` (the last one shorter); one slice if n <= size.

    Kept once made: a training step asks for the same few cuttings every time."""
    return tuple(slice(start, min(start + size, n)) for start in range(0, max(n, 1), size))


def share_cores(cores: int, jobs: int, index: int) -> int:
    """Threads of job `index` (0-based) of `jobs` that run side by side on `cores` cores.

    Every core is used and none twice: the cores are dealt out evenly, the first
    `cores % jobs` jobs getting one more; with more jobs than cores each gets one.
    """
    share, extra = divmod(max(int(cores), 1), max(int(jobs), 1))
    return max(1, share + (index < extra))


class Job:
    """One call of Workers.run or submit: its tasks, handed out one at a time, and when the last one ended.

    Whoever finishes the last task (or skips the rest after an error) sets `done`, so the
    caller waits only for tasks a helper has actually taken: a helper the scheduler wakes late
    (the machine is shared, the other core busy) finds nothing left and costs the caller nothing.
    `clock`, when given, receives the seconds each task took (Workers.shared_seconds).
    """

    def __init__(self, task: Callable[[int], None], n_tasks: int, clock: list[float] | None = None,
                 shared: bool = True) -> None:
        self.task, self.n_tasks, self.clock = task, n_tasks, clock
        # next() on these iterators is atomic under the GIL: each index goes to one thread,
        # and each count to one finished (or skipped) task.
        self.indices = iter(range(n_tasks))
        self.finished = itertools.count(1)
        # A job no helper was given is the caller's alone: no event to set and wait for (a
        # training step makes a few such jobs each time, at one thread all of them).
        self.done = threading.Event() if shared else None
        self.error: BaseException | None = None
        if n_tasks <= 0 and self.done is not None:
            self.done.set()

    def work(self) -> None:
        for i in self.indices:
            start = time.perf_counter() if self.clock is not None else 0.0
            try:
                self.task(i)
            except BaseException as error:  # raised by the caller of run()
                if self.error is None:
                    self.error = error
                # Skip the rest, so that every thread stops; they count as ended.
                for _ in self.indices:
                    self._end()
            if self.clock is not None:
                self.clock.append(time.perf_counter() - start)
            self._end()

    def _end(self) -> None:
        if next(self.finished) == self.n_tasks and self.done is not None:
            self.done.set()


_local = threading.local()


def thread_scratch(name: str, shape: tuple[int, ...], dtype, fill: float | None = None) -> np.ndarray:
    """A scratch array of the calling thread's own (and process's: a helper process has its own),
    kept for the next call with the same name, shape and dtype; `fill` sets it when it is made."""
    arrays = getattr(_local, "arrays", None)
    if arrays is None:
        arrays = _local.arrays = {}
    key = (name, shape, dtype)
    array = arrays.get(key)
    if array is None:
        array = arrays[key] = np.empty(shape, dtype) if fill is None else np.full(shape, fill, dtype)
    return array


class Workers:
    """`threads` threads, the caller's included, that run the tasks of `run` between them.

    The caller takes tasks too, so one thread means no extra thread at all. Tasks are handed
    out one at a time from a shared iterator (whoever is free takes the next), which balances
    the load; the result does not depend on who ran what, as long as the tasks are independent.

    With `processes` (and threads > 1, on Linux), `run_kernel` runs its tasks on the caller and
    threads - 1 helper processes instead (processes.Helpers): for tasks made of many short NumPy
    calls, which threads cannot share (see processes.py). The arrays those tasks write must
    then be in `arena`, where the layers put their buffers (Layer._buffer) and a Model its
    parameters (Model.set_workers).
    """

    def __init__(self, threads: int = 1, processes: bool = False) -> None:
        if int(threads) < 1:
            raise ValueError(f"threads {threads!r}: expected an integer >= 1")
        self.threads = int(threads)
        self.processes = bool(processes) and processes_available()
        self.arena: Arena | None = None
        self._helpers: Helpers | None = None
        if self.processes and self.threads > 1:
            # Forked before any thread of ours starts: a child gets only the forking thread.
            try:
                self.arena = Arena()
                self._helpers = Helpers(self.threads - 1, self.arena)
            except OSError as error:  # no memory file, no fork (limits of the machine or its sandbox)
                warnings.warn(f"helper processes could not be started ({error}); their work (convolutions, an "
                              f"MLP's column jobs) runs on {self.threads} threads instead, more slowly, with the same "
                              f"results", stacklevel=2)
                self.processes, self.arena, self._helpers = False, None, None
        self._clock: list[float] | None = None
        self._next = 0  # the helper whose inbox a job goes to first
        self._submitted: list[Job] = []  # jobs submit() returned that no one has waited for yet
        self._cuts: dict[int, tuple[list, list]] = {}  # run_kernels' lists of jobs, as they were cut
        self._inboxes: list[queue.SimpleQueue] = [queue.SimpleQueue() for _ in range(self.threads - 1)]
        self._threads = [
            threading.Thread(target=self._serve, args=(inbox,), name=f"nn-worker-{i + 1}", daemon=True)
            for i, inbox in enumerate(self._inboxes)
        ]
        for thread in self._threads:
            thread.start()

    def empty(self, shape: int | tuple[int, ...], dtype) -> np.ndarray:
        """A new array the pool's workers may all write: in the shared arena when it has helper
        processes, else an ordinary one."""
        return np.empty(shape, dtype) if self.arena is None else self.arena.empty(shape, dtype)

    def run(self, task: Callable[[int], None], n_tasks: int, elements: int | None = None) -> None:
        """task(0), ..., task(n_tasks - 1), spread over the threads; returns when all are done.

        `elements`, the number of array elements the tasks work through in all, marks cheap
        element-wise work: below PARALLEL_MIN the caller runs every task itself. None (products,
        convolutions) always spreads. The first exception a task raises is raised here, once no
        task is running any more.
        """
        alone = min(n_tasks, self.threads) <= 1 and self._clock is None
        if alone or (elements is not None and elements < PARALLEL_MIN):
            for i in range(n_tasks):
                task(i)
            return
        # The caller takes tasks at once: the helpers are needed for the rest only.
        self.wait(self._hand_out(task, n_tasks, min(n_tasks, self.threads) - 1))

    def run_kernel(self, kernel: Callable[..., None], n_tasks: int, *args, elements: int | None = None,
                   passes: int = 1) -> None:
        """kernel(i, *args) for i in range(n_tasks): spread over the helper processes when the pool
        has them, else as run() spreads (`elements` as there). `kernel` is a module-level function
        (a helper process finds it by name) that writes only into arrays it is given.

        Under processes, element-wise work (`elements` given) of fewer than PROCESS_MIN element
        passes (elements x `passes`, the passes over memory a task makes) runs in the caller.
        """
        if self.processes and not _worth_processes(elements, passes):
            for i in range(n_tasks):
                kernel(i, *args)
        elif self._helpers is not None:
            self._run_chain([(kernel, n_tasks, args)])
        else:
            # Threads; or one thread of a process pool, where work that would go to the helpers
            # counts as work that spreads, whatever PARALLEL_MIN says.
            self.run(lambda i: kernel(i, *args), n_tasks, None if self.processes else elements)

    def run_kernels(self, jobs: list[tuple[Callable[..., None], int, tuple, dict]]) -> None:
        """Each job (kernel, n_tasks, args, options) in turn, as run_kernel(kernel, n_tasks, *args,
        **options) runs it, but jobs for the helper processes one after another go in one
        hand-off (processes.Helpers.run_chain), each starting once the one before is done.

        Element-wise work too small to be handed over alone goes along in a hand-off made
        anyway (when some job of `jobs` is handed over), sharing its cost; `elements=0` marks
        work that stays in the caller even so."""
        if self._helpers is None:
            for kernel, n_tasks, args, options in jobs:
                self.run_kernel(kernel, n_tasks, *args, **options)
            return
        # The same list of jobs, step after step (columns.ColumnStep), is cut the same way: into
        # the same chains, which Helpers.run_chain then sends as what changed.
        kept = self._cuts.get(id(jobs))
        if kept is None or kept[0] is not jobs:
            if len(self._cuts) >= 64:
                self._cuts.clear()
            kept = self._cuts[id(jobs)] = (jobs, self._cut(jobs))
        for part in kept[1]:
            if isinstance(part, list):
                self._run_chain(part)
            else:
                kernel, n_tasks, args, options = part
                self.run_kernel(kernel, n_tasks, *args, **options)

    @staticmethod
    def _cut(jobs: list[tuple[Callable[..., None], int, tuple, dict]]) -> list:
        """run_kernels' jobs as they run: chains (lists of (kernel, n_tasks, args)) for the
        helper processes, and jobs for the caller alone."""
        handed = [_worth_processes(options.get("elements"), options.get("passes", 1)) for _, _, _, options in jobs]
        parts, chain = [], []
        for job, alone in zip(jobs, handed, strict=True):
            if alone or (any(handed) and job[3]["elements"] > 0):
                chain.append(job[:3])
            else:
                if chain:
                    parts.append(chain)
                parts.append(job)
                chain = []
        if chain:
            parts.append(chain)
        return parts

    def _run_chain(self, chain: list[tuple[Callable[..., None], int, tuple]]) -> None:
        # A job submitted earlier (a dense layer's weight gradient) would share the cores
        # with the helper processes: it is finished first, the caller helping.
        while self._submitted:
            self.wait(self._submitted[-1])
        self._helpers.run_chain(chain)

    def submit(self, task: Callable[[int], None], n_tasks: int) -> Job:
        """Hand task(0), ..., task(n_tasks - 1) to the helpers and return at once; see wait().

        The caller goes on with other work while the helpers take these tasks, and runs
        whatever they have not taken when it waits. With one thread nothing runs before wait().
        As in run(), one task is left to the caller: a block of work is sized to be worth a
        hand-off (MIN_PRODUCT), and the work of a single block is not, so a lone task waits
        for the caller (measured on the SGD MLP, whose weight gradients are single blocks:
        handing them over made its 2-thread epoch slower, 0.57 s against 0.51 s).
        """
        job = self._hand_out(task, n_tasks, min(n_tasks, self.threads) - 1)
        self._submitted.append(job)
        return job

    def _hand_out(self, task: Callable[[int], None], n_tasks: int, helpers: int) -> Job:
        # A single task never runs on two threads at once: it counts as one thread's work.
        job = Job(task, n_tasks, self._clock if n_tasks > 1 else None, shared=helpers > 0)
        # Starting from the next helper each time, so that small jobs do not all go to one.
        for k in range(helpers):
            inbox = self._inboxes[(self._next + k) % len(self._inboxes)]
            # The caller's context (np.errstate lives there), one copy per thread.
            inbox.put((contextvars.copy_context(), job))
        if helpers:
            self._next = (self._next + helpers) % len(self._inboxes)
        return job

    def wait(self, job: Job) -> None:
        """Run the tasks of `job` no helper has taken, wait for those they have, raise the first error."""
        if job in self._submitted:
            self._submitted.remove(job)
        job.work()
        if job.done is not None:
            job.done.wait()
        if job.error is not None:
            raise job.error

    def measure(self, on: bool = True) -> None:
        """Start (or stop) adding up shared_seconds: the time spent in tasks that spread over threads."""
        self._clock = [] if on else None

    @property
    def shared_seconds(self) -> float:
        """Seconds spent in tasks that may run on several threads, since measure() (summed over threads).

        At one thread, the rest of an epoch's time is what runs on one thread only, whatever
        the number of cores: Amdahl's serial share (benchmarks/profile_epoch.py reports it).
        """
        return sum(self._clock or ())

    def map_blocks(self, task: Callable[[slice], None], n: int, size: int | None = None,
                   elements: int | None = None) -> None:
        """task(s) for every slice s of blocks(n, size or BLOCK), spread over the threads as `run` does."""
        slices = blocks(n, size or BLOCK)
        self.run(lambda i: task(slices[i]), len(slices), elements)

    def close(self) -> None:
        """Stop the worker threads; `run` then works in the caller alone."""
        for inbox in self._inboxes:
            inbox.put(None)
        for thread in self._threads:
            thread.join()
        if self._helpers is not None:
            self._helpers.close()
        # The arena stays: a model's parameters live there after training.
        self._inboxes, self._threads, self._helpers, self.threads = [], [], None, 1

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @staticmethod
    def _serve(inbox: queue.SimpleQueue) -> None:
        while (item := inbox.get()) is not None:
            context, job = item
            context.run(job.work)


#: For layers and optimisers not given a pool: everything runs in the caller.
SERIAL = Workers(1)
