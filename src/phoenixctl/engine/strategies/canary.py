"""Canary: a few new servers serve beside the old ones for `canary_time`; their error rate
(5xx and connection errors, from the balancer's per-server counters) is compared with the
old servers'. Worse: they are retired (automatic rollback). Otherwise the rest rolls, unless
`--pause` asked to wait for `promote` or `rollback`."""

from __future__ import annotations

import time

from ...boot.config import BootConfig
from ...errors import PhoenixError
from ...plan import Batch, RolePlan
from ...spec import RolloutSpec, resolve_quantity
from ...state import LoadBalancerRow, ServerRow
from . import rolling
from .steps import RolloutSteps, fill_missing


class CanaryFailed(PhoenixError):
    pass


def canary_count(rollout: RolloutSpec, desired: int, replacing: int) -> int:
    """How many canaries: `canary` of the role (count or %, rounded up), at least one, at
    most the servers being replaced. The one place this is decided."""
    return min(max(1, resolve_quantity(rollout.canary, desired, round_up=True)), replacing)


def run(steps: RolloutSteps, op, env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig, pause: bool = False) -> bool:
    """True when it stopped after the canary (paused)."""
    fill_missing(steps, op, env, plan, lb, boot)
    if not plan.replace:
        return False
    role, rollout = plan.role, steps.spec.rollout(env)
    count = canary_count(rollout, plan.desired, len(plan.replace))
    old_ids = [r.server_id for r in plan.replace]
    steps.reporter.info(f"{role}: canary: {count} new server(s) beside {len(old_ids)} old for {rollout.canary_time:g}s")
    new_rows = steps.run_batch(op, env, role, Batch(launch=count), lb, boot)
    with op.phase("canary"):
        verdict = watch(steps, lb, new_rows, old_ids, rollout.canary_time, rollout.canary_tolerance)
    if verdict:
        steps.reporter.info(f"{role}: canary worse than the previous build: {verdict}; rolling back")
        steps.retire_all(op, env, role, [row.id for row in new_rows], lb)
        raise CanaryFailed(f"canary of {role} rolled back: {verdict}")
    steps.reporter.info(f"{role}: canary healthy after {rollout.canary_time:g}s")
    if pause:
        return True
    promote(steps, op, env, role, lb, boot)
    return False


def describe(plan: RolePlan, desired: int, rollout: RolloutSpec) -> list[str]:
    if not plan.replace:
        return []
    return [
        f"launch {canary_count(rollout, desired, len(plan.replace))} canary server(s) beside the old ones",
        f"watch them for {rollout.canary_time:g}s; roll back if their error rate is above the old servers' + {rollout.canary_tolerance:.1%}",
        "then roll the rest",
    ]


def watch(steps: RolloutSteps, lb: LoadBalancerRow, canaries: list[ServerRow], old_ids: list[str], seconds: float, tolerance: float) -> str:
    """Compare error rates over the watch; '' when the canaries are no worse."""
    before = steps.lbs.counters(lb.handle_data)
    expires = time.monotonic() + seconds
    while time.monotonic() < expires:
        for row in canaries:
            if not steps.compute.is_alive(row.handle_data):
                return f"canary {row.id} died"
        time.sleep(min(0.25, max(0.0, expires - time.monotonic())))
    after = steps.lbs.counters(lb.handle_data)

    def totals(ids) -> tuple[int, int]:
        requests = sum(after[i].requests - before.get(i, after[i]).requests for i in ids if i in after)
        errors = sum(after[i].errors - before.get(i, after[i]).errors for i in ids if i in after)
        return requests, errors

    new_requests, new_errors = totals([row.id for row in canaries])
    old_requests, old_errors = totals(old_ids)
    new_rate = new_errors / new_requests if new_requests else 0.0
    old_rate = old_errors / old_requests if old_requests else 0.0
    if new_rate > old_rate + tolerance:
        return (
            f"{new_errors} of {new_requests} requests failed on the new build ({new_rate:.1%}) against "
            f"{old_errors} of {old_requests} ({old_rate:.1%}) on the previous one"
        )
    return ""


def promote(steps: RolloutSteps, op, env: str, role: str, lb: LoadBalancerRow, boot: BootConfig) -> None:
    """After a good canary: the rest rolls (the canaries count as new servers)."""
    rest = steps.replan(env, role, boot)
    steps.remove_dead(op, env, lb, rest)
    rolling.run(steps, op, env, rest, lb, boot)
    steps.retire_all(op, env, role, [r.server_id for r in rest.retire_extra], lb)
