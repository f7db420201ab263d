"""Keeping an environment phoenix over time: the `watch` loop and `chaos`.

`watch` plans every interval and replaces what needs replacing — outdated, older than
max_age, drifted — oldest first within the rotation limits and a budget of replacements
per hour; dead and unhealthy servers are replaced at once (self-healing); with
`backup.every`, a pass also takes a backup when the newest is older than that. Each pass is an
ordinary operation: it takes the environment's lock, is journaled, and a SIGTERM lets the
pass under way finish before the loop stops.

`chaos` terminates random in-service servers the way a failing machine would, under load,
and measures how long the environment takes to serve its full count again."""

from __future__ import annotations

import random
import signal
import threading
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from ..errors import PhoenixError
from .commands import Executor
from .disaster import DisasterRecovery
from .operation import Reporter
from .project import Project
from .report_types import ChaosReport, Coverage, ServerStatus
from ..lock import LockHeld


class LogReporter(Reporter):
    """Decisions as timestamped lines."""

    def __init__(self, env: str, write: Callable[[str], None]):
        self.env = env
        self.write = write

    def info(self, message: str) -> None:
        self.write(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} {self.env}: {message}")


class Watcher:
    def __init__(
        self, spec_path: Path | None, env: str, write: Callable[[str], None], interval: float | None = None,
        budget: int | None = None, discard_state: bool = False,
    ):
        self.spec_path = spec_path
        self.discard_state = discard_state
        self.env = env
        self.write = write
        self.interval = interval
        self.budget = budget
        self.stop = threading.Event()
        self.passes = 0
        self._replaced: deque[float] = deque()  # when planned replacements happened (budget window)

    def run(self, passes: int | None = None) -> None:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda *_: self._stopping())
        while not self.stop.is_set():
            started = time.monotonic()
            interval = self._pass()
            self.passes += 1
            if passes is not None and self.passes >= passes:
                break
            self.stop.wait(max(0.0, interval - (time.monotonic() - started)))
        self._log(f"watch stopped after {self.passes} pass(es)")

    def shortfall(self) -> dict[str, Coverage]:
        """Roles serving fewer servers than wanted, as (serving, wanted): how the watch ends."""
        project = Project(self.spec_path)
        try:
            return Executor(project).shortfall(self.env)
        finally:
            project.close()

    def _stopping(self) -> None:
        if not self.stop.is_set():
            self._log("stopping after the pass under way")
        self.stop.set()

    def _pass(self) -> float:
        """One pass; whatever goes wrong is logged in one line and the loop goes on."""
        try:
            return self._reconcile_once()
        except Exception as exc:  # noqa: BLE001 - a watch loop outlives any single failure
            self._log(f"pass failed: {exc}")
            return self.interval or 30.0

    def _log(self, message: str) -> None:
        self.write(f"{datetime.now(timezone.utc):%Y-%m-%dT%H:%M:%SZ} {self.env}: {message}")

    def _reconcile_once(self) -> float:
        project = Project(self.spec_path)  # read again every pass: the spec may have changed
        try:
            spec = project.spec
            project.loaded.environment(self.env)
            settings = spec.environments[self.env].watch
            interval = self.interval or settings.interval
            per_hour = settings.max_replacements_per_hour if self.budget is None else self.budget
            now = time.monotonic()
            while self._replaced and now - self._replaced[0] > 3600:
                self._replaced.popleft()
            budget = max(0, per_hour - len(self._replaced))
            executor = Executor(project, LogReporter(self.env, self.write), lock_timeout=min(interval, 30.0), discard_state=self.discard_state)
            try:
                result = executor.reconcile(self.env, budget)
            except LockHeld as exc:
                self._log(f"pass skipped: {exc}")
                return interval
            for _ in result.retired:
                self._replaced.append(time.monotonic())
            if result.changed:
                self._log(f"pass done: {result.summary()}")
            self._back_up_when_due(executor)
            return interval
        finally:
            project.close()


    def _back_up_when_due(self, executor: Executor) -> None:
        """`backup.every`: a backup when the newest is older than that (or there is none)."""
        recovery = DisasterRecovery(executor)
        if not recovery.backup_due(self.env):
            return
        try:
            info = recovery.backup(self.env)
        except (PhoenixError, OSError) as exc:  # the loop goes on; the next pass tries again
            self._log(f"backup failed: {exc}")
            return
        self._log(f"backup {info.id} taken: {len(info.files)} files, {info.size} bytes")


