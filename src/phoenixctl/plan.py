"""The plan: a pure function from (spec, observed fleet) to ordered actions with reasons.

No I/O here. The surge/unavailable arithmetic follows the Kubernetes deployment controller
(`rolling.go`): plain functions over counts, so every case is a unit test."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from .spec import RolloutSpec, resolve_quantity


@dataclass(frozen=True)
class ObservedServer:
    id: str
    role: str
    image_id: str
    fingerprint: str
    alive: bool
    in_service: bool
    launched_at: datetime | None = None
    drift: str = ""  # why its files differ from how it booted ("" when they do not)
    unhealthy: str = ""  # why its health check or the balancer's fails ("" when healthy)


@dataclass(frozen=True)
class Replacement:
    server_id: str
    reason: str
    urgent: bool = False  # unhealthy: replaced at once, outside any budget


@dataclass(frozen=True)
class Batch:
    """Launch `launch` new servers; retire `retire_first` before and `retire_after` once they serve."""

    launch: int
    retire_first: tuple[str, ...] = ()
    retire_after: tuple[str, ...] = ()


@dataclass
class RolePlan:
    role: str
    desired: int
    fingerprint: str | None
    image_id: str
    remove_dead: list[Replacement] = field(default_factory=list)
    replace: list[Replacement] = field(default_factory=list)
    retire_extra: list[Replacement] = field(default_factory=list)
    batches: list[Batch] = field(default_factory=list)

    @property
    def changes_nothing(self) -> bool:
        return not (self.remove_dead or self.replace or self.retire_extra or self.batches)


def rollout_limits(desired: int, rollout: RolloutSpec) -> tuple[int, int]:
    """(surge, unavailable) in servers. Surge rounds up and unavailability down, as in
    Kubernetes; when both come to zero the surge becomes one, so a rotation of N=1 with
    `max_surge: 10%` still launches a server instead of stalling."""
    surge = resolve_quantity(rollout.max_surge, desired, round_up=True)
    unavailable = resolve_quantity(rollout.max_unavailable, desired, round_up=False)
    if surge == 0 and unavailable == 0:
        surge = 1
    return surge, unavailable


def rolling_batches(outdated: list[str], serving: int, surge: int, unavailable: int) -> list[Batch]:
    """Split the outdated servers into batches of `surge + unavailable`.

    Within a batch up to `unavailable` old servers may retire before their replacements
    launch, but never the last one serving (the traffic guard); the rest retire only after
    the new servers are in service. So at most `surge` extra servers run at any time and at
    most `unavailable` are missing, and every batch launches at least one server."""
    step = max(1, surge + unavailable)
    batches = []
    for start in range(0, len(outdated), step):
        chunk = outdated[start : start + step]
        first = min(unavailable, len(chunk), max(serving - 1, 0))
        batches.append(Batch(launch=len(chunk), retire_first=tuple(chunk[:first]), retire_after=tuple(chunk[first:])))
    return batches


def ideal_batches(outdated: int, surge: int, unavailable: int) -> int:
    return -(-outdated // max(1, surge + unavailable)) if outdated else 0


def replacement_reason(
    server: ObservedServer,
    fingerprint: str | None,
    image_id: str,
    replace_all: bool,
    replace_outdated: bool,
    max_age: float | None,
    now: datetime | None,
) -> str:
    """Why a live server should be replaced ("" when it should not), most pressing first."""
    if server.unhealthy:
        return f"unhealthy: {server.unhealthy}"
    if replace_all:
        return "rotation requested"
    if replace_outdated and fingerprint is not None and server.fingerprint != fingerprint:
        return "image changed" if server.image_id != image_id else "boot configuration changed"
    if replace_outdated and fingerprint is None and server.image_id != image_id:
        return "image changed"  # the rest of the configuration cannot be told (see `plan_role`)
    if max_age is not None and now is not None and server.launched_at is not None:
        age = (now - server.launched_at).total_seconds()
        if age > max_age:
            return f"older than max_age ({age:.0f}s > {max_age:g}s)"
    if server.drift:
        return f"drifted: {server.drift}"
    return ""


def plan_role(
    role: str,
    desired: int,
    fingerprint: str | None,
    image_id: str,
    observed: list[ObservedServer],
    rollout: RolloutSpec,
    replace_all: bool = False,
    replace_outdated: bool = True,
    max_age: float | None = None,
    now: datetime | None = None,
    budget: int | None = None,
    keep: frozenset[str] = frozenset(),
) -> RolePlan:
    """Decide what happens to one role.

    - dead servers, and live ones that never entered service, are removed (and replaced,
      since they do not count);
    - missing servers are launched first, in one batch;
    - with `replace_outdated`, servers whose fingerprint differs are replaced, with reasons
      (a `fingerprint` of None — unknown to a read-only command that runs no secret
      command — replaces only servers of another image);
      with `replace_all` (rotate), every live server is replaced;
    - servers beyond the desired count are retired, oldest first;
    - servers in `keep` (their retirement was refused) are neither replaced nor retired."""
    plan = RolePlan(role=role, desired=desired, fingerprint=fingerprint, image_id=image_id)
    live = [s for s in observed if s.alive and s.in_service]
    plan.remove_dead = [
        Replacement(s.id, "dead: its process is gone" if not s.alive else "not in service (left over by an unfinished operation)")
        for s in observed
        if not (s.alive and s.in_service)
    ]

    # Keep the newest servers when there are too many; retire the oldest beyond the count.
    by_age = sorted(live, key=lambda s: (s.launched_at or datetime.min, s.id))
    extra = len(live) - desired
    if extra > 0:
        # Prefer retiring outdated servers over current ones; never one that must be kept.
        retirable = [s for s in by_age if s.id not in keep]
        ranked = sorted(retirable, key=lambda s: (s.fingerprint == fingerprint and not replace_all, s.launched_at or datetime.min))
        plan.retire_extra = [Replacement(s.id, f"more than the {desired} wanted") for s in ranked[:extra]]
    retiring = {r.server_id for r in plan.retire_extra}
    kept = [s for s in by_age if s.id not in retiring]

    for server in kept:
        if server.id in keep:
            continue
        reason = replacement_reason(server, fingerprint, image_id, replace_all, replace_outdated, max_age, now)
        if reason:
            plan.replace.append(Replacement(server.id, reason, urgent=bool(server.unhealthy)))
    if budget is not None:  # oldest first within the budget; unhealthy servers never wait
        planned = [r for r in plan.replace if not r.urgent]
        allowed = {r.server_id for r in planned[: max(budget, 0)]}
        plan.replace = [r for r in plan.replace if r.urgent or r.server_id in allowed]

    missing = desired - len(kept)
    if missing > 0:
        plan.batches.append(Batch(launch=missing))
    surge, unavailable = rollout_limits(desired, rollout)
    serving = len(kept) + max(missing, 0)
    plan.batches.extend(rolling_batches([r.server_id for r in plan.replace], serving, surge, unavailable))
    return plan
