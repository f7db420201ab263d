"""run_parallel: results in order, every task ended before it returns, threads kept between
calls, and tasks that run tasks of their own never wait on each other."""

from __future__ import annotations

import threading

import pytest

from phoenixctl.engine.parallel import MAX_PER_CALL, run_parallel


def test_results_come_back_in_the_order_of_the_tasks():
    assert run_parallel([lambda n=n: n * n for n in range(100)]) == [n * n for n in range(100)]


def test_a_failure_is_raised_only_once_every_task_has_ended():
    ended = []

    def task(n: int):
        if n == 3:
            raise ValueError("three")
        ended.append(n)
        return n

    with pytest.raises(ValueError, match="three"):
        run_parallel([lambda n=n: task(n) for n in range(50)])
    assert sorted(ended) == [n for n in range(50) if n != 3]
    outcomes = run_parallel([lambda n=n: task(n) for n in range(5)], raise_first=False)
    assert isinstance(outcomes[3], ValueError) and outcomes[:3] == [0, 1, 2] and outcomes[4] == 4


def test_the_tasks_of_one_call_run_side_by_side():
    # Every task waits for all the others: it only passes when they all run at once.
    barrier = threading.Barrier(MAX_PER_CALL)
    assert run_parallel([lambda: barrier.wait(timeout=10) is not None for _ in range(MAX_PER_CALL)]) == [True] * MAX_PER_CALL


def test_threads_are_kept_between_calls():
    def who() -> int:
        return threading.get_ident()

    used = set(run_parallel([who] * 8))
    threads = threading.active_count()
    for _ in range(50):
        used |= set(run_parallel([who] * 8))
    # None started for the 50 calls: the threads kept from the first served them all.
    assert threading.active_count() <= threads and len(used) <= 8


def test_tasks_that_run_tasks_of_their_own_never_wait_on_each_other():
    # Each outer task's inner tasks meet at a barrier: they need threads of their own while
    # every outer task holds one. A pool of fixed size would wait here for ever.
    def outer() -> int:
        barrier = threading.Barrier(4)
        return sum(run_parallel([lambda: barrier.wait(timeout=10) >= 0 for _ in range(4)]))

    assert run_parallel([outer] * MAX_PER_CALL) == [4] * MAX_PER_CALL
