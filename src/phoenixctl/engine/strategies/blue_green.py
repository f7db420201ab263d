"""Blue-green: a complete new group is launched, gated and warmed, staged in the balancer
(checked, no traffic), then switched in at once; the previous group stays staged for
`keep_previous`, so `rollback` is a switch back, not a redeploy."""

from __future__ import annotations

from datetime import timedelta

from ...boot.config import BootConfig
from ...deadline import Deadline, DeadlineExceeded
from ...errors import GateFailed
from ...plan import RolePlan
from ...spec import RolloutSpec
from ...state import LoadBalancerRow, ServerRow, utcnow
from .steps import RolloutSteps, fill_missing


def run(steps: RolloutSteps, op, env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig, pause: bool = False) -> bool:
    fill_missing(steps, op, env, plan, lb, boot)
    if not plan.replace:
        return False
    role, deadlines, rollout = plan.role, steps.spec.deadlines(env), steps.spec.rollout(env)
    old_group = [row for row in steps.store.servers(env, role) if row.in_service]
    steps.retire_standby(op, env, role, lb)  # only one previous group is kept
    steps.reporter.info(f"{role}: blue-green: launching a group of {plan.desired} beside the {len(old_group)} serving")
    new_group = steps.launch_group(op, env, role, boot, plan.desired)
    _stage(steps, op, env, new_group, lb)
    _switch(steps, op, env, lb, enable=new_group, disable=old_group, gate="blue-green switch")
    until = utcnow() + timedelta(seconds=rollout.keep_previous)
    for row in old_group:
        steps.store.update_server(row.id, state="standby", in_service=False, standby_until=until)
    for row in new_group:
        op.note("launched", row.id)
    _wait_sessions_gone(steps, op, env, lb, old_group, deadlines.drain)
    steps.reporter.info(f"{role}: switched to {len(new_group)} new servers; the previous group stands by until {until:%H:%M:%S} UTC")
    return False


def describe(plan: RolePlan, desired: int, rollout: RolloutSpec) -> list[str]:
    if not plan.replace:
        return []
    return [
        f"launch a new group of {desired}, gate and warm it, stage it in the balancer",
        f"switch all traffic to it in one step; keep the previous group for {rollout.keep_previous:g}s",
    ]


def switch_back(steps: RolloutSteps, op, env: str, role: str, lb: LoadBalancerRow) -> list[ServerRow] | None:
    """Rollback to the kept group at once: the servers it took out of service, draining (the
    caller retires them, once every role has switched); None when no kept group can serve."""
    standby = [row for row in steps.store.servers(env, role) if row.state == "standby"]
    if not standby:
        return None
    members = steps.lbs.members(lb.handle_data)
    if not all(steps.compute.is_alive(r.handle_data) and members.get(r.id) and members[r.id].check_ok for r in standby):
        return None
    current = [row for row in steps.store.servers(env, role) if row.in_service]
    steps.reporter.info(f"{role}: switching back to {len(standby)} servers of the previous group")
    _switch(steps, op, env, lb, enable=standby, disable=current, gate="switch back")
    for row in current:
        steps.store.update_server(row.id, state="draining", in_service=False)
    return current


def _stage(steps: RolloutSteps, op, env: str, rows: list[ServerRow], lb: LoadBalancerRow) -> None:
    """Members checked by the balancer but given no traffic yet; all or nothing."""
    deadline = Deadline(steps.spec.deadlines(env).swap, f"the {rows[0].role} load balancer to check the new group")
    tls_port = steps.spec.roles[rows[0].role].tls_port
    try:
        with op.phase("stage"):
            for row in rows:
                steps.lbs.add_member(lb.handle_data, row.id, row.address, row.port, tls_port, standby=True)
                steps.store.update_server(row.id, state="staged")
            steps.poll(deadline, lambda: _all(steps, lb, rows, "standing_by"), interval=0.05, max_interval=0.1)
    except BaseException as exc:
        steps.discard(op, env, lb, rows)
        if not isinstance(exc, Exception):
            raise
        raise GateFailed(rows[0].id, "load balancer", f"the new group was not checked healthy: {exc}") from None


def _all(steps: RolloutSteps, lb: LoadBalancerRow, rows: list[ServerRow], state: str) -> bool:
    for row in rows:
        steps.check_alive(row, "load balancer")
    members = steps.lbs.members(lb.handle_data)
    return all(row.id in members and getattr(members[row.id], state) for row in rows)


def _switch(steps: RolloutSteps, op, env: str, lb: LoadBalancerRow, enable: list[ServerRow], disable: list[ServerRow], gate: str) -> None:
    """Traffic to `enable` in one step; back to `disable` if the new side does not come UP."""
    deadline = Deadline(steps.spec.deadlines(env).swap, f"{gate}: the new side to be UP")
    with op.phase("swap"):
        steps.switch(lb, enable=[r.id for r in enable], disable=[r.id for r in disable])
        try:
            steps.poll(deadline, lambda: _all(steps, lb, enable, "up"), interval=0.02, max_interval=0.05)
        except BaseException as exc:
            try:
                steps.switch(lb, enable=[r.id for r in disable], disable=[r.id for r in enable])
            finally:
                steps.discard(op, env, lb, enable)
            if not isinstance(exc, Exception):
                raise
            raise GateFailed(enable[0].id, "load balancer", f"{gate} undone: {exc}") from None
    for row in enable:
        steps.store.update_server(row.id, state="in_service", in_service=True, standby_until=None, serving_since=utcnow())


def _wait_sessions_gone(steps: RolloutSteps, op, env: str, lb: LoadBalancerRow, rows: list[ServerRow], seconds: float) -> None:
    ids = {row.id for row in rows}
    with op.phase("drain"):
        try:
            steps.poll(
                Deadline(seconds, "sessions on the previous group to reach zero"),
                lambda: all(m.sessions == 0 for name, m in steps.lbs.members(lb.handle_data).items() if name in ids),
                interval=0.02,
                max_interval=0.2,
            )
        except DeadlineExceeded as exc:
            steps.reporter.info(f"{rows[0].role}: {exc}; going on")
