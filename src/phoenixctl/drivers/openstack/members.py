"""Members of a role's way in on OpenStack: Octavia pool members (ONLINE, DRAINING at weight
0, gone), or the port a floating IP points at. A part of OpenStackLoadBalancers.

Octavia has no draining state of its own: retiring sets the member's weight to 0 (no new
connections), waits for the balancer's open connections (Octavia counts them per balancer,
not per member, so any open connection holds the drain) or the drain deadline, then deletes
the member."""

from __future__ import annotations

from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from .api import TAG, OpenStackError, tag_dict
from ..base import MemberCounters, MemberState

CHANGE_SECONDS = 600.0  # a change Octavia keeps pending longer than this is stuck
STATUS = {"ONLINE": "UP", "DRAINING": "DRAIN", "NO_MONITOR": "UP", "OFFLINE": "DOWN", "ERROR": "DOWN", "DEGRADED": "DOWN"}
ORDER = ["DRAIN", "DOWN (pending)", "DOWN", "UP"]  # worst first


class OpenStackMembers:
    """Adding, watching and removing members (mixed into OpenStackLoadBalancers)."""

    def _settled(self, handle: dict, deadline: Deadline) -> None:
        """Wait until the balancer takes changes again (ACTIVE); ERROR fails at once."""
        lb = self.os.conn.load_balancer

        def active() -> bool:
            status = self.os.call("show load balancer", lb.get_load_balancer, handle["lb_id"]).provisioning_status
            if status == "ERROR":
                raise PhoenixError(f"load balancer {handle['lb_id']} is in ERROR (Octavia could not apply a change)")
            return status == "ACTIVE"

        self.os.wait(active, deadline)

    def _change(self, handle: dict, deadline: Deadline, what: str, function, *args, gone_ok: bool = False, **kwargs):
        """One Octavia change: after the balancer is ACTIVE, and again on 409 Conflict (another
        change made it PENDING_* meanwhile), until the deadline."""
        result = []

        def applied() -> bool:
            try:
                self._settled(handle, deadline)
            except OpenStackError as exc:
                if gone_ok and exc.status == 404:
                    return True
                raise
            try:
                result.append(self.os.call(what, function, *args, **kwargs))
            except OpenStackError as exc:
                if exc.status == 409:
                    return False
                if gone_ok and exc.status == 404:
                    return True
                raise
            return True

        try:
            self.os.wait(applied, deadline)
        except DeadlineExceeded:
            raise DeadlineExceeded(f"{what}: load balancer {handle['lb_id']} still PENDING after {deadline.seconds:g}s") from None
        return result[0] if result else None

    def _found(self, pool_id: str, name: str):
        found = self.os.call("list members", lambda: list(self.os.conn.load_balancer.members(pool_id, name=name)))
        return found[0] if found else None

    def add_member(
        self, handle: dict, name: str, address: str, port: int, tls_port: int | None = None, standby: bool = False, server: dict | None = None
    ) -> None:
        if standby:
            raise PhoenixError("provider openstack keeps no standby members")
        if handle["kind"] == "floating_ip":
            self._move_address(handle, (server or {}).get("port_id") or self._port_of(name))
            return
        deadline = Deadline(CHANGE_SECONDS, f"member {name} to be added")
        for pool, pool_port, check_port in handle["pools"]:
            if self._found(pool, name) is None:  # a retried add adds nothing twice
                extra = {"monitor_port": check_port} if pool_port != check_port else {}
                self._change(handle, deadline, f"add member {name}", self.os.conn.load_balancer.create_member, pool, name=name,
                             address=address, protocol_port=pool_port, subnet_id=handle.get("subnet_id"), weight=1, **extra)

    def _port_of(self, name: str) -> str:
        ports = self.os.call("list ports", lambda: list(self.os.conn.network.ports(tags=f"{TAG}server={name}")))
        if not ports:
            raise PhoenixError(f"no port is tagged {TAG}server={name}")
        return ports[0].id

    def _move_address(self, handle: dict, port_id: str) -> None:
        net = self.os.conn.network
        fip = self.os.call("show floating IP", net.get_ip, handle["floating_ip_id"])
        if fip.port_id and fip.port_id != port_id:
            self._previous_holder[fip.id] = fip.port_id  # where the address goes back if this one fails
        self.os.call("move the floating IP", net.update_ip, fip, port_id=port_id)

    def _holder(self, handle: dict) -> dict[str, MemberState]:
        net = self.os.conn.network
        fip = self.os.call("show floating IP", net.get_ip, handle["floating_ip_id"])
        if not fip.port_id:
            return {}
        port = self.os.found("show port", net.get_port, fip.port_id)
        server = tag_dict(port.tags).get(f"{TAG}server") if port else None
        return {server: MemberState("UP", True, 0)} if server else {}  # gated before the move

    def members(self, handle: dict) -> dict[str, MemberState]:
        """Per server: UP only when ONLINE in every pool of the role (HTTP and TLS)."""
        if handle["kind"] == "floating_ip":
            return self._holder(handle)
        seen: dict[str, list] = {}
        for pool, _, _ in handle["pools"]:
            for member in self.os.call("list members", lambda: list(self.os.conn.load_balancer.members(pool))):
                seen.setdefault(member.name, []).append(member)
        return {name: self._state(handle, found) for name, found in seen.items() if name}

    def member(self, handle: dict, name: str) -> MemberState | None:
        if handle["kind"] == "floating_ip":
            return self._holder(handle).get(name)
        found = [m for m in (self._found(pool, name) for pool, _, _ in handle["pools"]) if m is not None]
        return self._state(handle, found) if found else None

    def _state(self, handle: dict, found: list) -> MemberState:
        states = []
        for member in found:
            if member.provisioning_status == "PENDING_CREATE":
                states.append("DOWN (pending)")
            elif member.weight == 0:
                states.append("DRAIN")
            else:
                states.append(STATUS.get(member.operating_status, "DOWN"))
        if len(found) < len(handle["pools"]) and all(s == "UP" for s in states):
            states.append("DOWN (pending)")  # in some pools only, so far
        worst = min(states, key=ORDER.index)
        sessions = self._open_connections(handle) if worst == "DRAIN" else 0
        healthy = all(m.operating_status in ("ONLINE", "DRAINING", "NO_MONITOR") for m in found)
        return MemberState(worst, healthy, sessions)

    def _open_connections(self, handle: dict) -> int:
        stats = self.os.call("read the balancer's statistics", self.os.conn.load_balancer.get_load_balancer_statistics, handle["lb_id"])
        return int(stats.active_connections or 0)

    def drain_member(self, handle: dict, name: str) -> None:
        if handle["kind"] == "floating_ip":
            return  # the address moves only when the new server passed its gates: nothing to drain
        deadline = Deadline(CHANGE_SECONDS, f"member {name} to be drained")
        for pool, _, _ in handle["pools"]:
            member = self._found(pool, name)
            if member is not None and member.weight != 0:
                self._change(handle, deadline, f"drain member {name}", self.os.conn.load_balancer.update_member, member, pool, weight=0)

    def remove_member(self, handle: dict, name: str, deadline: Deadline) -> None:
        if handle["kind"] == "floating_ip":
            self._release_holder(handle, name)
            return
        for pool, _, _ in handle["pools"]:
            member = self._found(pool, name)
            if member is not None:
                self._change(handle, deadline, f"remove member {name}", self.os.conn.load_balancer.delete_member, member, pool,
                             ignore_missing=True, gone_ok=True)
        try:
            self.os.wait(lambda: all(self._found(pool, name) is None for pool, _, _ in handle["pools"]), deadline)
        except DeadlineExceeded:
            pass  # Octavia still deleting it: deleting the server ends what is left

    def _release_holder(self, handle: dict, name: str) -> None:
        """The floating IP leaves this server: back to the one it moved from (a failed new
        server), else nowhere."""
        net = self.os.conn.network
        fip = self.os.call("show floating IP", net.get_ip, handle["floating_ip_id"])
        if not fip.port_id:
            return
        holder = tag_dict(self.os.call("show port", net.get_port, fip.port_id).tags).get(f"{TAG}server")
        if holder != name:
            return
        previous = self._previous_holder.pop(fip.id, None)
        if previous and self._port_in_use(previous):
            self.os.call("move the floating IP back", net.update_ip, fip, port_id=previous)
        else:
            self.os.call("detach the floating IP", net.update_ip, fip, port_id=None)

    def _port_in_use(self, port_id: str) -> bool:
        port = self.os.found("show port", self.os.conn.network.get_port, port_id)
        return bool(port and port.device_id)

    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        raise PhoenixError("provider openstack keeps no standby members to switch to")

    def counters(self, handle: dict) -> dict[str, MemberCounters]:
        raise PhoenixError("provider openstack does not count requests per member")
