"""What the dashboard's pages show, as plain dicts (the /api/ answers and the templates'
input), gathered from the read-only reports (`status`, `history`, `drift`) and the store.

Every query is bounded: per environment its live servers, its newest operation, its newest
successful drill and its newest releases; never the whole history (10,000 operations must
not slow the overview). Drift hashes servers' files, so it is kept for `drift_ttl` seconds."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from ..engine.reports import operation_report
from ..engine.ttl import time_to_live
from ..state import OperationRow, ReleaseRow, utcnow

if TYPE_CHECKING:
    from ..engine import Executor

OPERATIONS_SHOWN = 20  # an environment page's operations table
TIMELINES_SHOWN = 5  # of which the newest have a phase timeline each
RELEASES_SHOWN = 50
REPORT_OPERATIONS = 200  # a report's bound within its period


def stamp(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment else None


def operation_summary(op: OperationRow | None) -> dict | None:
    if op is None:
        return None
    seconds = (op.ended_at - op.started_at).total_seconds() if op.ended_at else None
    return {
        "id": op.id, "kind": op.kind, "status": op.status, "started_at": stamp(op.started_at),
        "seconds": round(seconds, 3) if seconds is not None else None, "summary": op.summary,
    }


def release_summary(release: ReleaseRow) -> dict:
    return {
        "operation_id": release.operation_id, "kind": release.kind, "reason": release.reason,
        "created_at": stamp(release.created_at), "images": json.loads(release.image_ids),
        "baked_at": stamp(release.baked_at), "live_at": stamp(release.live_at), "time_to_live_s": time_to_live(release),
    }


class Dashboard:
    """The pages' data for one project, read through its executor (never under a lock)."""

    def __init__(self, executor: Executor, drift_ttl: float = 30.0, refresh: float = 10.0):
        self.executor = executor
        self.drift_ttl = drift_ttl
        self.refresh = refresh  # an open page is drawn again at least this often (seconds)
        self._drift: dict[str, tuple[float, dict]] = {}  # env -> (monotonic time, drift --json)

    @property
    def spec(self):
        return self.executor.project.spec

    @property
    def store(self):
        return self.executor.project.store

    def environments(self) -> list[str]:
        return list(self.spec.environments)

    def check(self, env: str) -> None:
        """A PhoenixError (exit 2 from the CLI, 404 from the app) for an unknown environment."""
        self.executor.project.loaded.environment(env)

    # --- what each page asks -----------------------------------------------------------------
    def drift(self, env: str) -> dict:
        """`drift --json`, at most `drift_ttl` seconds old (it reads every server's files)."""
        cached = self._drift.get(env)
        if cached is None or time.monotonic() - cached[0] > self.drift_ttl:
            cached = self._drift[env] = (time.monotonic(), self.executor.reports.drift(env).as_json())
        return cached[1]

    def summary(self, env: str) -> dict:
        """One environment on the overview: per role in service of desired, the release
        served, the oldest server against max_age; drifted and unhealthy servers; the last
        operation and the last successful recovery drill."""
        status = self.executor.reports.status(env).as_json()
        drifted = {s["id"] for s in self.drift(env)["servers"] if s.get("supported") and (s["modified"] or s["added"] or s["deleted"])}
        releases = self.store.releases(env, limit=1)
        roles = []
        for role, env_role in self.spec.environments[env].roles.items():
            mine = [s for s in status["servers"] if s["role"] == role]
            roles.append({
                "role": role, "desired": env_role.count, "in_service": sum(1 for s in mine if s["in_service"]),
                "oldest_age_s": max((s["age_s"] for s in mine), default=None), "max_age_s": self.spec.max_age(env, role),
                "image": next((s["image"] for s in mine if s["in_service"]), None),
            })
        return {
            "environment": env,
            "mode": self.spec.environments[env].mode,
            "roles": roles,
            "release": release_summary(releases[0]) if releases else None,
            "drifted": sorted(drifted),
            "unhealthy": [s["id"] for s in status["servers"] if s["state"] in ("dead", "failed")],
            "last_operation": operation_summary(self.store.latest_operation(env)),
            "last_drill": operation_summary(self.store.latest_operation(env, kind="drill", status="succeeded")),
        }

    def overview(self) -> dict:
        return {"project": self.spec.project, "generated_at": stamp(utcnow()), "environments": [self.summary(env) for env in self.environments()]}

    def environment(self, env: str, since: timedelta | None = None) -> dict:
        """The environment page: servers (with age against max_age and drift), balancers,
        releases, operations (the newest with their phases per server)."""
        self.check(env)
        now = utcnow()
        cutoff = now - since if since else None
        status = self.executor.reports.status(env).as_json()
        drift = {s["id"]: s for s in self.drift(env)["servers"]}
        for server in status["servers"]:
            found = drift.get(server["id"])
            server["drift"] = (
                None if found is None or not found.get("supported")
                else sorted(found["modified"] + found["added"] + found["deleted"])
            )
            server["max_age_s"] = self.spec.max_age(env, server["role"]) if server["role"] in self.spec.environments[env].roles else None
        limit = REPORT_OPERATIONS if cutoff else OPERATIONS_SHOWN
        operations = [op for op in self.store.operations(env, limit) if cutoff is None or op.started_at >= cutoff]
        releases = {r.operation_id: r for r in self.store.releases(env, limit=RELEASES_SHOWN)}
        history = []
        for n, op in enumerate(operations):
            report = operation_report(self.store, op).as_json()
            release = releases.get(op.id)
            report["time_to_live_s"] = time_to_live(release) if release else None
            if n < TIMELINES_SHOWN:
                report["timeline"] = self.timeline(op)
            history.append(report)
        shown_releases = [release_summary(r) for r in releases.values() if cutoff is None or r.created_at >= cutoff]
        return {
            "environment": env,
            "mode": self.spec.environments[env].mode,
            "generated_at": stamp(now),
            "since": stamp(cutoff),
            "status": status,
            "roles": {role: {"desired": r.count, "max_age_s": self.spec.max_age(env, role)} for role, r in self.spec.environments[env].roles.items()},
            "releases": shown_releases,  # newest first
            "operations": history,  # newest first
            "running": next((op["id"] for op in history if op["status"] == "running"), None),
        }

    def timeline(self, op: OperationRow) -> list[dict]:
        """Each phase of each server, in seconds from the operation's start."""
        start = op.started_at
        return [
            {"server": row.server_id or "(operation)", "phase": row.phase, "ok": row.ok,
             "start_s": round((row.started_at - start).total_seconds(), 3), "seconds": round(row.seconds, 3)}
            for row in self.store.phases(op.id)
        ]

    def version(self, env: str | None) -> str:
        """A digest that changes when what a page shows changes (servers' states, the newest
        operation): what the live updates watch, two small queries per environment. It also
        changes every `refresh` seconds: what only the provider knows (a server that died,
        a balancer's members) and the ages are shown at most that late, without asking the
        provider every second."""
        digest = hashlib.sha256(str(int(time.time() // self.refresh)).encode())
        for name in [env] if env else self.environments():
            for row in self.store.servers(name):
                digest.update(f"{row.id}:{row.state}:{row.in_service};".encode())
            op = self.store.latest_operation(name)
            digest.update(f"{op.id}:{op.status}|".encode() if op else b"-|")
        return digest.hexdigest()[:16]
