"""The local provider's loopback addresses: each project its own second octet of 127/8, a
counter kept in its `.phoenix/` (shared by concurrent commands through a file lock), and
every address checked free on the port by binding to it before it is handed out."""

from __future__ import annotations

import fcntl
import hashlib
import socket
import threading
from pathlib import Path

from ...errors import PhoenixError

_LOCAL = threading.Lock()  # threads of one command; the file lock covers other commands


class LoopbackPool:
    def __init__(self, workdir: Path):
        self.path = workdir / "addresses"
        # Each project gets its own second octet of 127/8, so two copies rarely meet.
        self.octet = 64 + int(hashlib.sha256(str(workdir.parent).encode()).hexdigest(), 16) % 190

    def reserve(self, port: int) -> str:
        """A loopback address nobody uses on this port."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _LOCAL, self.path.open("a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            handle.seek(0)
            text = handle.read().strip()
            counter = int(text) if text.isdigit() else 0
            try:
                for _ in range(2000):
                    counter += 1
                    n = counter % 65024 + 256  # skips 127.x.0.*
                    if n & 255 in (0, 255):
                        continue
                    address = f"127.{self.octet}.{n >> 8}.{n & 255}"
                    with socket.socket() as probe:
                        try:
                            probe.bind((address, port))
                            return address
                        except OSError:
                            continue
            finally:
                handle.seek(0)
                handle.truncate()
                handle.write(str(counter))
        raise PhoenixError(f"no free loopback address for port {port}")
