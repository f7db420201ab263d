"""Ways in to a role on OpenStack: an Octavia load balancer or a Neutron floating IP, and a
Designate recordset on either.

An Octavia balancer per role and environment: a listener per port (HTTP on the role's
port, TCP for TLS passed through), each with its pool and an HTTP health monitor of the
role's health path; `public` gives its VIP a floating IP. Octavia refuses changes while a
balancer is PENDING_*: every change waits for it to be ACTIVE and is tried again on a 409."""

from __future__ import annotations

from pathlib import Path

from ...deadline import Deadline
from ...errors import PhoenixError
from ...spec import ProviderSpec
from .api import TAG, OpenStack, missing_services, short_name, tag_dict, tag_list
from .members import OpenStackMembers
from ..base import BalancerRequest, Endpoint, LoadBalancerDriver, checker, whole_or_nothing

CREATE_SECONDS = 900.0  # an amphora can take minutes to boot


class OpenStackLoadBalancers(OpenStackMembers, LoadBalancerDriver):
    """Per role: an Octavia load balancer or a floating IP; optionally a Designate recordset."""

    name = "openstack"
    assigns_addresses = True
    capabilities = frozenset({"floating_ip", "dns"})

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        super().__init__(workdir, project, settings)
        self.os = OpenStack.of(self.settings)
        self._previous_holder: dict[str, str] = {}  # floating IP id -> the port it moved from

    @classmethod
    def unavailable(cls, settings: ProviderSpec) -> dict[str, str]:
        """What this cloud's catalogue lacks, for `validate`."""
        return missing_services(settings)

    @property
    def poll_interval(self) -> float:
        return 0.05 if self.os.fast else 2.0  # a member's status moves once per health-monitor delay

    def _tags(self, env: str, role: str, part: str) -> dict[str, str]:
        return {f"{TAG}project": self.project, f"{TAG}env": env, f"{TAG}role": role, f"{TAG}part": part}

    # --- creating ---------------------------------------------------------------------------
    def create(self, request: BalancerRequest) -> Endpoint:
        handle: dict = {"kind": request.kind, "env": request.env, "role": request.role}
        return whole_or_nothing(self, handle, f"the {request.role} balancer", lambda: self._create(request, handle))

    def _create(self, request: BalancerRequest, handle: dict) -> Endpoint:
        zone = self._zone(request.dns_name) if request.dns_name else None  # before anything is made
        if request.kind == "floating_ip":
            fip = self._floating_ip(self._tags(request.env, request.role, "floating-ip"), f"Phoenix: {request.env}/{request.role}")
            handle.update(floating_ip_id=fip.id, address=fip.floating_ip_address)
            address = fip.floating_ip_address
        else:
            address = self._create_balancer(request, handle)
        if zone:
            handle["record"] = self._upsert_record(zone, request.dns_name, address, self._note(request.env, request.role))
        return Endpoint(address, request.port, handle)

    def _floating_ip(self, tags: dict[str, str], description: str, port_id: str | None = None):
        net = self.os.conn.network
        external = self.os.external_network()
        extra = {"port_id": port_id} if port_id else {}
        fip = self.os.call("allocate a floating IP", net.create_ip, floating_network_id=external.id, description=description,
                           tags=tag_list(tags), **extra)
        if set(tag_list(tags)) - set(fip.tags or []):  # a Neutron without tags at creation: tag it now
            self.os.call("tag the floating IP", net.set_tags, fip, tag_list(tags))
        return fip

    def _create_balancer(self, request: BalancerRequest, handle: dict) -> str:
        """One fully populated create (the balancer with its listeners, pools and monitors: one
        amphora build instead of a PENDING_UPDATE per piece), then each piece checked, and made
        one by one where a balancer found again lacks it."""
        lb = self.os.conn.load_balancer
        network = self.os.network(request.placement.networks)[0]
        tags = tag_list(self._tags(request.env, request.role, "balancer"))
        name = short_name(self.project, request.env, request.role)
        pieces = {port: self._pieces(request, f"{name}-{port}", "HTTP" if port == request.port else "TCP", tags)  # TLS passes through as TCP
                  for port in [p for p in (request.port, request.tls_port) if p]}
        existing = [b for b in self.os.call("list load balancers", lambda: list(lb.load_balancers(name=name)))
                    if tag_dict(b.tags).get(f"{TAG}project") == self.project]
        balancer = existing[0] if existing else self.os.call(
            f"create load balancer {name}", lb.create_load_balancer, name=name, vip_subnet_id=network.subnet_ids[0],
            description=f"Phoenix: {request.env}/{request.role}", tags=tags, listeners=list(pieces.values()))
        handle.update(lb_id=balancer.id, vip=balancer.vip_address, subnet_id=network.subnet_ids[0], pools=[])
        deadline = Deadline(CREATE_SECONDS, f"load balancer {name} to be ACTIVE")
        self._settled(handle, deadline)
        for port, listener in pieces.items():
            handle["pools"].append([self._ensure_pieces(handle, deadline, listener), port, request.port])
        if request.public:
            fip = self._floating_ip(self._tags(request.env, request.role, "vip"), f"Phoenix: {request.env}/{request.role} balancer",
                                    port_id=balancer.vip_port_id)
            handle["vip_floating_ip_id"] = fip.id
            return fip.floating_ip_address
        return balancer.vip_address

    @staticmethod
    def _pieces(request: BalancerRequest, name: str, protocol: str, tags: list[str]) -> dict:
        """A listener with its pool and the pool's HTTP health monitor of the role's health path."""
        monitor = {"name": name, "type": "HTTP", "url_path": request.health_path, "expected_codes": "200-399",
                   "delay": 5, "timeout": 3, "max_retries": 2, "max_retries_down": 2}
        pool = {"name": name, "protocol": protocol, "lb_algorithm": "LEAST_CONNECTIONS", "tags": tags, "healthmonitor": monitor}
        return {"name": name, "protocol": protocol, "protocol_port": int(name.rsplit("-", 1)[1]), "tags": tags, "default_pool": pool}

    def _ensure_pieces(self, handle: dict, deadline: Deadline, listener: dict) -> str:
        """The pool id of a listener's pieces, each made where missing."""
        lb, name = self.os.conn.load_balancer, listener["name"]
        pool_spec = dict(listener["default_pool"])
        monitor_spec = pool_spec.pop("healthmonitor")
        pools = self.os.call("list pools", lambda: list(lb.pools(name=name)))  # the name is this role's alone
        pool = pools[0] if pools else self._change(handle, deadline, f"create pool {name}", lb.create_pool, loadbalancer_id=handle["lb_id"], **pool_spec)
        if not pool.health_monitor_id:
            self._change(handle, deadline, f"create health monitor {name}", lb.create_health_monitor, pool_id=pool.id, **monitor_spec)
        if not self.os.call("list listeners", lambda: list(lb.listeners(name=name))):
            self._change(handle, deadline, f"create listener {name}", lb.create_listener, loadbalancer_id=handle["lb_id"],
                         default_pool_id=pool.id, **{k: v for k, v in listener.items() if k != "default_pool"})
        return pool.id

    def _zone(self, name: str) -> str:
        """The Designate zone of a record name: the zone named after its parent domain."""
        zone_name = name.split(".", 1)[1].rstrip(".") + "."
        zones = self.os.call(f"find DNS zone {zone_name}", lambda: list(self.os.conn.dns.zones(name=zone_name)))
        if not zones:
            raise PhoenixError(f"DNS zone {zone_name.rstrip('.')} is not a Designate zone of this project (Phoenix never creates zones)")
        return zones[0].id

    def _note(self, env: str, role: str) -> str:
        """A record's description: Designate keeps no tags, so this says whose it is."""
        return f"Phoenix: {self.project}/{env}/{role}"

    def _upsert_record(self, zone: str, name: str, address: str, note: str) -> dict:
        dns, fqdn = self.os.conn.dns, name.rstrip(".") + "."
        found = self.os.call(f"find record {fqdn}", lambda: list(dns.recordsets(zone, name=fqdn, type="A")))
        if found:
            record = self.os.call(f"update record {fqdn}", dns.update_recordset, found[0], records=[address])
        else:
            record = self.os.call(f"create record {fqdn}", dns.create_recordset, zone, name=fqdn, type="A", records=[address], ttl=60,
                                  description=note)
        return {"zone": zone, "id": record.id, "name": fqdn}

    def capability_report(self) -> list[dict]:
        report: list[dict] = []
        check = checker(report)
        missing = missing_services(self.settings)

        def service(need: str, count):
            if need in missing:
                raise PhoenixError(missing[need])
            return count()

        def count(what: str, lister) -> int:
            return len(self.os.call(f"list {what}", lambda: list(lister())))

        check("load balancer", lambda: service("load_balancer", lambda: f"Octavia: {count('balancers', self.os.conn.load_balancer.load_balancers)} balancers"))
        check("floating IP", lambda: service("floating_ip", lambda: f"Neutron: {count('floating IPs', self.os.conn.network.ips)} floating IPs, "
                                                                    f"from {self.os.external_network().name}"))
        check("DNS", lambda: service("dns", lambda: f"Designate: {count('zones', self.os.conn.dns.zones)} zones"))
        return report

    # --- existence and removal ------------------------------------------------------------------
    def is_alive(self, handle: dict) -> bool:
        if handle["kind"] == "floating_ip":
            return bool(self.os.found("show floating IP", self.os.conn.network.get_ip, handle["floating_ip_id"]))
        balancer = self.os.found("show load balancer", self.os.conn.load_balancer.get_load_balancer, handle["lb_id"])
        return bool(balancer) and balancer.provisioning_status not in ("ERROR", "DELETED", "PENDING_DELETE")

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        record = handle.get("record")
        if record:
            self.os.call(f"delete record {record['name']}", self.os.conn.dns.delete_recordset, record["id"], record["zone"], ignore_missing=True)
        for key in ("floating_ip_id", "vip_floating_ip_id"):
            if handle.get(key):
                self.os.call("release the floating IP", self.os.conn.network.delete_ip, handle[key], ignore_missing=True)
        if handle.get("lb_id"):
            lb = self.os.conn.load_balancer
            self._change(handle, deadline, "delete the load balancer", lb.delete_load_balancer, handle["lb_id"], cascade=True, gone_ok=True)

            self.os.wait(lambda: self.os.found("show load balancer", lb.get_load_balancer, handle["lb_id"]) is None, deadline, real_interval=5)

    def discover(self, env: str) -> dict[str, dict]:
        """Balancers and floating IPs tagged for the environment, by role, as handles `destroy` understands."""
        found: dict[str, dict] = {}
        mine = {f"{TAG}project": self.project, f"{TAG}env": env}
        for balancer in self.os.tagged("load balancers", self.os.conn.load_balancer.load_balancers, mine):
            role = tag_dict(balancer.tags).get(f"{TAG}role", "?")
            found[role] = {"kind": "load_balancer", "env": env, "role": role, "lb_id": balancer.id, "pools": []}
        for fip in self.os.tagged("floating IPs", self.os.conn.network.ips, mine):
            tags = tag_dict(fip.tags)
            role = tags.get(f"{TAG}role", "?")
            if tags.get(f"{TAG}part") == "vip":  # a public balancer's address goes with its balancer
                found.setdefault(role, {"kind": "load_balancer", "env": env, "role": role, "pools": []})["vip_floating_ip_id"] = fip.id
            else:
                found[f"{role} (floating IP {fip.floating_ip_address})"] = {"kind": "floating_ip", "env": env, "role": role, "floating_ip_id": fip.id}
        for role, record in self._records(env).items():  # with the way in they name, or alone
            owner = next((h for h in found.values() if h["role"] == role), None)
            (owner or found.setdefault(role, {"kind": "load_balancer", "env": env, "role": role, "pools": []}))["record"] = record
        return found

    def _records(self, env: str) -> dict[str, dict]:
        """The environment's Designate records, by role, found by their description."""
        if "dns" not in self.os.services():
            return {}
        dns, prefix, records = self.os.conn.dns, self._note(env, ""), {}
        for zone in self.os.call("list DNS zones", lambda: list(dns.zones())):
            for record in self.os.call(f"list records of {zone.name}", lambda: list(dns.recordsets(zone))):
                if (record.description or "").startswith(prefix):
                    records[record.description[len(prefix):]] = {"zone": zone.id, "id": record.id, "name": record.name}
        return records
