"""The environment's ways in: one balancer per role, made (side by side) or brought back with
its members; kept blue-green groups that expired; roles taken out of the spec."""

from __future__ import annotations

import json

from ..deadline import Deadline, DeadlineExceeded
from ..drivers.base import BalancerRequest
from ..state import LoadBalancerRow, utcnow
from .operation import Operation
from .part import Part


class Balancers(Part):
    """Load balancers (or floating IPs, DNS) of an environment's roles."""

    def ensure(self, op: Operation, env: str, role: str) -> LoadBalancerRow:
        row = self.store.load_balancer(env, role)
        if row and self.lbs.is_alive(row.handle_data):
            return row
        env_role = self.spec.environments[env].roles[role]
        role_spec = self.spec.roles[role]
        port, address = role_spec.port, None
        if env_role.lb_address:
            address, port = env_role.lb_address.rsplit(":", 1)
            port = int(port)
        elif row:
            address, port = row.address, row.port  # a balancer that died comes back where it was
        zone = self.spec.environments[env].dns_zone
        endpoint = self.lbs.create(
            BalancerRequest(
                env=env, role=role, port=port, health_path=role_spec.health.path, tls_port=role_spec.tls_port, address=address,
                kind=role_spec.discovery.type, public=role_spec.discovery.public,
                dns_name=f"{role_spec.discovery.dns}.{zone.rstrip('.')}" if role_spec.discovery.dns and zone else None,
                drain_seconds=self.spec.deadlines(env).drain, placement=self.spec.placement(env, role),
            )
        )
        handle, address, port = endpoint.handle, endpoint.address, endpoint.port
        row = LoadBalancerRow(env=env, role=role, address=address, port=port, handle=json.dumps(handle))
        self.store.save_load_balancer(row)
        self.reporter.info(f"{role_spec.discovery.type.replace('_', ' ')} {role} at {address}:{port}")
        # Members were in the dead balancer's memory only: whatever served must come back in.
        # A server that does not come UP is marked out of service for the plan to replace;
        # it is never destroyed here.
        tls_port = self.spec.roles[role].tls_port
        back = [s for s in self.store.servers(env, role) if s.in_service and self.compute.is_alive(s.handle_data)]
        back_ids = {s.id for s in back}
        for server in back:
            self.lbs.add_member(handle, server.id, server.address, server.port, tls_port, server=server.handle_data)
        try:
            self.poll(
                Deadline(self.spec.deadlines(env).swap, f"the {role} servers to be UP in the new balancer"),
                lambda: all(m.up for name, m in self.lbs.members(handle).items() if name in back_ids),
                interval=0.05, max_interval=0.5,
            )
        except DeadlineExceeded:
            members = self.lbs.members(handle)
            for server in back:
                if not members.get(server.id) or not members[server.id].up:
                    self.store.update_server(server.id, in_service=False)
        return row

    def expire_standby(self, op: Operation, env: str, lbs: dict[str, LoadBalancerRow]) -> None:
        """A kept blue-green group past its `keep_previous` is retired by the next command."""
        now = utcnow()
        for row in self.store.servers(env):
            if row.state == "standby" and row.standby_until and row.standby_until <= now and row.role in lbs:
                self.reporter.info(f"{row.role}: the kept group's {row.id} is past keep_previous; retiring it")
                self.engine.lifecycle.retire(op, env, row.role, row.id, lbs[row.role])

    def retire_removed_roles(self, op: Operation, env: str) -> None:
        """A role taken out of the environment's spec: retire its servers, stop its balancer."""
        wanted = set(self.spec.environments[env].roles)
        deadlines = self.spec.deadlines(env)
        for lb in self.store.load_balancers(env):
            if lb.role in wanted:
                continue
            servers = self.store.servers(env, lb.role)
            self.reporter.info(f"{lb.role}: no longer in environment {env}; retiring {len(servers)} server(s)")
            self.engine.lifecycle.retire_all(op, env, lb.role, [s.id for s in servers], lb)
            self.lbs.destroy(lb.handle_data, Deadline(deadlines.stop, f"stop of the {lb.role} load balancer"))
            self.store.delete_load_balancer(env, lb.role)
