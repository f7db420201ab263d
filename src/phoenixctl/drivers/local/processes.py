"""The local provider's server processes: alive only when their identity (pid and start
time) is the one recorded; signalled, as a process group, only when that identity is
proven; found again by their working directory. A part of LocalCompute."""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path

import psutil

from ...deadline import Deadline, DeadlineExceeded
from ..base import owned_path


class LocalProcesses:
    """Whether a server's process lives, stopping it, finding it (mixed into LocalCompute)."""

    servers_dir: Path
    logs_dir: Path
    _children: dict

    def is_alive(self, handle: dict) -> bool:
        """True while the server's process is the one we started and not a zombie."""
        pid = handle.get("pid")
        if not pid:
            return False
        child = self._children.get(pid)
        if child is not None:
            # Our own child: its pid cannot be recycled before we reap it, and waitpid is cheap.
            return child.poll() is None
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - handle.get("started", 0)) > 0.05:
                return False  # the pid was recycled by another process
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        recorded = handle.get("dir") or handle.get("root")
        tree = owned_path(self.workdir, recorded, "server directory") if recorded else None  # checked before any signal
        self.stop(handle, deadline)
        if tree is not None:  # a launch that failed before it was recorded left nothing here
            shutil.rmtree(tree, ignore_errors=True)

    def stop(self, handle: dict, deadline: Deadline) -> None:
        """End the server's process group (gracefully, then by force at the deadline); its
        files stay (an in-place update starts it again)."""
        if handle.get("pid") and self._group_alive(handle["pid"], handle):  # the leader, or children it left
            pgid = handle["pid"]
            self._signal_group(pgid, signal.SIGTERM)
            try:
                deadline.poll(lambda: not self._group_alive(pgid, handle), interval=0.02, max_interval=0.2)
            except DeadlineExceeded:
                self._signal_group(pgid, signal.SIGKILL)
                Deadline(5, f"server process {pgid} to die after SIGKILL").poll(
                    lambda: not self._group_alive(pgid, handle), interval=0.02
                )
        child = self._children.pop(handle.get("pid"), None)
        if child is not None:
            child.wait(timeout=5)

    def terminate(self, handle: dict) -> None:
        if handle.get("pid") and self._group_alive(handle["pid"], handle):
            self._signal_group(handle["pid"], signal.SIGKILL)
            child = self._children.get(handle["pid"])
            if child is not None:
                child.wait(timeout=5)

    def _group_alive(self, pgid: int, handle: dict) -> bool:
        """Is anything left of the server's own process group (children it forked included)?

        The group is ours only when its identity is proven: its leader is the process we
        started (pid and start time), or the leader is gone and what is left in its group
        started after it (the kernel never hands out a pid still used as a group id, so
        orphans of our leader keep the id ours). A leader pid alive with another start time
        means the pid was recycled: our group is gone, and the other one is not ours."""
        if self.is_alive(handle):
            return True
        started = handle.get("started") or 0.0
        if not started:
            return False  # no recorded identity: nothing can be proven ours
        try:
            if abs(psutil.Process(pgid).create_time() - started) > 0.05:
                return False  # pid recycled by another process: our group is gone, that one is not ours
        except psutil.NoSuchProcess:
            pass  # the leader is gone (a leader still a zombie has our start time: its group is scanned)
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        # Something is left: maybe only zombies waiting for init to reap them.
        for process in psutil.process_iter(["pid", "status", "create_time"]):
            try:
                if (
                    os.getpgid(process.pid) == pgid
                    and process.info["status"] != psutil.STATUS_ZOMBIE
                    and process.info["create_time"] >= started - 0.05
                ):
                    return True
            except (ProcessLookupError, psutil.Error):
                continue
        return False

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    def teardown(self, env: str, deadline: Deadline) -> list[str]:
        """After the environment's last server was destroyed: server folders no record held (a
        launch killed with its command can finish copying a root after recovery removed it),
        unless a process still runs there; then whatever the other parts tear down."""
        running = self.discover(env)
        env_dir = self.servers_dir / env
        removed = []
        for leftover in sorted(env_dir.iterdir()) if env_dir.is_dir() else []:
            if leftover.name not in running:
                shutil.rmtree(owned_path(self.workdir, str(leftover), "server directory"), ignore_errors=True)
                removed.append(f"the folder of {leftover.name}, which no record held")
        return removed + super().teardown(env, deadline)

    def discover(self, env: str) -> dict[str, dict]:
        """Server processes found by their working directory, `servers/<env>/<id>/root`."""
        base = (self.servers_dir / env).resolve()
        found: dict[str, dict] = {}
        for process in psutil.process_iter(["pid", "cwd", "create_time", "status"]):
            cwd = process.info.get("cwd")
            if not cwd or process.info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            path = Path(cwd)
            if path.name != "root" or path.parent.parent != base:
                continue
            server_id = path.parent.name
            pid = process.info["pid"]
            if server_id in found and found[server_id]["pid"] < pid:
                continue  # keep the group leader (the first process), not a child it forked
            found[server_id] = {
                "pid": pid,
                "started": process.info["create_time"],
                "root": str(path),
                "dir": str(path.parent),
                "log": str(self.logs_dir / env / "unknown" / f"{server_id}.log"),
            }
        return found
