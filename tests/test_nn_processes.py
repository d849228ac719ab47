"""Helper processes (nn.processes) and the convolutions they run: the shared arena, handing out
tasks, errors, a helper's death, Ctrl-C, a killed parent, a machine where they cannot start,
and the same bytes as one thread.

Workers(threads, processes=True) forks threads - 1 helper processes that run a kernel's tasks
(Conv2D's blocks of images) beside the caller, in arrays of a shared arena. These tests hold it
to what the threads give: every result the same bytes, and every failure raised in the caller.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from threadpoolctl import threadpool_limits

from mnist_pipeline.nn import conv, parallel
from mnist_pipeline.nn.conv import Conv2D, MaxPool2D
from mnist_pipeline.nn.init import INITIALISERS
from mnist_pipeline.nn.model import Model, architecture
from mnist_pipeline.nn.parallel import Workers
from mnist_pipeline.nn.processes import Arena, processes_available
from mnist_pipeline.nn.settings import TrainSettings
from mnist_pipeline.nn.train import Trainer

pytestmark = pytest.mark.skipif(not processes_available() and not os.environ.get("CI"),
                                reason="helper processes need Linux (fork and memfd_create)")


@pytest.fixture(autouse=True)
def one_blas_thread():
    with threadpool_limits(limits=1, user_api="blas"):
        yield


@pytest.fixture
def pool():
    with Workers(3, processes=True) as workers:
        yield workers


# Kernels: module-level, as a helper finds them by name. ---------------------------------------


def record_pid(i: int, pids: np.ndarray, seconds: float) -> None:
    """Task i notes which process ran it; each takes `seconds`, so that every helper gets some."""
    time.sleep(seconds)
    pids[i] = os.getpid()


def square_into(i: int, rows: tuple[slice, ...], x: np.ndarray, out: np.ndarray) -> None:
    np.square(x[rows[i]], out=out[rows[i]])


def fail_in_helpers(i: int, parent: int) -> None:
    if os.getpid() != parent:
        raise ValueError(f"task {i} refused in a helper")
    time.sleep(0.01)


def fail_in_caller(i: int, parent: int, done: np.ndarray) -> None:
    if os.getpid() == parent:
        raise KeyError("the caller's task")
    time.sleep(0.01)
    done[i] = 1


def die_in_helpers(i: int, parent: int) -> None:
    if os.getpid() != parent:
        os._exit(3)
    time.sleep(0.01)


def write_index(i: int, out: np.ndarray, seconds: float) -> None:
    time.sleep(seconds * (i % 2))  # some tasks late, so that a later kernel's early tasks would overtake them
    out[i] = i + 1


def check_all_written(i: int, written: np.ndarray, seen: np.ndarray) -> None:
    """Task i of the kernel after write_index: what it finds written of the one before."""
    seen[i] = np.count_nonzero(written)


def write_value(i: int, out: np.ndarray, value: float) -> None:
    time.sleep(0.002)  # every worker gets tasks
    out[i] = value


def fail_first(i: int, parent: int) -> None:
    time.sleep(0.005)  # the caller's tasks take a while, so that the helpers get some
    if os.getpid() != parent:
        raise ValueError("the first kernel failed")


def die_first(i: int, parent: int) -> None:
    if os.getpid() != parent:
        os._exit(4)
    time.sleep(0.05)


def count_run(i: int, ran: np.ndarray) -> None:
    ran[i] = 1


# The arena -----------------------------------------------------------------------------------


def test_the_arena_gives_aligned_arrays_and_finds_any_view_of_them_again():
    arena = Arena(1 << 20)
    a = arena.empty((10, 7), np.float32)
    b = arena.empty(5, np.int64)
    assert a.ctypes.data % 64 == 0 and b.ctypes.data % 64 == 0
    assert not np.shares_memory(a, b)
    a[...] = np.arange(70).reshape(10, 7)
    for view in (a, a[2:5], a[:, 3], a.T, a[::-2, 1:]):
        assert np.array_equal(arena.view(*arena.locate(view)), view)
    assert arena.locate(np.zeros(3)) is None, "an array of the process's own memory is not in the arena"


def test_a_full_arena_says_how_full_and_what_was_asked():
    arena = Arena(1024)
    arena.empty(200, np.float32)
    with pytest.raises(MemoryError, match=r"arena of 1024 bytes is full: 800 used, 1600 more .*\(400,\)"):
        arena.empty(400, np.float32)


# Handing out tasks ---------------------------------------------------------------------------


def test_every_task_runs_once_and_the_helpers_take_some(pool):
    pids = pool.arena.empty(12, np.int64)
    pids[...] = 0
    pool.run_kernel(record_pid, 12, pids, 0.05)  # 0.2 s in all: time for a helper woken late
    assert (pids != 0).all()
    assert len(set(pids.tolist()) - {os.getpid()}) == 2, "both helper processes ran tasks"


def test_arrays_outside_the_arena_are_copied_in_and_results_copied_back(pool):
    x = np.arange(40, dtype=np.float32).reshape(8, 5)  # the caller's own memory
    out = np.zeros_like(x)
    rows = tuple(slice(i, i + 2) for i in range(0, 8, 2))
    pool.run_kernel(square_into, len(rows), rows, x, out)
    assert np.array_equal(out, np.square(x))
    out[...] = 0
    pool.run_kernel(square_into, len(rows), rows, x, out)  # the staging buffers are reused
    assert np.array_equal(out, np.square(x))


def test_a_helpers_error_is_raised_in_the_caller_with_its_traceback(pool):
    with pytest.raises(RuntimeError, match=r"(?s)nn-helper-\d failed in fail_in_helpers.*ValueError: task \d+ refused"):
        pool.run_kernel(fail_in_helpers, 20, os.getpid())
    # The pool still works afterwards.
    pids = pool.arena.empty(4, np.int64)
    pool.run_kernel(record_pid, 4, pids, 0.0)
    assert (pids != 0).all()


def test_the_callers_error_is_raised_once_the_helpers_have_stopped(pool):
    done = pool.arena.empty(30, np.int64)
    done[...] = 0
    with pytest.raises(KeyError, match="the caller's task"):
        pool.run_kernel(fail_in_caller, 30, os.getpid(), done)
    taken = int(done.sum())
    time.sleep(0.1)
    assert int(done.sum()) == taken, "no helper writes into the arena after run_kernel has returned"
    assert taken < 30, "the tasks left were not handed out after the error"


def test_a_helper_that_dies_fails_the_step_instead_of_hanging():
    dies = r"nn-helper-1 \(pid \d+\) ended with exit code 3 during die_in_helpers"
    with Workers(2, processes=True) as workers:
        with pytest.raises(RuntimeError, match=dies):
            workers.run_kernel(die_in_helpers, 50, os.getpid())
        # The pool is not used again with a helper missing: its work goes on in the caller.
        pids = workers.arena.empty(4, np.int64)
        workers.run_kernel(record_pid, 4, pids, 0.0)
        assert set(pids.tolist()) == {os.getpid()}


def test_where_helper_processes_cannot_start_the_pool_says_so_and_uses_threads(monkeypatch):
    def refused(*args, **kwargs):
        raise OSError(24, "Too many open files")

    monkeypatch.setattr(parallel, "Arena", refused)
    with pytest.warns(UserWarning, match=r"helper processes could not be started \(\[Errno 24\] Too many open "
                                         r"files\); their work \(convolutions, an MLP's column jobs\) runs "
                                         r"on 2 threads instead"):
        workers = Workers(2, processes=True)
    with workers:
        assert (workers.processes, workers.arena, workers._helpers) == (False, None, None)
        assert workers.threads == 2
        one = conv_step(Workers(1), fused=True, need_dx=True)
        got = conv_step(workers, fused=True, need_dx=True)
        assert all(got[name].tobytes() == one[name].tobytes() for name in one)


def test_closing_the_pool_ends_its_helper_processes():
    workers = Workers(3, processes=True)
    processes = list(workers._helpers._processes)
    assert all(process.is_alive() for process in processes)
    workers.close()
    assert not any(process.is_alive() for process in processes)
    # What was in the arena stays readable, and the pool now works in the caller alone.
    pids = workers.arena.empty(3, np.int64)
    workers.run_kernel(record_pid, 3, pids, 0.0)
    assert set(pids.tolist()) == {os.getpid()}


# Chains: several kernels in one hand-off ------------------------------------------------------


def test_a_kernel_of_a_chain_starts_once_every_task_of_the_one_before_is_done(pool):
    written, seen = pool.arena.empty(12, np.float64), pool.arena.empty(12, np.int64)
    for _ in range(3):
        written[...], seen[...] = 0, -1
        pool._helpers.run_chain([(write_index, 12, (written, 0.01)), (check_all_written, 12, (written, seen))])
        assert np.array_equal(written, np.arange(1, 13))
        assert (seen == 12).all(), seen


def test_a_chain_sent_again_carries_its_new_values_to_every_helper(pool):
    out = pool.arena.empty(12, np.float64)
    jobs = [(write_value, 12, (out, 1.0), {})]
    pool.run_kernels(jobs)
    assert (out == 1.0).all()
    # The same kernels with another value: a new list, sent as what changed.
    pool.run_kernels([(write_value, 12, (out, 2.5), {})])
    assert (out == 2.5).all(), out
    # Another array in the same place of the arguments.
    other = pool.arena.empty(12, np.float64)
    pool.run_kernels([(write_value, 12, (other, 3.0), {})])
    assert (other == 3.0).all() and (out == 2.5).all()
    # The first list again, run as it stands (a prepared chain): its array's values are the ones now.
    out[...] = 0
    pool.run_kernels(jobs)
    assert (out == 1.0).all()


def test_a_failure_in_a_chain_stops_it_before_the_next_kernel(pool):
    ran = pool.arena.empty(8, np.int64)
    ran[...] = 0
    with pytest.raises(RuntimeError, match=r"(?s)failed in fail_first then count_run.*the first kernel failed"):
        pool._helpers.run_chain([(fail_first, 6, (os.getpid(),)), (count_run, 8, (ran,))])
    assert not ran.any(), "no task of the kernel after the failure ran"
    # The pool still works afterwards.
    pool._helpers.run_chain([(count_run, 8, (ran,))])
    assert ran.all()


def test_a_caller_failure_in_a_chain_stops_the_helpers_waiting_for_it(pool):
    ran = pool.arena.empty(8, np.int64)
    ran[...] = 0
    with pytest.raises(KeyError, match="the caller's task"):
        pool._helpers.run_chain([(fail_in_caller, 4, (os.getpid(), pool.arena.empty(4, np.int64))),
                                 (count_run, 8, (ran,))])
    assert not ran.any()


def test_a_helper_that_dies_in_a_chain_fails_it_instead_of_hanging():
    with Workers(2, processes=True) as workers:
        ran = workers.arena.empty(8, np.int64)
        ran[...] = 0
        with pytest.raises(RuntimeError, match=r"nn-helper-1 \(pid \d+\) ended with exit code 4 during die_first then"):
            workers._helpers.run_chain([(die_first, 6, (os.getpid(),)), (count_run, 8, (ran,))])
        assert not ran.any()


def test_small_element_wise_work_goes_along_in_a_hand_off_made_anyway():
    big, small, never = (record_pid, 4, (), {}), (record_pid, 2, (), {"elements": 10}), (record_pid, 2, (), {"elements": 0})
    assert Workers._cut([small, big, never, small]) == [[small[:3], big[:3]], never, [small[:3]]]
    assert Workers._cut([small, never]) == [small, never], "no hand-off to go along with: all in the caller"


def test_a_job_too_large_for_the_board_is_refused_with_its_size(pool):
    out = pool.arena.empty(4, np.float64)
    with pytest.raises(ValueError, match=r"the job write_value pickles to \d+ bytes, more than the 1048576 the board holds"):
        pool.run_kernel(write_value, 4, out, b"x" * (1 << 21))
    pool.run_kernel(write_value, 4, out, 1.5)
    assert (out == 1.5).all()


# The convolutions on helper processes --------------------------------------------------------


def conv_step(workers: Workers, fused: bool, need_dx: bool, train: bool = True) -> dict[str, np.ndarray]:
    """One forward and backward of a 3x3 convolution (fused with a pool or not), every result copied."""
    rng = np.random.default_rng(4)
    layer, pool = Conv2D(3, 5), MaxPool2D()
    layer.initialize(INITIALISERS["he"], rng)
    if fused:
        layer.fuse(pool)
    for each in (layer, pool):
        each.chained, each.workers = True, workers
    x = rng.standard_normal((11, 9, 7, 3)).astype(np.float32)
    out = layer.forward(x, train)
    if fused:
        out = pool.forward(out, train)
    results = {"out": out.copy()}
    if train:
        dout = rng.standard_normal(out.shape).astype(np.float32)
        dx = layer.backward(pool.backward(dout) if fused else dout, need_dx)
        results |= {"dW": layer.grads["W"].copy(), "db": layer.grads["b"].copy()}
        if need_dx:
            results["dx"] = dx.copy()
    return results


@pytest.mark.parametrize("fused", [True, False], ids=["fused with a pool", "alone"])
@pytest.mark.parametrize("need_dx", [True, False], ids=["with dx", "without dx"])
def test_a_convolution_on_helper_processes_gives_the_bytes_of_one_thread(monkeypatch, fused, need_dx):
    monkeypatch.setattr(conv, "SAMPLES", 2)  # six blocks of images, the last one short
    one = conv_step(Workers(1), fused, need_dx)
    for processes in (2, 3):
        with Workers(processes, processes=True) as workers:
            assert workers._helpers is not None
            for _ in range(3):  # blocks go to whoever is free: each time another split
                got = conv_step(workers, fused, need_dx)
                assert sorted(got) == sorted(one)
                for name, expected in one.items():
                    assert got[name].tobytes() == expected.tobytes(), (name, processes)


def test_inference_through_helper_processes_gives_the_bytes_of_one_thread(monkeypatch):
    monkeypatch.setattr(conv, "SAMPLES", 2)
    one = conv_step(Workers(1), fused=True, need_dx=False, train=False)
    with Workers(2, processes=True) as workers:
        assert conv_step(workers, fused=True, need_dx=False, train=False)["out"].tobytes() == one["out"].tobytes()


def test_a_model_under_helper_processes_keeps_its_parameters_in_the_arena():
    settings = TrainSettings(model="cnn", conv_channels=[4, 6], hidden=[12], batch_norm=True)
    model = Model(architecture(settings, 196, 4, (14, 14)))
    model.initialize("he", np.random.default_rng(0))
    before = {name: array.copy() for name, array in model.named_arrays().items()}
    with Workers(2, processes=True) as workers:
        model.set_workers(workers)
        assert workers.arena.locate(model.flat_params) is not None
        assert workers.arena.locate(model.flat_grads) is not None
        for name, array in model.named_arrays().items():
            assert np.array_equal(array, before[name]), name
            assert np.shares_memory(array, model.flat_params) or np.shares_memory(array, model.flat_buffers), name
        logits = model.forward(np.random.default_rng(1).standard_normal((10, 196)).astype(np.float32))
    model.set_workers(Workers(1))
    again = model.forward(np.random.default_rng(1).standard_normal((10, 196)).astype(np.float32))
    assert logits.tobytes() == again.tobytes()


def test_cnn_and_relu_mlp_trainers_use_helper_processes_and_a_tanh_mlp_trainer_none():
    cnn = TrainSettings(model="cnn", conv_channels=[4], hidden=[8], batch_size=16, epochs=1)
    with Trainer(cnn, 196, 4, 64, image_shape=(14, 14), threads=2) as trainer:
        assert trainer.workers._helpers is not None and trainer.workers._helpers.processes == 1
        assert trainer.workers.arena.locate(trainer._xb) is not None
        helpers = list(trainer.workers._helpers._processes)
    assert not any(process.is_alive() for process in helpers), "closing the trainer ends them"
    # The default MLP trains by columns (nn/columns.py), its step's arrays in the arena.
    with Trainer(TrainSettings(hidden=[8], epochs=1), 196, 4, 64, threads=2) as trainer:
        assert trainer.model.column_step is not None and trainer.workers._helpers.processes == 1
        assert trainer.workers.arena.locate(trainer.model.flat_params) is not None
    with Trainer(TrainSettings(hidden=[8], epochs=1, activation="tanh"), 196, 4, 64, threads=2) as trainer:
        assert trainer.model.column_step is None
        assert trainer.workers._helpers is None and trainer.workers.arena is None


INTERRUPTED = """
import sys
import time
import numpy as np
from mnist_pipeline.nn.activations import _times_slope_block
from mnist_pipeline.nn.parallel import Workers
with Workers(int(sys.argv[1]), processes=True) as workers:
    x = workers.arena.empty(1 << 22, np.float32)
    slope, out = workers.arena.empty(x.size, np.float32), workers.arena.empty(x.size, np.float32)
    print("training", flush=True)
    while True:
        workers.run_kernel(_times_slope_block, 64, (x.size, 1 << 16), 0.0, x, slope, out)
        time.sleep(0.2)  # the helper waits for its next job: where Ctrl-C mostly finds it
