"""The worker pool: every task runs once, errors reach the caller, blocks do not depend on threads."""

import contextvars
import threading
import time

import numpy as np
import pytest

from mnist_pipeline.nn import parallel
from mnist_pipeline.nn.parallel import PARALLEL_MIN, Workers, blocks, product_block, share_cores


def test_blocks_cover_the_range_in_order_and_depend_on_the_size_alone():
    assert blocks(10, 4) == (slice(0, 4), slice(4, 8), slice(8, 10))
    assert blocks(3, 4) == (slice(0, 3),)
    assert blocks(0, 4) == (slice(0, 0),)


def test_large_products_are_split_and_small_ones_not():
    assert len(blocks(1024, product_block(128, 784, 1024))) > 1
    assert len(blocks(512, product_block(128, 10, 512))) == 1  # the output layer's input gradient


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_every_task_runs_exactly_once(threads):
    ran, who = [], set()
    with Workers(threads) as workers:
        for _ in range(20):  # many rounds, so that the helpers are reused
            workers.run(lambda i: (ran.append(i), who.add(threading.current_thread().name)), 37)
    assert sorted(ran) == sorted(list(range(37)) * 20)
    assert len(who) <= threads


def test_an_error_in_a_task_is_raised_by_run_and_the_pool_still_works():
    def task(i):
        if i == 5:
            raise ValueError("task 5 failed")

    with Workers(2) as workers:
        with pytest.raises(ValueError, match="task 5 failed"):
            workers.run(task, 10)
        done = []
        workers.run(done.append, 4)
        assert sorted(done) == [0, 1, 2, 3]


def test_a_closed_pool_runs_tasks_in_the_caller():
    workers = Workers(3)
    workers.close()
    names = set()
    workers.run(lambda i: names.add(threading.current_thread().name), 6)
    assert names == {threading.current_thread().name}


def test_small_element_wise_work_stays_in_the_caller_and_large_work_spreads():
    def names_running(elements):
        names, started = set(), threading.Barrier(2, timeout=5)

        def task(i):
            names.add(threading.current_thread().name)
            if elements >= PARALLEL_MIN:
                started.wait()  # both threads must be inside a task at once: proves the spread

        with Workers(2) as workers:
            workers.run(task, 2, elements)
        return names

    assert names_running(PARALLEL_MIN - 1) == {threading.current_thread().name}
    assert len(names_running(PARALLEL_MIN)) == 2


def test_zero_threads_are_refused():
    with pytest.raises(ValueError, match="threads 0"):
        Workers(0)


@pytest.mark.parametrize(
    "cores,jobs,expected",
    [(4, 1, [4]), (4, 2, [2, 2]), (4, 3, [2, 1, 1]), (2, 4, [1, 1, 1, 1]), (1, 1, [1])],
)
def test_cores_are_shared_out_evenly_and_never_twice(cores, jobs, expected):
    assert [share_cores(cores, jobs, index) for index in range(jobs)] == expected


def test_tasks_run_under_the_callers_numpy_error_settings():
    helper_runs = []  # for each task a helper thread ran: did the overflow raise?

    def overflow(i):
        if threading.current_thread() is threading.main_thread():
            time.sleep(0.001)  # leave tasks to the helper
            return
        try:
            np.multiply(np.float32(3e38), np.float32(10))
            helper_runs.append(False)
        except FloatingPointError:
            helper_runs.append(True)

    with Workers(2) as workers, np.errstate(over="raise"):
        workers.run(overflow, 8)
    assert helper_runs and all(helper_runs)


