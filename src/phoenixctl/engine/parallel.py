"""Tasks side by side on threads kept between calls.

A rotation runs three short tasks per server (launch and gates, swap in, retire), each on a
thread. Starting a thread costs about 0.1 ms of CPU, as much as many of those tasks, so the
threads are kept: an idle one waits for the next task and ends after `IDLE_SECONDS`. A call
never waits for a free thread (a busy cache grows), so a task may itself run tasks side by
side without any risk of the two waiting on each other."""

from __future__ import annotations

import queue
import threading
from typing import Callable

MAX_PER_CALL = 32  # threads one call uses at most; its other tasks wait for one of them
IDLE_SECONDS = 5.0

_idle: list[_Worker] = []
_idle_lock = threading.Lock()


class _Worker:
    """Runs one job at a time. A job returns what to do once its thread is idle again (the
    last runner of a call says the call is over only then, so the next call finds the
    thread free instead of starting another)."""

    def __init__(self) -> None:
        self.inbox: queue.SimpleQueue[Callable[[], Callable[[], None] | None]] = queue.SimpleQueue()
        # A daemon thread: one is only ever idle when the interpreter exits (a call waits
        # for its tasks), and an idle thread must not hold the exit up for IDLE_SECONDS.
        threading.Thread(target=self._serve, name="phoenix-worker", daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                job = self.inbox.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with _idle_lock:
                    if self in _idle:  # still idle: end; otherwise a job was just handed over
                        _idle.remove(self)
                        return
                continue
            then = job()
            with _idle_lock:
                _idle.append(self)
            if then is not None:
                then()


def _hand(job: Callable[[], Callable[[], None] | None]) -> None:
    with _idle_lock:
        worker = _idle.pop() if _idle else None
    (worker or _Worker()).inbox.put(job)


def run_parallel(tasks: list[Callable], raise_first: bool = True) -> list:
    """Run tasks in threads; return results in order (or exceptions, with raise_first=False).
    Like leaving a `ThreadPoolExecutor` block, it returns only once every task has ended,
    even when the waiting thread is interrupted."""
    if not tasks:
        return []
    outcomes: list = [None] * len(tasks)
    indexes = iter(range(len(tasks)))
    runners = running = min(MAX_PER_CALL, len(tasks))
    lock, finished = threading.Lock(), threading.Event()

    def runner() -> Callable[[], None] | None:
        nonlocal running
        while True:
            with lock:
                index = next(indexes, None)
                if index is None:
                    running -= 1
                    return finished.set if running == 0 else None
            try:
                outcomes[index] = tasks[index]()
            except BaseException as exc:  # noqa: BLE001 - handed back to the caller
                outcomes[index] = exc

    for _ in range(runners):
        _hand(runner)
    interrupted: BaseException | None = None
    while not finished.is_set():
        try:
            finished.wait()
        except BaseException as exc:  # noqa: BLE001 - the tasks end first, then it goes on
            interrupted = interrupted or exc
    if interrupted is not None:
        raise interrupted
    for outcome in outcomes:
        if isinstance(outcome, BaseException) and (raise_first or not isinstance(outcome, Exception)):
            raise outcome  # an interrupt in a task is never handed back as a result
    return outcomes
