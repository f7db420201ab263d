"""Deployment strategies beyond rolling: blue-green and canary, and the fast way back.

Each works with the executor's own steps (launch and gate, swap, retire) and the load
balancer's `switch`, which moves traffic between two groups in one step.

- blue-green: a complete new group is launched, gated and warmed, staged in the balancer
  (checked, no traffic), then switched in at once; the previous group stays staged for
  `keep_previous`, so `rollback` is a switch back, not a redeploy.
- canary: a few new servers serve beside the old ones for `canary_time`; their error rate
  (5xx and connection errors, from the balancer's per-server counters) is compared with
  the old servers'. Worse: they are retired (automatic rollback). Otherwise the rest rolls,
  unless `--pause` asked to wait for `promote` or `rollback`.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING

from .boot.config import BootConfig
from .deadline import Deadline, DeadlineExceeded
from .errors import GateFailed, PhoenixError
from .plan import Batch, RolePlan, plan_role
from .spec import resolve_quantity
from .state import LoadBalancerRow, ServerRow, utcnow

if TYPE_CHECKING:
    from .executor import Executor, Operation


class CanaryFailed(PhoenixError):
    pass


def _fill_missing(ex: "Executor", op: "Operation", env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig) -> None:
    """Servers simply missing are launched as usual before any group is replaced."""
    for batch in plan.batches:
        if not batch.retire_first and not batch.retire_after:
            ex._run_batch(op, env, plan.role, batch, lb, boot)


# --- blue-green -----------------------------------------------------------------------------


def blue_green(ex: "Executor", op: "Operation", env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig) -> None:
    _fill_missing(ex, op, env, plan, lb, boot)
    if not plan.replace:
        return
    role, deadlines, rollout = plan.role, ex.spec.deadlines(env), ex.spec.rollout(env)
    old_group = [row for row in ex.store.servers(env, role) if row.in_service]
    ex._retire_standby(op, env, role, lb)  # only one previous group is kept
    ex.reporter.info(f"{role}: blue-green: launching a group of {plan.desired} beside the {len(old_group)} serving")
    new_group = ex._launch_group(op, env, role, boot, plan.desired)
    _stage(ex, op, env, new_group, lb)
    _switch(ex, op, env, lb, enable=new_group, disable=old_group, gate="blue-green switch")
    until = utcnow() + timedelta(seconds=rollout.keep_previous)
    for row in old_group:
        ex.store.update_server(row.id, state="standby", in_service=False, standby_until=until)
    for row in new_group:
        op.note("launched", row.id)
    _wait_sessions_gone(ex, op, env, lb, old_group, deadlines.drain)
    ex.reporter.info(f"{role}: switched to {len(new_group)} new servers; the previous group stands by until {until:%H:%M:%S} UTC")


def _stage(ex: "Executor", op: "Operation", env: str, rows: list[ServerRow], lb: LoadBalancerRow) -> None:
    """Members checked by the balancer but given no traffic yet; all or nothing."""
    deadline = Deadline(ex.spec.deadlines(env).swap, f"the {rows[0].role} load balancer to check the new group")
    tls_port = ex.spec.roles[rows[0].role].tls_port
    try:
        with op.phase("stage"):
            for row in rows:
                ex.lbs.add_member(lb.handle_data, row.id, row.address, row.port, tls_port, standby=True)
                ex.store.update_server(row.id, state="staged")
            deadline.poll(lambda: _all(ex, lb, rows, "standing_by"), interval=0.05, max_interval=0.1)
    except BaseException as exc:
        _discard(ex, op, env, lb, rows)
        if not isinstance(exc, Exception):
            raise
        raise GateFailed(rows[0].id, "load balancer", f"the new group was not checked healthy: {exc}") from None


def _all(ex: "Executor", lb: LoadBalancerRow, rows: list[ServerRow], state: str) -> bool:
    for row in rows:
        ex._check_alive(row, "load balancer")
    members = ex.lbs.members(lb.handle_data)
    return all(row.id in members and getattr(members[row.id], state) for row in rows)


def _switch(ex, op, env, lb, enable: list[ServerRow], disable: list[ServerRow], gate: str) -> None:
    """Traffic to `enable` in one step; back to `disable` if the new side does not come UP."""
    deadline = Deadline(ex.spec.deadlines(env).swap, f"{gate}: the new side to be UP")
    with op.phase("swap"):
        ex.lbs.switch(lb.handle_data, enable=[r.id for r in enable], disable=[r.id for r in disable])
        try:
            deadline.poll(lambda: _all(ex, lb, enable, "up"), interval=0.02, max_interval=0.05)
        except BaseException as exc:
            try:
                ex.lbs.switch(lb.handle_data, enable=[r.id for r in disable], disable=[r.id for r in enable])
            finally:
                _discard(ex, op, env, lb, enable)
            if not isinstance(exc, Exception):
                raise
            raise GateFailed(enable[0].id, "load balancer", f"{gate} undone: {exc}") from None
    for row in enable:
        ex.store.update_server(row.id, state="in_service", in_service=True, standby_until=None)


def _wait_sessions_gone(ex, op, env, lb, rows: list[ServerRow], seconds: float) -> None:
    ids = {row.id for row in rows}
    with op.phase("drain"):
        try:
            Deadline(seconds, "sessions on the previous group to reach zero").poll(
                lambda: all(m.sessions == 0 for name, m in ex.lbs.members(lb.handle_data).items() if name in ids),
                interval=0.02,
                max_interval=0.2,
            )
        except DeadlineExceeded as exc:
            ex.reporter.info(f"{rows[0].role}: {exc}; going on")


def _discard(ex, op, env, lb, rows: list[ServerRow]) -> None:
    """New servers that must not serve: out of the balancer, destroyed."""
    ex._parallel([lambda r=r: ex._remove_and_destroy(op, env, lb, r.id) for r in rows])


def switch_back(ex: "Executor", op: "Operation", env: str, role: str, lb: LoadBalancerRow) -> bool:
    """Rollback to the kept group at once. False when there is none able to serve."""
    standby = [row for row in ex.store.servers(env, role) if row.state == "standby"]
    members = ex.lbs.members(lb.handle_data)
    if not standby or not all(ex.compute.is_alive(r.handle_data) and members.get(r.id) and members[r.id].check_ok for r in standby):
        return False
    current = [row for row in ex.store.servers(env, role) if row.in_service]
    ex.reporter.info(f"{role}: switching back to {len(standby)} servers of the previous group")
    _switch(ex, op, env, lb, enable=standby, disable=current, gate="switch back")
    for row in current:
        ex.store.update_server(row.id, state="draining", in_service=False)
    ex._retire_all(op, env, role, [row.id for row in current], lb)
    return True


# --- canary ---------------------------------------------------------------------------------


def canary(ex: "Executor", op: "Operation", env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig, pause: bool) -> bool:
    """True when it stopped after the canary (paused)."""
    _fill_missing(ex, op, env, plan, lb, boot)
    if not plan.replace:
        return False
    role, rollout = plan.role, ex.spec.rollout(env)
    count = min(max(1, resolve_quantity(rollout.canary, plan.desired, round_up=True)), len(plan.replace))
    old_ids = [r.server_id for r in plan.replace]
    ex.reporter.info(f"{role}: canary: {count} new server(s) beside {len(old_ids)} old for {rollout.canary_time:g}s")
    new_rows = ex._run_batch(op, env, role, Batch(launch=count), lb, boot)
    with op.phase("canary"):
        verdict = watch(ex, lb, new_rows, old_ids, rollout.canary_time, rollout.canary_tolerance)
    if verdict:
        ex.reporter.info(f"{role}: canary worse than the previous build: {verdict}; rolling back")
        ex._retire_all(op, env, role, [row.id for row in new_rows], lb)
        raise CanaryFailed(f"canary of {role} rolled back: {verdict}")
    ex.reporter.info(f"{role}: canary healthy after {rollout.canary_time:g}s")
    if pause:
        return True
    promote_role(ex, op, env, role, lb, boot)
    return False


def watch(ex: "Executor", lb: LoadBalancerRow, canaries: list[ServerRow], old_ids: list[str], seconds: float, tolerance: float) -> str:
    """Compare error rates over the watch; '' when the canaries are no worse."""
    before = ex.lbs.counters(lb.handle_data)
    expires = time.monotonic() + seconds
    while time.monotonic() < expires:
        for row in canaries:
            if not ex.compute.is_alive(row.handle_data):
                return f"canary {row.id} died"
        time.sleep(min(0.25, max(0.0, expires - time.monotonic())))
    after = ex.lbs.counters(lb.handle_data)

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


def promote_role(ex: "Executor", op: "Operation", env: str, role: str, lb: LoadBalancerRow, boot: BootConfig) -> None:
    """After a good canary: the rest rolls (the canaries count as new servers)."""
    observed = [ex._observe(row) for row in ex.store.servers(env, role) if row.state != "standby"]
    rest = plan_role(role, ex.spec.environments[env].roles[role].count, boot.fingerprint, boot.image_id, observed, ex.spec.rollout(env))
    ex._execute_role(op, env, rest, lb, boot, "rolling", pause=False)
