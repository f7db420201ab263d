"""Steady HTTP load through the load balancers, bounded in requests and in time.

Used by `phoenix demo`, the integration tests and the benchmarks to prove that a rotation
drops no request. Each worker holds one keep-alive connection, like a browser would."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import aiohttp


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    errors: Counter = field(default_factory=Counter)  # "HTTP 503", "ClientConnectorError", ...
    versions: Counter = field(default_factory=Counter)  # X-Version of the answers
    samples: list[tuple[float, float, str]] = field(default_factory=list)  # (monotonic time sent, latency s, X-Version)
    seconds: float = 0.0

    @property
    def latencies(self) -> list[float]:
        return [latency for _, latency, _ in self.samples]

    def percentile(self, p: float, start: float = float("-inf"), end: float = float("inf")) -> float:
        """The p-th percentile latency of the requests sent between `start` and `end`."""
        ordered = sorted(latency for sent, latency, _ in self.samples if start <= sent < end)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]

    def count(self, start: float = float("-inf"), end: float = float("inf")) -> int:
        return sum(1 for sent, _, _ in self.samples if start <= sent < end)

    def last_answer_from(self, version: str, since: float) -> float | None:
        """When the last answer by `version` arrived among requests sent after `since`."""
        times = [sent + latency for sent, latency, answered in self.samples if answered == version and sent >= since]
        return max(times, default=None)

    def as_dict(self) -> dict:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "errors": dict(self.errors),
            "versions": dict(self.versions),
            "seconds": round(self.seconds, 2),
            "p50_ms": round(self.percentile(50) * 1000, 1),
            "p95_ms": round(self.percentile(95) * 1000, 1),
            "p99_ms": round(self.percentile(99) * 1000, 1),
        }


class NoLoad:
    """Stands in for a load generator where the balancers cannot be reached from here (an
    emulator's addresses): nothing is sent, and the report says 0 requests."""

    def __init__(self) -> None:
        self.stats = LoadStats()

    def __enter__(self) -> "NoLoad":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        pass


class LoadGenerator:
    """Sends GETs to `urls` in turn from `concurrency` keep-alive connections at about
    `rate` requests per second in all, until stopped, `max_requests` or `max_seconds`."""

    def __init__(self, urls: list[str], concurrency: int = 8, rate: float = 200.0, max_requests: int = 500_000, max_seconds: float = 600.0, timeout: float = 10.0):
        self.urls = urls
        self.concurrency = concurrency
        self.rate = rate
        self.max_requests = max_requests
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.stats = LoadStats()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "LoadGenerator":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), name="phoenix-load", daemon=True)
        self._thread.start()

    def stop(self) -> LoadStats:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=self.timeout + 5)
        return self.stats

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        """Block until at least `count` requests were answered (or raise at the deadline)."""
        expires = time.monotonic() + timeout
        while self.stats.ok + self.stats.failed < count:
            if time.monotonic() > expires or (self._thread and not self._thread.is_alive()):
                raise TimeoutError(f"load generator answered {self.stats.ok + self.stats.failed} of {count} requests")
            time.sleep(0.02)

    async def _run(self) -> None:
        started = time.monotonic()
        await asyncio.gather(*(self._worker(index, started) for index in range(self.concurrency)))
        self.stats.seconds = time.monotonic() - started

    async def _worker(self, index: int, started: float) -> None:
        interval = self.concurrency / self.rate if self.rate > 0 else 0.0
        connector = aiohttp.TCPConnector(limit=1, force_close=False)
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            next_at = time.monotonic() + interval * index / self.concurrency
            turn = index
            while not self._stop.is_set() and self.stats.sent < self.max_requests and time.monotonic() - started < self.max_seconds:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                next_at = max(next_at + interval, time.monotonic() - 1.0)
                url = self.urls[turn % len(self.urls)]
                turn += self.concurrency  # workers interleave: together they walk the list in order
                self.stats.sent += 1
                begun = time.monotonic()
                try:
                    async with session.get(url) as response:
                        await response.read()
                        status = response.status
                        version = response.headers.get("X-Version", "")
                except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                    self.stats.failed += 1
                    self.stats.errors[type(exc).__name__] += 1
                    continue
                self.stats.samples.append((begun, time.monotonic() - begun, version))
                if 200 <= status < 400:
                    self.stats.ok += 1
                    self.stats.versions[version] += 1
                else:
                    self.stats.failed += 1
                    self.stats.errors[f"HTTP {status}"] += 1


def _load_process_main(urls, options, stop, answered, results) -> None:
    generator = LoadGenerator(urls, **options)
    generator.start()
    while not stop.wait(0.02) and generator._thread.is_alive():
        answered.value = generator.stats.ok + generator.stats.failed
    stats = generator.stop()
    answered.value = stats.ok + stats.failed
    results.put(stats)


class LoadProcess:
    """The same load from a second process, so the client never competes with the
    process it measures for Python's GIL (the benchmarks use this)."""

    def __init__(self, urls: list[str], **options):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._stop = context.Event()
        self._answered = context.Value("q", 0)
        self._results = context.Queue()
        self._process = context.Process(
            target=_load_process_main, args=(urls, options, self._stop, self._answered, self._results), daemon=True
        )
        self.stats = LoadStats()

    def __enter__(self) -> "LoadProcess":
        self._process.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def answered(self) -> int:
        return self._answered.value

    def wait_for_requests(self, count: int, timeout: float = 30.0) -> None:
        expires = time.monotonic() + timeout
        while self.answered < count:
            if time.monotonic() > expires or not self._process.is_alive():
                raise TimeoutError(f"load process answered {self.answered} of {count} requests")
            time.sleep(0.02)

    def stop(self) -> LoadStats:
        if self._process.is_alive() or not self._stop.is_set():
            self._stop.set()
            try:
                self.stats = self._results.get(timeout=30)
            finally:
                self._process.join(timeout=10)
                if self._process.is_alive():
                    self._process.kill()
        return self.stats
