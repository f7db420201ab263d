"""The OpenStack compute driver, through openstacksdk: images in Glance, servers in Nova.

- Each server gets a Neutron port Phoenix makes first (its address is known at once, and
  the port carries the role's security groups and the tags), then the Nova server on that
  port, in the role's server group (soft anti-affinity: spread over hosts where the cloud
  can), with the rendered cloud-init user-data plus a last part that starts the image's
  `start` command (a config drive when the clouds.yaml entry says `config_drive: true`).
- Nova servers carry metadata `phoenix:project`, `phoenix:env`, `phoenix:role`,
  `phoenix:server`, `phoenix:fingerprint`, `phoenix:operation`; ports and security groups
  Neutron tags `phoenix:env=ci`, ...; `discover` finds by them what the state store lost.
- A retried launch never makes two servers: the server's name holds its Phoenix id and is
  looked up before a create, and so is its port."""

from __future__ import annotations

import base64
import time
from pathlib import Path

from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from ...excerpt import error_lines
from ...spec import PlacementSpec, ProviderSpec
from ...boot.userdata import USERDATA_LIMIT
from ..cloud_init import with_start  # the same cloud-init start part on every cloud
from ..base import ComputeDriver, ImageSample, Launched, LaunchRequest, LogExcerpt, checker
from .api import TAG, OpenStack, OpenStackError, tag_list
from .images import PROPERTY, OpenStackImages

LIVE = ("BUILD", "ACTIVE", "REBUILD", "REBOOT", "HARD_REBOOT", "MIGRATING", "RESIZE", "VERIFY_RESIZE")


