"""Recovery after a crash: the record says what was under way, reality says what exists.

Every step of an operation is journaled in the state store before and after it happens
(server states: launching -> booting -> checking -> warming -> ready -> joining ->
in_service -> draining -> stopping -> destroyed). When a command finds an operation that
never finished (its `phoenix` process was killed), it puts things right before anything
else, always in the direction that keeps every role served:

- servers launched but never put into service are destroyed;
- a server caught joining is adopted when the balancer has it UP, else removed;
- a server caught draining is retired when the role is served without it, else returned
  to service;
- a server caught stopping is finished off;
- processes the record does not know (a launch killed before it was written down) are
  adopted when their row exists, destroyed otherwise;
- balancer members that point at nothing are removed;
- a role left serving more than its count finishes the interrupted replacement: the
  servers that operation put into service stay, the ones they were launched to replace
  (the others, oldest first) are drained and retired, so every role serves exactly its
  desired count and the plan has nothing left to do.
"""

from __future__ import annotations

from ..deadline import Deadline
from ..state import ServerRow
from .operation import Operation
from .part import Part

NEVER_SERVED = {"launching", "booting", "checking", "warming", "ready", "staged"}
MAY_BE_MEMBER = {"in_service", "standby", "joining"}


class Recovery(Part):
    """Bring the record and reality together after a crash."""

    def unfinished(self, env: str, current: str) -> list:
        return [op for op in self.store.operations(env, status="running") if op.id != current]


    def recover(self, op: Operation, env: str) -> list[str]:
        """Bring the record and reality together; returns what was found and done."""
        actions: list[str] = []
        interrupted_ids = set()
        for interrupted in self.unfinished(env, op.id):
            self.store.set_operation_status(interrupted.id, "interrupted", f"recovered by {op.id}")
            actions.append(f"operation {interrupted.id} ({interrupted.kind}) never finished: recovering")
            interrupted_ids.add(interrupted.id)
        stop = self.spec.deadlines(env).stop
        # Reality first: processes the record missed.
        discovered = self.compute.discover(env)
        rows = {row.id: row for row in self.store.servers(env)}  # a destroyed one's process is an orphan too
        for server_id, handle in discovered.items():
            row = rows.get(server_id)
            if row is None:
                self.compute.destroy(handle, Deadline(stop, f"orphan {server_id} to stop"))
                actions.append(f"{server_id}: {self.compute.label(handle)} unknown to the record (an orphan): destroyed")
            elif not self.compute.is_alive(row.handle_data):
                self.store.update_server(server_id, handle=self.compute.adopt(row.handle_data, handle))
                actions.append(f"{server_id}: its launch was not recorded but its {self.compute.label(handle)} runs: adopted")
        wanted = self.spec.environments[env].roles
        for lb_row in self.store.load_balancers(env):
            role = lb_row.role
            lb = self.engine.balancers.ensure(op, env, role) if role in wanted else lb_row
            if not self.lbs.is_alive(lb.handle_data):
                continue
            members = self.lbs.members(lb.handle_data)  # once for the role, again only after a change
            for row in self.store.servers(env, role):
                settled = self._settle(op, env, lb, row, members)
                if settled:
                    actions += settled
                    members = self.lbs.members(lb.handle_data)
            members = self.lbs.members(lb.handle_data)
            valid = {
                row.id for row in self.store.servers(env, role) if row.state in MAY_BE_MEMBER and self.compute.is_alive(row.handle_data)
            }
            for name in members:
                if name not in valid:
                    self.lbs.remove_member(lb.handle_data, name, Deadline(self.spec.deadlines(env).swap, f"removal of {name}"))
                    actions.append(f"{role}: balancer member {name} pointed at nothing: removed")
            if interrupted_ids and role in wanted:
                actions += self._finish_replacements(op, env, lb, wanted[role].count, interrupted_ids)
        return actions


    def _finish_replacements(self, op: Operation, env: str, lb, desired: int, interrupted: set[str]) -> list[str]:
        """An interrupted rotation leaves new servers in service beside the old ones they were
        launched to replace: retire those old ones (oldest first) down to the desired count.
        A paused canary serves beside the old servers on purpose: left alone."""
        paused = self.store.paused_operation(env)
        rows = self.store.servers(env, lb.role)
        if paused is not None and any(row.operation_id == paused.id for row in rows):
            return []
        serving = [row for row in rows if row.in_service and self.compute.is_alive(row.handle_data)]
        extra = len(serving) - desired
        if extra <= 0:
            return []
        replaced = sorted(serving, key=lambda row: (row.operation_id in interrupted, row.launched_at, row.id))[:extra]
        self.engine.lifecycle.retire_all(op, env, lb.role, [row.id for row in replaced], lb)
        return [f"{lb.role}: {row.id} was being replaced ({len(serving)} served, {desired} wanted): retired" for row in replaced]


    def _settle(self, op: Operation, env: str, lb, row: ServerRow, members: dict) -> list[str]:
        alive = self.compute.is_alive(row.handle_data)
        member = members.get(row.id)
        stop = self.spec.deadlines(env).stop

        def remove(reason: str) -> list[str]:
            self.lbs.remove_member(lb.handle_data, row.id, Deadline(self.spec.deadlines(env).swap, f"removal of {row.id}"))
            self.engine.lifecycle.destroy_server(op, self.store.server(row.id), stop, progress=False)
            return [f"{row.role}: {row.id} {reason}: destroyed"]

        if row.state == "updating":  # an in-place update, interrupted
            return [self.engine.in_place.resume(op, env, lb, row)]
        if row.state in NEVER_SERVED:
            return remove(f"was {row.state}, never put into service")
        if row.state == "stopping":
            return remove("was being destroyed")
        if not alive and row.state != "destroyed":
            return remove(f"was {row.state} but its process is gone")
        if row.state == "joining":
            if member is not None and member.up:
                self.store.update_server(row.id, state="in_service", in_service=True)
                return [f"{row.role}: {row.id} was joining and the balancer has it UP: adopted into service"]
            return remove("was joining but the balancer does not have it UP")
        if row.state == "draining":
            serving = [
                r.id for r in self.store.servers(env, row.role)
                if r.id != row.id and r.in_service and members.get(r.id) is not None and members[r.id].up
            ]
            desired = self.spec.environments[env].roles[row.role].count if row.role in self.spec.environments[env].roles else 0
            if len(serving) >= desired:
                self.engine.lifecycle.retire(op, env, row.role, row.id, lb)
                return [f"{row.role}: {row.id} was draining and the role is served without it: retired"]
            if "standby" in self.lbs.capabilities:  # drained members stay known to the balancer: send traffic again
                self.engine.lifecycle.switch(lb, enable=[row.id], disable=[])
            else:  # deregistered (a cloud target group): register it again
                self.lbs.add_member(lb.handle_data, row.id, row.address, row.port, self.spec.roles[row.role].tls_port, server=row.handle_data)
            self.poll(
                Deadline(self.spec.deadlines(env).swap, f"{row.id} to be UP again"),
                lambda: (member := self.lbs.members(lb.handle_data).get(row.id)) is not None and member.up, interval=0.05, max_interval=0.5,
            )
            self.store.update_server(row.id, state="in_service", in_service=True)
            return [f"{row.role}: {row.id} was draining and the role needs it: returned to service"]
        return []