def test_run_does_not_wait_for_a_helper_that_took_no_task():
    # A helper busy elsewhere (as when the scheduler has not woken it on a shared machine):
    # the caller runs every task itself and returns without waiting for the helper to wake.
    release = threading.Event()

    class Stuck:
        def work(self):
            release.wait()

    ran = []
    with Workers(2) as workers:
        workers._inboxes[0].put((contextvars.copy_context(), Stuck()))
        caller = threading.Thread(target=workers.run, args=(ran.append, 5), daemon=True)
        caller.start()
        caller.join(timeout=10)
        returned = not caller.is_alive()
        release.set()
        assert returned, "run() waited for the helper that took no task"
        # The helper, woken at last, finds the job done and takes nothing from it.
        workers.run(ran.append, 3)
    assert sorted(ran) == [0, 0, 1, 1, 2, 2, 3, 4]


def test_products_are_split_into_an_even_number_of_equal_blocks_each_worth_a_hand_off():
    # Two threads then get the same work: 784 input features as 4 x 196, not 3 x 256 + 16.
    for rows, depth, width in [(128, 1024, 784), (128, 784, 1024), (128, 1024, 512), (128, 256, 3136)]:
        sizes = [s.stop - s.start for s in blocks(width, product_block(rows, depth, width))]
        assert len(sizes) % 2 == 0 and max(sizes) - min(sizes) < len(sizes), (width, sizes)
        assert min(sizes) * rows * depth >= parallel.MIN_PRODUCT, (width, sizes)
    # The CNN's dense backward: 3136 columns as 6 blocks of 17M multiply-adds, not 14 of 7M.
    assert len(blocks(3136, product_block(128, 256, 3136))) == 6
    # The products of the SGD MLP (784-256-128-10) are too small to share between threads.
    for rows, depth, width in [(128, 784, 256), (128, 256, 784), (128, 256, 128), (128, 128, 256)]:
        assert len(blocks(width, product_block(rows, depth, width))) == 1
    assert len(blocks(10, product_block(128, 512, 10))) == 1  # the 10-class output layer


def test_submitted_tasks_run_once_while_the_caller_goes_on_and_wait_raises_their_error():
    ran = []
    with Workers(2) as workers:
        job = workers.submit(ran.append, 9)
        other = []
        workers.run(other.append, 4)  # the caller's own work meanwhile
        workers.wait(job)
        assert sorted(ran) == list(range(9)) and sorted(other) == [0, 1, 2, 3]

        def fail(i):
            if i == 2:
                raise ValueError("task 2 failed")

        job = workers.submit(fail, 5)
        with pytest.raises(ValueError, match="task 2 failed"):
            workers.wait(job)
    # One thread: nothing runs before wait().
    alone, ran = Workers(1), []
    job = alone.submit(ran.append, 3)
    assert ran == []
    alone.wait(job)
    assert ran == [0, 1, 2]


def test_shared_seconds_count_only_work_that_can_spread():
    workers = Workers(1)
    workers.measure()
    workers.run(lambda i: time.sleep(0.01), 2)  # two blocks: could run on two threads
    workers.run(lambda i: time.sleep(0.01), 1)  # one block: one thread's work
    workers.run(lambda i: time.sleep(0.01), 2, elements=PARALLEL_MIN - 1)  # too small to spread
    assert 0.02 <= workers.shared_seconds < 0.03
    workers.measure(False)
    assert workers.shared_seconds == 0


def test_submitted_jobs_are_dealt_to_the_helpers_in_turn_and_a_lone_task_waits_for_the_caller():
    names, ran, go = [], threading.Semaphore(0), threading.Event()

    def task(i):
        names.append(threading.current_thread().name)
        ran.release()
        go.wait(timeout=10)  # each helper holds its first task until both have one

    with Workers(3) as workers:
        jobs = [workers.submit(task, 2) for _ in range(2)]  # two tasks: one helper for each job
        assert ran.acquire(timeout=10) and ran.acquire(timeout=10)  # the caller has not waited yet
        assert sorted(names) == ["nn-worker-1", "nn-worker-2"], "the jobs went to different helpers"
        go.set()
        for job in jobs:
            workers.wait(job)
        names.clear()
        lone = workers.submit(task, 1)
        time.sleep(0.2)
        assert names == [], "a lone task is not handed over"
        workers.wait(lone)
    assert names == ["MainThread"]
