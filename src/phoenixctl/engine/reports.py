"""Read-only reports: status, history, drift, what should be replaced (plan), what a command
would do (dry runs, described by the strategies themselves), what the provider can do."""

from __future__ import annotations

import dataclasses
import json

from ..boot.config import BootConfig
from ..deadline import Deadline
from ..drivers.base import ImageSample
from ..plan import ObservedServer, RolePlan
from ..state import StateStore, utcnow
from . import in_place, strategies
from .operation import PHASES
from .part import Part
from .project import Project
from .report_types import (
    Capability, ConvergePlan, Coverage, DoctorReport, DriftReport, LoadBalancerStatus, OperationReport, PhaseTiming, Reason,
    ReconcilePlan, ReleaseInfo, RoleReplacement, RoleSteps, ServerDrift, ServerStatus, StatusReport, SwitchPlan, WarmupReport,
)
from .strategies import rolling
from .ttl import time_to_live


class Reports(Part):
    """What is, what would happen, what happened: read-only, never waits for the lock."""

    def reconcile_plan(self, env: str) -> ReconcilePlan:
        """Every server that should be replaced and why (image or configuration changed,
        older than max_age, drifted, unhealthy, dead), changing nothing."""
        self.project.loaded.environment(env)
        image_ids = {name: self.compute.image_id(name, image, self.project.dir) for name, image in self.spec.images.items()}
        lbs = self.engine.inspector.lb_addresses(env)
        resolved = self.engine.inspector.secrets_for(env, read_only=True)
        boots = self.engine.inspector.desired_boot(env, image_ids, lbs, resolved)
        now = utcnow()
        roles = []
        # An in-place environment's servers live on: neither age nor drift has them replaced
        # (drift stays reported by `drift` until someone acts); a deploy updates the outdated.
        phoenix = self.spec.environments[env].mode == "phoenix"
        for role, env_role in self.spec.environments[env].roles.items():
            observed = self.engine.inspector.observe_role(env, role, inspect=phoenix)
            plan = self.engine.inspector.plan(env, role, boots[role], observed, max_age=self.spec.max_age(env, role) if phoenix else None, now=now)
            missing = sum(b.launch for b in plan.batches) - len(plan.replace) - len(plan.remove_dead)
            roles.append(
                RoleReplacement(
                    role=role,
                    desired=env_role.count,
                    replace=reasons(plan.replace + plan.remove_dead),
                    retire=reasons(plan.retire_extra),
                    missing=max(missing, 0),
                    cannot_tell=cannot_tell(boots[role], plan, observed),
                )
            )
        return ReconcilePlan(env, tuple(roles), resolved.not_run)

    def drift(self, env: str) -> DriftReport:
        """Each server's files against how it booted: drift, and state written on it."""
        self.project.loaded.environment(env)
        servers = []
        for row in self.store.servers(env):
            if not self.compute.is_alive(row.handle_data):
                continue
            changes = self.engine.inspector.file_changes(row)
            if changes is None:
                servers.append(ServerDrift(row.id, row.role, supported=False))
                continue
            servers.append(
                ServerDrift(
                    row.id, row.role, supported=True,
                    modified=tuple(changes.modified), added=tuple(changes.added), deleted=tuple(changes.deleted),
                    on_server_state=self.spec.roles[row.role].on_server_state if row.role in self.spec.roles else "refuse",
                )
            )
        return DriftReport(env, tuple(servers))

    def describe(self, env: str, kind: str, strategy: str | None = None, role: str | None = None) -> ConvergePlan | SwitchPlan:
        """What deploy, rotate or rollback would do, and why, without doing any of it."""
        self.project.loaded.environment(env)
        if role:
            self.engine.inspector.check_env_role(env, role)
        if kind == "rollback":
            paused = self.store.paused_operation(env)
            if paused is not None:
                canaries = [r.id for r in self.store.servers(env) if r.operation_id == paused.id and r.in_service]
                return SwitchPlan(env, kind, "retire the paused canary", tuple(canaries))
            standby = [r for r in self.store.servers(env) if r.state == "standby"]
            if standby:
                return SwitchPlan(
                    env, kind, "switch back to the kept group at once", tuple(r.id for r in standby),
                    replaces=tuple(r.id for r in self.store.servers(env) if r.in_service and r.role in {s.role for s in standby}),
                )
            previous = self.engine.releases.previous(env)
            old = Reports(self.engine.for_project(Project.from_release(self.project, previous.spec_text)))
            described = old.describe_converge(env, "rolling", None, replace_all=False, image_ids=json.loads(previous.image_ids))
            return dataclasses.replace(described, kind=kind, action=f"redeploy the release of {previous.operation_id}")
        strategy = strategy or self.spec.rollout(env).strategy
        if kind == "rotate" and strategy == "canary":
            strategy = "rolling"
        described = self.describe_converge(env, strategy, role, replace_all=kind == "rotate")
        return dataclasses.replace(described, kind=kind)

    def describe_converge(self, env: str, strategy: str, role: str | None, replace_all: bool, image_ids=None) -> ConvergePlan:
        resolved = self.engine.inspector.preflight(env, read_only=True)
        if image_ids is None:
            image_ids = {name: self.compute.image_id(name, image, self.project.dir) for name, image in self.spec.images.items()}
        lbs = self.engine.inspector.lb_addresses(env)
        boots = self.engine.inspector.desired_boot(env, image_ids, lbs, resolved)
        rollout = self.spec.rollout(env)
        roles = []
        for name, env_role in self.spec.environments[env].roles.items():
            if role and name != role:
                continue
            observed = self.engine.inspector.observe_role(env, name)
            plan = self.engine.inspector.plan(env, name, boots[name], observed, replace_all=replace_all)
            if self.spec.environments[env].mode == "in-place":
                steps = in_place.describe(plan, env_role.count, rollout)
            else:
                steps = strategies.strategy(strategy).describe(plan, env_role.count, rollout) or rolling.describe(plan, env_role.count, rollout)
            roles.append(
                RoleSteps(
                    role=name,
                    desired=env_role.count,
                    image=boots[name].image_id,
                    remove=reasons(plan.remove_dead),
                    replace=reasons(plan.replace),
                    retire_extra=reasons(plan.retire_extra),
                    cannot_tell=cannot_tell(boots[name], plan, observed),
                    steps=tuple(steps),
                )
            )
        in_place_env = self.spec.environments[env].mode == "in-place"
        return ConvergePlan(env, "in-place" if in_place_env else strategy, tuple(roles), resolved.not_run)

    def doctor(self, probe: bool = False, timeout: float = 900.0) -> DoctorReport:
        """The provider's capabilities for this spec; with `probe`, how long an image and a
        server take to make (the floor of how fast a change can reach users)."""
        deadline = Deadline(timeout, "the doctor's probes")
        first = next(iter(self.spec.images.items()), None)
        sample = ImageSample(first[0], first[1], self.project.dir) if first else None
        rows = self.compute.capability_report(probe, deadline, sample) + self.lbs.capability_report()
        capabilities = self.lbs.capabilities
        rows += [
            {"capability": "rolling", "ok": True, "detail": "launch before terminate, max_surge / max_unavailable"},
            {"capability": "blue-green", "ok": "standby" in capabilities, "detail": "a kept group, switched in one step"},
            {"capability": "canary", "ok": "counters" in capabilities, "detail": "per-member error counts from the balancer"},
            {"capability": "server checks", "ok": self.compute.reaches_servers,
             "detail": "Phoenix probes new servers (listen, health, warm-up)" if self.compute.reaches_servers
             else f"off: {self.compute.unreachable}; the balancer's health check is the gate; no warm-up"},
        ]
        return DoctorReport(self.spec.provider.name, probe, tuple(Capability.from_row(row) for row in rows))

    def status(self, env: str) -> StatusReport:
        self.project.loaded.environment(env)
        now = utcnow()
        servers = []
        for row in self.store.servers(env):
            alive = self.compute.is_alive(row.handle_data)
            servers.append(
                ServerStatus(
                    id=row.id,
                    role=row.role,
                    address=f"{row.address}:{row.port}",
                    image=row.image_id,
                    state=row.state if alive else "dead",
                    in_service=row.in_service and alive,
                    launched_at=row.launched_at.isoformat(timespec="seconds") + "Z",
                    age_s=round((now - row.launched_at).total_seconds(), 1),
                    fingerprint=row.fingerprint,
                    provider=self.compute.describe(row.handle_data),
                )
            )
        load_balancers = []
        for row in self.store.load_balancers(env):
            alive = self.lbs.is_alive(row.handle_data)
            members = self.lbs.members(row.handle_data) if alive else {}
            load_balancers.append(
                LoadBalancerStatus(
                    role=row.role,
                    address=f"{row.address}:{row.port}",
                    alive=alive,
                    members_up=sum(1 for m in members.values() if m.up),
                    pid=row.handle_data.get("pid"),
                    tls_address=f"{row.address}:{row.handle_data['tls_port']}" if row.handle_data.get("tls_port") else None,
                )
            )
        return StatusReport(env, tuple(servers), tuple(load_balancers), self.store.location.as_json())

    def shortfall(self, env: str) -> dict[str, Coverage]:
        """Roles serving fewer servers than the spec wants: role -> (serving, wanted)."""
        wanted = {role: r.count for role, r in self.project.loaded.environment(env).roles.items()}
        serving = dict.fromkeys(wanted, 0)
        for row in self.store.servers(env):
            if row.role in serving and row.in_service and self.compute.is_alive(row.handle_data):
                serving[row.role] += 1
        return {role: Coverage(serving[role], count) for role, count in wanted.items() if serving[role] < count}

    def history(self, env: str, limit: int = 20) -> list[OperationReport]:
        self.project.loaded.environment(env)
        releases = {r.operation_id: r for r in self.store.releases(env, limit=500)}
        reports = []
        for op in self.store.operations(env, limit):
            report = operation_report(self.store, op)
            release = releases.get(op.id)
            if release is not None:
                info = ReleaseInfo(release.kind, release.reason, json.loads(release.image_ids), json.loads(release.fingerprints))
                report = dataclasses.replace(report, release=info, time_to_live_s=time_to_live(release))
            reports.append(report)
        return reports


