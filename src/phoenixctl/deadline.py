"""Every wait in Phoenix has a deadline: poll a condition until it holds or time runs out."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from .errors import PhoenixError

T = TypeVar("T")


class DeadlineExceeded(PhoenixError, TimeoutError):
    """A wait ran out of time: an expected failure, reported in one line like the others."""


class Deadline:
    def __init__(self, seconds: float, what: str):
        self.seconds = seconds
        self.what = what
        self.expires = time.monotonic() + seconds

    def remaining(self) -> float:
        return max(0.0, self.expires - time.monotonic())

    def expired(self) -> bool:
        return time.monotonic() >= self.expires

    def poll(self, check: Callable[[], T | None], interval: float = 0.05, max_interval: float = 0.5) -> T:
        """Call `check` until it returns a truthy value; back off gently between calls.

        Raises DeadlineExceeded naming what was awaited. `check` may raise to abort early."""
        delay = interval
        while True:
            result = check()
            if result:
                return result
            if self.expired():
                raise DeadlineExceeded(f"{self.what}: not done after {self.seconds:g}s")
            time.sleep(min(delay, self.remaining()) or 0)
            delay = min(delay * 1.5, max_interval)