"""


def process_group(pgid: int) -> list[int]:
    """The live processes of group `pgid` (from /proc: no pgrep needed)."""
    members = []
    for entry in Path("/proc").iterdir():
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] if entry.name.isdigit() else "Z"
            if state != "Z" and os.getpgid(int(entry.name)) == pgid:  # a zombie has ended
                members.append(int(entry.name))
        except (ProcessLookupError, FileNotFoundError):
            pass
    return members


def test_ctrl_c_stops_the_caller_and_its_helpers_with_the_callers_traceback_only():
    # Ctrl-C at a terminal sends SIGINT to the whole process group: helpers included.
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED, "2"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert child.stdout.readline() == "training\n"
    time.sleep(0.5)
    assert len(process_group(child.pid)) == 2, "the caller and its helper process"
    os.killpg(child.pid, signal.SIGINT)
    _, stderr = child.communicate(timeout=20)
    assert child.returncode != 0
    assert stderr.rstrip().endswith("KeyboardInterrupt")
    assert stderr.count("Traceback") == 1, stderr
    time.sleep(0.5)
    assert process_group(child.pid) == []


WAITING_IN_A_CHAIN = """
import os
import time
import numpy as np
from mnist_pipeline.nn.parallel import Workers

def long_in_caller(i, parent):
    if os.getpid() == parent:
        print("caller busy", flush=True)
        time.sleep(60)

