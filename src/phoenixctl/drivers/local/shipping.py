"""Local servers' output shipped to the project's aggregator: registered before a server
writes its first line, measured when it is retired, and the aggregator stopped when the
project's last server is gone (its records stay). A part of LocalCompute."""

from __future__ import annotations

import os
from pathlib import Path

from ...deadline import Deadline
from ...errors import PhoenixError
from ..base import LaunchRequest, LogDelivery
from .aggregator import Aggregator


class LocalShipping:
    """What LocalCompute does for the aggregator (mixed into it)."""

    logs_dir: Path
    servers_dir: Path
    workdir: Path

    @property
    def aggregator(self) -> Aggregator:
        return Aggregator(self.logs_dir)

    def aggregator_report(self) -> dict:
        """`phoenix doctor`: whether servers' output can be shipped, and where it is."""
        if not Aggregator.installed():
            return {"capability": "log aggregator", "ok": False, "detail": "rsyslogd is not installed (make setup): output stays in each server's file"}
        address = self.aggregator.address() if self.aggregator.running_pid() else None
        where = f"running, listening on {address[0]}:{address[1]}" if address else "starts with the first server"
        return {"capability": "log aggregator", "ok": True, "detail": f"rsyslogd, the project's own ({where})"}

    def ship(self, request: LaunchRequest, log) -> None:
        """Before the server's log gets a line: its release and its environment's route known
        to the aggregator. Where that fails the server still starts; its output stays in its
        file (and is read from the start once the aggregator runs again), as its log says."""
        if not request.logs.enabled:
            self.aggregator.unroute(request.env)  # its servers' files no longer read
            return
        if not Aggregator.installed():
            log.write(b"phoenix: rsyslogd is not installed (make setup): this output stays in this file\n")
            return
        try:
            self.aggregator.register(request.env, request.server_id, request.tags.get("release", ""), request.logs.ship_to)
        except (PhoenixError, OSError) as exc:
            log.write(f"phoenix: the log aggregator did not take this server: {exc}\n".encode())

    def log_delivery(self, handle: dict) -> LogDelivery | None:
        aggregator = self.aggregator
        path = Path(handle.get("log") or "")
        routes = aggregator.read_routes()
        env, role = path.parent.parent.name, path.parent.name
        if not handle.get("log") or env not in routes:
            return None  # its environment never shipped (logs.enabled off, or before the aggregator): nothing to wait for
        try:
            with path.open("rb") as own:
                if routes[env]:  # forwarded: what imfile read of the file is what left
                    own.seek(min(aggregator.shipped(path) or 0, os.fstat(own.fileno()).st_size))
                    pending = own.read().count(b"\n")
                else:  # recorded here: one record per line
                    written = sum(chunk.count(b"\n") for chunk in iter(lambda: own.read(1 << 20), b""))
                    pending = max(0, written - aggregator.recorded_lines(env, role, path.stem))
        except OSError:
            return None  # no file where the handle says (a server adopted by recovery)
        relative = path.relative_to(self.workdir.parent) if path.is_relative_to(self.workdir.parent) else path
        reason = "" if aggregator.running_pid() else "the log aggregator is not running"
        return LogDelivery(where=str(relative), pending_lines=pending, reason=reason)

    def teardown(self, env: str, deadline: Deadline) -> list[str]:
        """The aggregator stops with the project's last server (`phoenix logs` reads its files)."""
        if any(self.servers_dir.glob("*/*/root")) or not self.aggregator.stop(deadline):
            return []
        return ["the log aggregator (no server left; its records stay for `phoenix logs`)"]