def cannot_tell(boot: BootConfig, plan: RolePlan, observed: list[ObservedServer]) -> str | None:
    """Why a read-only command cannot tell whether some of a role's servers carry what they
    should (None when it can, or when no server is left to judge: all replaced or missing):
    secret commands it does not run, with no keyed hash recorded for them."""
    decided = {r.server_id for r in plan.remove_dead + plan.replace + plan.retire_extra}
    if not boot.unknown or not any(s.alive and s.in_service and s.id not in decided for s in observed):
        return None
    return (
        f"cannot tell whether the servers' boot configuration changed: secret command(s) {', '.join(boot.unknown)} "
        "not run here, and no keyed hash recorded for the command as it stands (a deploy runs it and records one)"
    )


def reasons(decisions) -> tuple[Reason, ...]:
    return tuple(Reason(d.server_id, d.reason) for d in decisions)


def operation_report(store: StateStore, op) -> OperationReport:
    """One operation with per-phase timings: servers, wall-clock span and slowest server."""
    phases: dict[str, dict] = {}
    for row in store.phases(op.id):
        entry = phases.setdefault(row.phase, {"count": 0, "failed": 0, "first": None, "last": None, "max_s": 0.0, "total_s": 0.0})
        end = row.started_at.timestamp() + row.seconds
        entry["count"] += 1
        entry["failed"] += 0 if row.ok else 1
        entry["first"] = min(filter(None, [entry["first"], row.started_at.timestamp()]))
        entry["last"] = max(filter(None, [entry["last"], end]))
        entry["max_s"] = max(entry["max_s"], row.seconds)
        entry["total_s"] += row.seconds
    ordered = {}
    for name in [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]:
        entry = phases[name]
        ordered[name] = PhaseTiming(
            count=entry["count"],
            failed=entry["failed"],
            span_s=round(entry["last"] - entry["first"], 3),
            max_s=round(entry["max_s"], 3),
            total_s=round(entry["total_s"], 3),
        )
    warmups = tuple(
        WarmupReport(
            server=w.server_id, planned=w.planned, fetched=w.fetched, succeeded=w.succeeded,
            bytes=w.bytes, seconds=round(w.seconds, 3), passed=w.passed,
        )
        for w in store.warmups(op.id)
    )
    seconds = (op.ended_at - op.started_at).total_seconds() if op.ended_at else None
    return OperationReport(
        id=op.id,
        kind=op.kind,
        status=op.status,
        started_at=op.started_at.isoformat(timespec="seconds") + "Z",
        seconds=round(seconds, 3) if seconds is not None else None,
        summary=op.summary,
        phases=ordered,
        warmups=warmups,
    )
