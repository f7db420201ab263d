"""The read-only reports, typed: each `as_json()` is exactly what the command's `--json` prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, NamedTuple


# --- status ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerStatus:
    id: str
    role: str
    address: str
    image: str
    state: str  # "dead" when the provider no longer has it
    in_service: bool
    launched_at: str
    age_s: float
    fingerprint: str
    provider: Mapping[str, Any] = field(default_factory=dict)  # the provider's own fields (pid and root, instance and zone)

    def as_json(self) -> dict:
        return {
            "id": self.id, "role": self.role, "address": self.address, "image": self.image, "state": self.state,
            "in_service": self.in_service, "launched_at": self.launched_at, "age_s": self.age_s, "fingerprint": self.fingerprint,
            **self.provider,
        }


@dataclass(frozen=True)
class LoadBalancerStatus:
    role: str
    address: str
    alive: bool
    members_up: int
    pid: int | None
    tls_address: str | None = None  # only when it passes TLS through

    def as_json(self) -> dict:
        shown = {"role": self.role, "address": self.address, "alive": self.alive, "members_up": self.members_up, "pid": self.pid}
        return {**shown, "tls_address": self.tls_address} if self.tls_address else shown


@dataclass(frozen=True)
class StatusReport:
    environment: str
    servers: tuple[ServerStatus, ...]
    load_balancers: tuple[LoadBalancerStatus, ...]
    state: dict | None = None  # where the state lives: {"backend", "location"} (never a password)

    def as_json(self) -> dict:
        return {
            "environment": self.environment,
            "servers": [s.as_json() for s in self.servers],
            "load_balancers": [lb.as_json() for lb in self.load_balancers],
            "state": self.state,
        }


class Coverage(NamedTuple):
    """A role's serving servers against the spec's count (a tuple: `serving, wanted = ...`)."""

    serving: int
    wanted: int


# --- history -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class PhaseTiming:
    count: int
    failed: int
    span_s: float  # wall clock, first start to last end
    max_s: float  # the slowest server
    total_s: float

    def as_json(self) -> dict:
        return {"count": self.count, "failed": self.failed, "span_s": self.span_s, "max_s": self.max_s, "total_s": self.total_s}


@dataclass(frozen=True)
class WarmupReport:
    server: str
    planned: int
    fetched: int
    succeeded: int
    bytes: int
    seconds: float
    passed: bool

    @property
    def failures(self) -> int:
        return self.fetched - self.succeeded

    def as_json(self) -> dict:
        return {
            "server": self.server, "planned": self.planned, "fetched": self.fetched, "succeeded": self.succeeded,
            "failures": self.failures, "bytes": self.bytes, "seconds": self.seconds, "passed": self.passed,
        }


@dataclass(frozen=True)
class ReleaseInfo:
    kind: str
    reason: str
    images: Mapping[str, str]
    fingerprints: Mapping[str, Any]

    def as_json(self) -> dict:
        return {"kind": self.kind, "reason": self.reason, "images": self.images, "fingerprints": self.fingerprints}


@dataclass(frozen=True)
class OperationReport:
    id: str
    kind: str
    status: str
    started_at: str
    seconds: float | None  # None while it runs
    summary: str
    phases: Mapping[str, PhaseTiming]  # in the order of PHASES, then any other
    warmups: tuple[WarmupReport, ...]
    release: ReleaseInfo | None = None
    time_to_live_s: float | None = None  # a release's: from its build's bake to its last server serving it

    def as_json(self) -> dict:
        shown = {
            "id": self.id, "kind": self.kind, "status": self.status, "started_at": self.started_at, "seconds": self.seconds,
            "summary": self.summary, "phases": {name: p.as_json() for name, p in self.phases.items()},
            "warmups": [w.as_json() for w in self.warmups], "time_to_live_s": self.time_to_live_s,
        }
        return {**shown, "release": self.release.as_json()} if self.release is not None else shown


# --- plan and the dry runs ---------------------------------------------------------------------
@dataclass(frozen=True)
class Reason:
    server: str
    reason: str

    def as_json(self) -> dict:
        return {"server": self.server, "reason": self.reason}


def reasons_json(reasons: tuple[Reason, ...]) -> list[dict]:
    return [r.as_json() for r in reasons]


@dataclass(frozen=True)
class RoleReplacement:
    """`phoenix plan`, one role: what should be replaced, retired or launched."""

    role: str
    desired: int
    replace: tuple[Reason, ...]
    retire: tuple[Reason, ...]
    missing: int
    cannot_tell: str | None

    def as_json(self) -> dict:
        return {
            "role": self.role, "desired": self.desired, "replace": reasons_json(self.replace), "retire": reasons_json(self.retire),
            "missing": self.missing, "cannot_tell": self.cannot_tell,
        }


@dataclass(frozen=True)
class ReconcilePlan:
    environment: str
    roles: tuple[RoleReplacement, ...]
    secret_commands: Mapping[str, str]  # secret commands not run here -> RECORDED | UNRECORDED

    @property
    def needs_replacement(self) -> bool:
        return any(r.replace or r.retire or r.missing for r in self.roles)

    @property
    def undetermined(self) -> bool:
        return any(r.cannot_tell for r in self.roles)

    def as_json(self) -> dict:
        return {
            "environment": self.environment, "needs_replacement": self.needs_replacement, "undetermined": self.undetermined,
            "roles": [r.as_json() for r in self.roles], "secret_commands": dict(self.secret_commands),
        }


@dataclass(frozen=True)
class RoleSteps:
    """A dry run, one role: what goes and why, and the strategy's steps."""

    role: str
    desired: int
    image: str
    remove: tuple[Reason, ...]
    replace: tuple[Reason, ...]
    retire_extra: tuple[Reason, ...]
    cannot_tell: str | None
    steps: tuple[str, ...]

    @property
    def changes(self) -> tuple[Reason, ...]:
        return self.remove + self.replace + self.retire_extra

    def as_json(self) -> dict:
        return {
            "role": self.role, "desired": self.desired, "image": self.image, "remove": reasons_json(self.remove),
            "replace": reasons_json(self.replace), "retire_extra": reasons_json(self.retire_extra),
            "cannot_tell": self.cannot_tell, "steps": list(self.steps),
        }