def after(i, out):
    out[i] = 1

with Workers(2, processes=True) as workers:
    out = workers.arena.empty(4, np.float32)
    # The helper takes the quick task, then a task of `after`, which waits for the caller's.
    workers._helpers.run_chain([(long_in_caller, 2, (os.getpid(),)), (after, 4, (out,))])
"""


def test_a_helper_waiting_in_a_chain_for_its_killed_parent_ends():
    child = subprocess.Popen([sys.executable, "-c", WAITING_IN_A_CHAIN], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdout.readline() == "caller busy\n"
    time.sleep(0.5)
    assert len(process_group(child.pid)) == 2
    child.kill()
    child.communicate(timeout=20)
    deadline = time.monotonic() + 10
    while process_group(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    left = process_group(child.pid)
    for pid in left:  # not to leave a helper spinning on a core if it failed to end
        os.kill(pid, signal.SIGKILL)
    assert left == [], "the helper stopped waiting and ended"


def test_helpers_whose_parent_is_killed_end_too():
    # Two helpers: the second inherits the first one's pipe too, which must not keep it open.
    child = subprocess.Popen([sys.executable, "-c", INTERRUPTED, "3"], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert child.stdout.readline() == "training\n"
    time.sleep(0.5)
    assert len(process_group(child.pid)) == 3
    child.kill()  # SIGKILL: no close(), no atexit; the helper sees its pipe's end close
    child.communicate(timeout=20)
    deadline = time.monotonic() + 10
    while process_group(child.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_group(child.pid) == [], "the orphaned helpers ended by themselves"
