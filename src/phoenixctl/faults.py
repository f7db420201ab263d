"""Failpoints: named places where a test can have the `phoenix` process killed outright.

`PHOENIX_FAILPOINT=swap` (or `swap:2` for the second time the point is reached) makes the
process SIGKILL itself there, as a CI runner killed mid-deploy would be. Nothing happens
when the variable is unset. The crash-safety tests walk every point of a rotation."""

from __future__ import annotations

import os
import signal
import threading

_hits: dict[str, int] = {}
_lock = threading.Lock()


def failpoint(name: str) -> None:
    wanted = os.environ.get("PHOENIX_FAILPOINT")
    if not wanted:
        return
    point, _, nth = wanted.partition(":")
    if point != name:
        return
    with _lock:
        _hits[name] = _hits.get(name, 0) + 1
        if _hits[name] == int(nth or 1):
            os.kill(os.getpid(), signal.SIGKILL)
