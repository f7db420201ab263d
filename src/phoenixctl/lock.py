"""One operation per environment at a time: an advisory file lock that names its holder."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import datetime, timezone
from pathlib import Path

from .errors import PhoenixError


class LockHeld(PhoenixError):
    exit_code = 3


class EnvironmentLock:
    """`flock` dies with its holder, so a crashed command never leaves a stale lock."""

    def __init__(self, workdir: Path, env: str, operation: str, timeout: float = 0.0):
        self.path = workdir / "locks" / f"{env}.lock"
        self.env, self.operation, self.timeout = env, operation, timeout
        self._file = None
        self.previous_holder: str | None = None

    def __enter__(self) -> "EnvironmentLock":
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        handle = self.path.open("a+", encoding="utf-8", errors="replace")  # whatever it holds, it is read
        expires = time.monotonic() + self.timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= expires:
                    handle.seek(0)
                    holder = self._describe(handle.read(4096))
                    handle.close()
                    raise LockHeld(f"environment {self.env} is locked by {holder}") from None
                time.sleep(0.1)
        handle.seek(0)
        left = handle.read(4096).strip()
        # A holder that released the lock cleanly left the file empty: text means it died holding it.
        self.previous_holder = self._describe(left) if left else None
        handle.seek(0)
        handle.truncate()
        since = datetime.now(timezone.utc).isoformat(timespec="seconds")
        handle.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "operation": self.operation, "since": since}))
        handle.flush()
        self._file = handle
        return self

    def _describe(self, text: str) -> str:
        """Who holds (or held) the lock, from the record its holder wrote; a file holding
        anything else is named, never trusted."""
        try:
            holder = json.loads(text)
            if isinstance(holder, dict):
                return f"{holder['operation']} (host {holder['host']}, pid {holder['pid']}, since {holder['since']})"
        except (ValueError, KeyError):
            pass
        return f"another phoenix command ({self.path} holds no holder record)"

    def __exit__(self, *exc) -> None:
        if self._file:
            self._file.truncate(0)
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