class OpenStackCompute(OpenStackImages, ComputeDriver):
    """Images are Glance images; servers are Nova servers on ports Phoenix makes."""

    name = "openstack"
    capabilities = frozenset({"image_refs"})

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        super().__init__(workdir, project, settings)
        self.os = OpenStack.of(self.settings)
        self._refs: dict[str, str] = {}  # image reference -> image id (resolved once per command)

    @property
    def poll_interval(self) -> float:
        return 0.05 if self.os.fast else 2.0

    def _tags(self, **extra: str) -> dict[str, str]:
        return {f"{TAG}project": self.project, **{f"{TAG}{k}": v for k, v in extra.items()}}

    def _prefix(self, env: str) -> str:
        return f"phoenix-{self.project}-{env}-"

    def _config_drive(self) -> dict:
        return {"config_drive": True} if self.os.conn.config.config.get("config_drive") else {}

    def _flavor(self, placement: PlacementSpec | None):
        wanted = (placement.flavor if placement else None) or self.settings.flavor
        if not wanted:
            raise PhoenixError("provider openstack: name a flavour (provider.flavor, or placement.flavor)")
        flavor = self.os.call(f"find flavour {wanted}", self.os.conn.compute.find_flavor, wanted)
        if flavor is None:
            raise PhoenixError(f"no flavour {wanted!r} in this cloud")
        return flavor

    # --- servers ------------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Launched:
        name = f"{self._prefix(request.env)}{request.server_id}"
        tags = self._tags(env=request.env, role=request.role, server=request.server_id, **request.tags)
        port = self._port(name, request, tags)
        address = port.fixed_ips[0]["ip_address"]
        existing = self._servers(f"^{name}$")
        if existing:  # a retried launch: the first one made it
            return Launched(address, request.port, {"server_id": existing[0].id, "port_id": port.id, "launched": time.time()})
        userdata = with_start(request.userdata, request.command, f"{request.server_id}@{request.tags.get('release', '')}")  # the journal's tag: what rsyslog ships by
        server = self.os.call(
            f"create server {name}", self.os.conn.compute.create_server,
            name=name, image_id=request.image_location, flavor_id=self._flavor(request.placement).id,
            networks=[{"port": port.id}], user_data=base64.b64encode(userdata).decode(), metadata=tags,
            scheduler_hints={"group": self._server_group(request.env, request.role)}, **self._config_drive(),
        )
        return Launched(address, request.port, {"server_id": server.id, "port_id": port.id, "launched": time.time()})

    def _port(self, name: str, request: LaunchRequest, tags: dict[str, str]):
        net = self.os.conn.network
        found = self.os.call("list ports", lambda: list(net.ports(name=name)))
        if found:
            return found[0]
        network = self.os.network(request.placement.networks)[0]
        groups = self._security_groups(request, network)
        wanted = tag_list({k: v for k, v in tags.items() if k != f"{TAG}fingerprint"})
        port = self.os.call(f"create port {name}", net.create_port, name=name, network_id=network.id, security_group_ids=groups, tags=wanted)
        if set(wanted) - set(port.tags or []):  # a Neutron without tags at creation: tag it now
            self.os.call(f"tag port {name}", net.set_tags, port, wanted)
        return port

    def _security_groups(self, request: LaunchRequest, network) -> list[str]:
        """The placement's groups, else the role's own: its ports open to the servers' network
        (balancers and their health monitors), and to everyone for a public floating IP."""
        net = self.os.conn.network
        if request.placement.security_groups:
            ids = []
            for wanted in request.placement.security_groups:
                group = self.os.call(f"find security group {wanted}", net.find_security_group, wanted)
                if group is None:
                    raise PhoenixError(f"no security group {wanted!r} in this project (placement.security_groups)")
                ids.append(group.id)
            return ids
        cidrs = [self.os.call("show subnet", net.get_subnet, s).cidr for s in network.subnet_ids]
        if request.discovery.type == "floating_ip" and request.discovery.public:
            cidrs.append("0.0.0.0/0")
        tags = self._tags(env=request.env, role=request.role, part="servers")
        name = f"phoenix-{self.project}-{request.env}-{request.role}"
        with self.os.lock_for(name):  # servers of a role launch side by side: one makes the group
            found = self.os.tagged("security groups", net.security_groups, tags)
            group = found[0] if found else self.os.call(f"create security group {name}", net.create_security_group,
                                                        name=name, description=f"Phoenix: {name}", tags=tag_list(tags))
            if not found and not group.tags:
                self.os.call(f"tag security group {name}", net.set_tags, group, tag_list(tags))
            for port in [p for p in (request.port, request.tls_port) if p]:
                for cidr in cidrs:
                    try:
                        self.os.call(f"open port {port} of {name}", net.create_security_group_rule, security_group_id=group.id,
                                     direction="ingress", ethertype="IPv4", protocol="tcp", port_range_min=port, port_range_max=port,
                                     remote_ip_prefix=cidr)
                    except OpenStackError as exc:
                        if exc.status != 409:  # the rule exists already
                            raise
        return [group.id]

    def _group_prefix(self, env: str) -> str:
        """Server groups carry no tags: their names say whose they are (colons: `ci` never
        takes `ci-legacy`'s)."""
        return f"phoenix:{self.project}:{env}:"

    def _server_group(self, env: str, role: str) -> str:
        """The role's server group (soft anti-affinity), found by name or made."""
        name = f"{self._group_prefix(env)}{role}"
        compute = self.os.conn.compute
        with self.os.lock_for(f"server-group {name}"):
            found = [g for g in self.os.call("list server groups", lambda: list(compute.server_groups())) if g.name == name]
            if found:
                return found[0].id
            return self.os.call(f"create server group {name}", compute.create_server_group, name=name, policy="soft-anti-affinity").id

    def _servers(self, name_pattern: str) -> list:
        return [s for s in self.os.call("list servers", lambda: list(self.os.conn.compute.servers(name=name_pattern)))
                if s.metadata.get(f"{TAG}project") == self.project and s.status in LIVE + ("SHUTOFF", "ERROR")]

    def _status(self, handle: dict) -> str:
        server_id = handle.get("server_id")
        if not server_id:
            return "unknown"
        server = self.os.found(f"show server {server_id}", self.os.conn.compute.get_server, server_id)
        return server.status if server else "gone"

    def _wait_status(self, handle: dict, wanted: set[str], deadline: Deadline, what: str) -> None:
        seen = ""

        def arrived() -> bool:
            nonlocal seen
            seen = self._status(handle)
            if seen in ({"ERROR", "DELETED", "gone"} - wanted):
                raise PhoenixError(f"{what} is {seen}, waiting for it to be {' or '.join(sorted(wanted))}")
            return seen in wanted

        try:
            self.os.wait(arrived, deadline)
        except DeadlineExceeded:
            raise DeadlineExceeded(f"{what} still {seen} after {deadline.seconds:g}s (waiting for {' or '.join(sorted(wanted))})") from None

    def is_alive(self, handle: dict) -> bool:
        return self._status(handle) in LIVE

    def listening(self, handle: dict, address: str, port: int) -> bool:
        if self.reaches_servers:
            return super().listening(handle, address, port)
        return self._status(handle) == "ACTIVE"  # the balancer's own check comes next

    def health(self, handle: dict, address: str, port: int, path: str, timeout: float) -> str:
        if self.reaches_servers:
            return super().health(handle, address, port, path, timeout)
        return ""  # not reachable from here: the balancer's health monitor is the gate

    def _delete_server(self, server_id: str) -> None:
        self.os.call(f"delete server {server_id}", self.os.conn.compute.delete_server, server_id, ignore_missing=True)

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        if handle.get("server_id"):
            self._delete_server(handle["server_id"])
            self._wait_status(handle, {"gone", "DELETED"}, deadline, f"server {handle['server_id']}")
        if handle.get("port_id"):
            self._delete_port(handle["port_id"], deadline)

    def _delete_port(self, port_id: str, deadline: Deadline) -> None:
        def deleted() -> bool:
            try:
                self.os.call(f"delete port {port_id}", self.os.conn.network.delete_port, port_id, ignore_missing=True)
            except OpenStackError as exc:
                if exc.status == 409:  # Nova lets go of it a moment after the server is gone
                    return False
                raise
            return True

        self.os.wait(deleted, deadline, real_interval=1)

    def terminate(self, handle: dict) -> None:
        self._delete_server(handle["server_id"])

    def discover(self, env: str) -> dict[str, dict]:
        found = {}
        ports = {p.name: p.id for p in self.os.tagged("ports", self.os.conn.network.ports, self._tags(env=env))}
        for server in self._servers(f"^{self._prefix(env)}"):
            meta = server.metadata
            if meta.get(f"{TAG}env") == env and meta.get(f"{TAG}server"):
                found[meta[f"{TAG}server"]] = {"server_id": server.id, "port_id": ports.get(server.name), "launched": 0}
        return found

    def teardown(self, env: str, deadline: Deadline) -> list[str]:
        """Ports left without a server (a launch that died before its server), the roles'
        security groups and server groups."""
        net, removed = self.os.conn.network, []
        for port in self.os.tagged("ports", net.ports, self._tags(env=env)):
            if not port.device_id:
                self._delete_port(port.id, deadline)
                removed.append(f"port {port.id} ({port.name})")
        for group in self.os.tagged("security groups", net.security_groups, self._tags(env=env, part="servers")):
            self._delete_group(group.id, deadline)
            removed.append(f"security group {group.id} ({group.name})")
        for group in self.os.call("list server groups", lambda: list(self.os.conn.compute.server_groups())):
            if (group.name or "").startswith(self._group_prefix(env)):
                self.os.call(f"delete server group {group.name}", self.os.conn.compute.delete_server_group, group.id, ignore_missing=True)
                removed.append(f"server group {group.id} ({group.name})")
        return removed

    def _delete_group(self, group_id: str, deadline: Deadline) -> None:
        def deleted() -> bool:
            try:
                self.os.call(f"delete security group {group_id}", self.os.conn.network.delete_security_group, group_id, ignore_missing=True)
            except OpenStackError as exc:
                if exc.status == 409:  # a port of a server being deleted still holds it
                    return False
                raise
            return True

        self.os.wait(deleted, deadline, real_interval=1)

    def describe(self, handle: dict) -> dict:
        return {"server": handle.get("server_id"), "port": handle.get("port_id")}

    def label(self, handle: dict) -> str:
        return f"server {handle.get('server_id')}"

    def log_excerpt(self, handle: dict) -> LogExcerpt | None:
        """The server's console log (cloud-init and its boot commands); the server's own output
        is in its journal."""
        server_id = handle.get("server_id")
        if not server_id:
            return None
        source = f"the console log of server {server_id} (the server's own output: journalctl -u phoenix-server on it)"
        try:
            output = self.os.call("read the console", self.os.conn.compute.get_server_console_output, server_id).get("output") or ""
        except PhoenixError:
            output = ""
        return LogExcerpt(source, tuple(error_lines(output)))

    # --- doctor -------------------------------------------------------------------------------
    def capability_report(self, probe: bool, deadline: Deadline, sample: ImageSample | None = None) -> list[dict]:
        report: list[dict] = []
        check = checker(report)
        check("account", lambda: f"project {self.os.call('read the project', lambda: self.os.conn.current_project.name)}, "
              f"region {self.os.conn.config.get_region_name() or '-'}; catalogue: {', '.join(sorted(self.os.services()))}")
        check("network", lambda: f"network {self.os.network(None)[0].name}; floating IPs from {self.os.external_network().name}")
        check("images", lambda: f"{len(self._own_images())} of this project's images; createImage by `bake`")
        check("flavour", lambda: f"{self._flavor(None).name}" if self.settings.flavor else "none by default (placement.flavor names it)")
        check("user-data", lambda: f"cloud-init user-data up to {USERDATA_LIMIT} bytes (gzipped when larger)")
        if probe:
            report += self._probe(deadline, sample)
        return report

    def _own_images(self) -> list:
        return [i for i in self.os.call("list images", lambda: list(self.os.conn.image.images()))
                if (i.properties or {}).get(f"{PROPERTY}project") == self.project]

    def _probe(self, deadline: Deadline, sample: ImageSample | None) -> list[dict]:
        """Time what decides how fast a change reaches users: launching a server (from the
        spec's first image's base) and making an image of it."""
        ref = sample and (sample.recipe.base or sample.recipe.prebuilt)
        if not ref:
            return [{"capability": "probe", "ok": False, "detail": "no image of the spec names a base to launch from"}]
        base = self.resolve(ref, sample.project_dir)
        network = self.os.network(None)[0]
        started = time.monotonic()
        server = self.os.call("launch the probe", self.os.conn.compute.create_server, name=f"phoenix-doctor-{self.project}", image_id=base,
                              flavor_id=self._flavor(None).id, networks=[{"uuid": network.id}], metadata=self._tags(probe="doctor"))
        results, image = [], None
        try:
            self._wait_status({"server_id": server.id}, {"ACTIVE"}, deadline, f"probe server {server.id}")
            results.append({"capability": "probe: launch", "ok": True, "detail": "a server from create to ACTIVE", "seconds": round(time.monotonic() - started, 3)})
            started = time.monotonic()
            image = self.os.call("snapshot the probe", self.os.conn.compute.create_server_image, server.id, f"phoenix-doctor-{int(time.time())}",
                                 metadata={f"{PROPERTY}probe": "doctor"})
            self._wait_image(image.id, deadline)
            results.append({"capability": "probe: image", "ok": True, "detail": "createImage until active", "seconds": round(time.monotonic() - started, 3)})
        finally:
            if image is not None:
                self._forget_image(image.id)
            self._delete_server(server.id)
        return results