@dataclass(frozen=True)
class ConvergePlan:
    """A dry run that converges: deploy, rotate, or a rollback that redeploys a release."""

    environment: str
    strategy: str
    roles: tuple[RoleSteps, ...]
    secret_commands: Mapping[str, str]
    kind: str = ""
    action: str | None = None

    def as_json(self) -> dict:
        shown = {
            "environment": self.environment, "strategy": self.strategy, "roles": [r.as_json() for r in self.roles],
            "secret_commands": dict(self.secret_commands), "kind": self.kind,
        }
        return {**shown, "action": self.action} if self.action is not None else shown


@dataclass(frozen=True)
class SwitchPlan:
    """A rollback's dry run that converges nothing: retire the paused canary, or switch back."""

    environment: str
    kind: str
    action: str
    servers: tuple[str, ...]
    replaces: tuple[str, ...] | None = None  # the servers a switch back takes out of service

    def as_json(self) -> dict:
        shown = {"environment": self.environment, "kind": self.kind, "action": self.action, "servers": list(self.servers)}
        return {**shown, "replaces": list(self.replaces)} if self.replaces is not None else shown


# --- drift -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ServerDrift:
    id: str
    role: str
    supported: bool  # False: the provider cannot tell
    modified: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()
    on_server_state: str = "refuse"

    @property
    def state(self) -> tuple[str, ...]:
        """New files outside scratch and persistent mounts: lost when the server goes."""
        return self.added

    @property
    def drifted(self) -> bool:
        return bool(self.modified or self.added or self.deleted)

    def as_json(self) -> dict:
        if not self.supported:
            return {"id": self.id, "role": self.role, "supported": False}
        return {
            "id": self.id, "role": self.role, "supported": True, "modified": list(self.modified), "added": list(self.added),
            "deleted": list(self.deleted), "state": list(self.state), "on_server_state": self.on_server_state,
        }


@dataclass(frozen=True)
class DriftReport:
    environment: str
    servers: tuple[ServerDrift, ...]

    @property
    def drifted(self) -> bool:
        return any(s.drifted for s in self.servers)

    def as_json(self) -> dict:
        return {"environment": self.environment, "drifted": self.drifted, "servers": [s.as_json() for s in self.servers]}


# --- doctor ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Capability:
    capability: str
    ok: bool
    detail: str
    seconds: float | None = None  # only for the probes

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Capability:
        """From a driver's row (capability, ok, detail[, seconds])."""
        return cls(row["capability"], row["ok"], row["detail"], row.get("seconds"))

    def as_json(self) -> dict:
        shown = {"capability": self.capability, "ok": self.ok, "detail": self.detail}
        return {**shown, "seconds": self.seconds} if self.seconds is not None else shown


@dataclass(frozen=True)
class DoctorReport:
    provider: str
    probe: bool
    capabilities: tuple[Capability, ...]

    def as_json(self) -> dict:
        return {"provider": self.provider, "probe": self.probe, "capabilities": [c.as_json() for c in self.capabilities]}


# --- chaos -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChaosReport:
    environment: str
    killed: tuple[str, ...]
    seconds_to_full_count: float
    requests: int  # of the load meanwhile
    failed: int
    errors: Mapping[str, int]  # failed requests by cause

    def as_json(self) -> dict:
        return {
            "environment": self.environment, "killed": list(self.killed), "seconds_to_full_count": self.seconds_to_full_count,
            "requests": self.requests, "failed": self.failed, "errors": dict(self.errors),
        }