def pick_victims(candidates: list[ServerStatus], kill: int, allow_outage: bool, rng: random.Random) -> list[ServerStatus]:
    """`kill` random servers; unless outages are allowed, each role keeps one serving."""
    pool = list(candidates)
    rng.shuffle(pool)
    if allow_outage:
        return pool[:kill]
    victims, left = [], {}
    for server in pool:
        left[server.role] = left.get(server.role, 0) + 1
    for server in pool:
        if len(victims) < kill and left[server.role] > 1:
            victims.append(server)
            left[server.role] -= 1
    return victims


def chaos(
    spec_path: Path | None, env: str, kill: int, role: str | None, heal: bool, timeout: float, rate: float, reporter: Reporter,
    allow_outage: bool = False, seed: int | None = None,
) -> ChaosReport:
    """Kill `kill` random in-service servers under load; wait for the full count again."""
    from ..load import LoadGenerator, NoLoad  # here: the reconcile loop sends no load, so `phoenix watch` never loads aiohttp

    project = Project(spec_path)
    try:
        executor = Executor(project, reporter)
        project.loaded.environment(env)
        if role:
            executor.check_env_role(env, role)
        status = executor.reports.status(env)
        candidates = [s for s in status.servers if s.in_service and (role is None or s.role == role)]
        victims = pick_victims(candidates, kill, allow_outage, random.Random(seed))
        if len(victims) < kill:
            raise PhoenixError(
                f"cannot kill {kill} in-service server(s) in {env}{f' ({role})' if role else ''} and keep one per role "
                "serving (pass --allow-outage to kill the last ones too)"
            )
        desired = {name: r.count for name, r in project.spec.environments[env].roles.items()}
        urls = [f"http://{lb.address}{project.spec.roles[lb.role].health.path}" for lb in status.load_balancers]
        if not executor.compute.reaches_servers:
            reporter.info(f"chaos: no load sent: {executor.compute.unreachable}")
        load_generator = LoadGenerator(urls, concurrency=8, rate=rate, max_seconds=timeout + 30) if executor.compute.reaches_servers else NoLoad()
        with load_generator as load:
            load.wait_for_requests(int(rate / 2))
            killed_at = time.monotonic()
            for victim in victims:
                row = project.store.server(victim.id)
                executor.compute.terminate(row.handle_data)
                reporter.info(f"chaos: terminated {victim.id} ({victim.role}, {executor.compute.label(row.handle_data)})")
            if heal:
                Executor(project, reporter, lock_timeout=timeout).reconcile(env, budget=0)
            expires = killed_at + timeout
            while True:
                current = executor.reports.status(env).servers
                counts = {name: sum(1 for s in current if s.role == name and s.in_service) for name in desired}
                if counts == desired and not {v.id for v in victims} & {s.id for s in current if s.in_service}:
                    break
                if time.monotonic() > expires:
                    raise PhoenixError(f"the environment did not serve its full count again within {timeout:g}s (is `phoenix watch {env}` running?)")
                time.sleep(0.1)
            seconds = time.monotonic() - killed_at
            load.wait_for_requests(load.stats.sent + int(rate / 4))
        return ChaosReport(
            environment=env,
            killed=tuple(v.id for v in victims),
            seconds_to_full_count=round(seconds, 2),
            requests=load.stats.sent,
            failed=load.stats.failed,
            errors=dict(load.stats.errors),
        )
    finally:
        project.close()
