"""One operation per environment at a time: a lock that names its holder.

Two kinds behind one small interface (`Lock`): a file lock (`flock`) beside a SQLite store,
and PostgreSQL's session-level advisory lock on a shared store (`pg_lock.py`). Both die with
their holder (the kernel closes the file; the server ends the session of a dead client), so
a crashed command never leaves a stale lock, and both leave the holder's record behind when
it dies holding it: the next holder reads it (`previous_holder`) and recovers its journal."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Protocol

from .errors import PhoenixError


class LockHeld(PhoenixError):
    exit_code = 3


class Lock(Protocol):
    """Held for one operation on one environment (`with lock:`)."""

    env: str
    operation: str
    previous_holder: str | None  # who died holding it, when someone did

    def __enter__(self) -> "Lock": ...

    def __exit__(self, *exc) -> None: ...


def holder_record(operation: str) -> dict:
    """Who is taking the lock: host, pid, operation, since (UTC, to the second)."""
    since = datetime.now(timezone.utc).isoformat(timespec="seconds")
    return {"host": socket.gethostname(), "pid": os.getpid(), "operation": operation, "since": since}


def describe_holder(holder: dict) -> str:
    return f"{holder['operation']} (host {holder['host']}, pid {holder['pid']}, since {holder['since']})"


def acquire(env: str, timeout: float, try_once: Callable[[], bool], holder: Callable[[], str]) -> None:
    """`try_once` until it takes the lock, for `timeout` seconds at most; then exit 3 naming
    the holder."""
    expires = time.monotonic() + timeout
    while not try_once():
        if time.monotonic() >= expires:
            raise LockHeld(f"environment {env} is locked by {holder()}")
        time.sleep(0.1)


class EnvironmentLock:
    """The file lock: `.phoenix/locks/<env>.lock` holds the holder's record while held."""

    def __init__(self, workdir: Path, env: str, operation: str, timeout: float = 0.0):
        self.path = workdir / "locks" / f"{env}.lock"
        self.env, self.operation, self.timeout = env, operation, timeout
        self._file = None
        self.previous_holder: str | None = None

    def __enter__(self) -> "EnvironmentLock":
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8", errors="replace")  # whatever it holds, it is read

        def try_once() -> bool:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return True
            except BlockingIOError:
                return False

        def holder() -> str:
            handle.seek(0)
            return self._describe(handle.read(4096))

        try:
            acquire(self.env, self.timeout, try_once, holder)
        except LockHeld:
            handle.close()
            raise
        handle.seek(0)
        left = handle.read(4096).strip()
        # A holder that released the lock cleanly left the file empty: text means it died holding it.
        self.previous_holder = self._describe(left) if left else None
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_record(self.operation)))
        handle.flush()
        self._file = handle
        return self

    def _describe(self, text: str) -> str:
        """Who holds (or held) the lock, from the record its holder wrote; a file holding
        anything else is named, never trusted."""
        try:
            holder = json.loads(text)
            if isinstance(holder, dict):
                return describe_holder(holder)
        except (ValueError, KeyError):
            pass
        return f"another phoenix command ({self.path} holds no holder record)"

    def __exit__(self, *exc) -> None:
        if self._file:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
