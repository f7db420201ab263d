"""The OpenStack emulator's network side: Neutron (networks, subnets, ports, floating IPs,
security groups, tags), Octavia (balancers, listeners, pools, health monitors, members, with
their PENDING_* transitions and real HTTP health checks) and Designate (zones, recordsets).
A part of `openstack_emulator.Emulator`."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import aiohttp
from aiohttp import web

FIXED_PREFIX, FLOATING_PREFIX = "127.33", "127.34"  # outside the local provider's 127.64-253
OCTAVIA_KINDS = ("listeners", "pools", "healthmonitors", "members")


def error(status: int, message: str) -> web.HTTPException:
    """An OpenStack-shaped error answer (`{"NeutronError"|...: {"message"}}`, good enough for the SDK)."""
    body = json.dumps({"error": {"message": message, "code": status}, "faultstring": message, "message": message})
    return _http(status)(text=body, content_type="application/json")


def _http(status: int):
    return {400: web.HTTPBadRequest, 404: web.HTTPNotFound, 409: web.HTTPConflict}[status]


def new_id() -> str:
    return str(uuid.uuid4())


class NetworkServices:
    """Neutron, Octavia and Designate over the emulator's `db`."""

    def seed_network(self, zones: tuple[str, ...]) -> None:
        for name, prefix, external in (("private", FIXED_PREFIX, False), ("public", FLOATING_PREFIX, True)):
            network = {"id": new_id(), "name": name, "status": "ACTIVE", "router:external": external, "shared": False,
                       "admin_state_up": True, "subnets": [], "tags": [], "project_id": "p-demo", "mtu": 1500}
            subnet = {"id": new_id(), "name": f"{name}-subnet", "network_id": network["id"], "cidr": f"{prefix}.0.0/16",
                      "ip_version": 4, "gateway_ip": f"{prefix}.0.1", "enable_dhcp": True, "tags": [], "project_id": "p-demo"}
            network["subnets"].append(subnet["id"])
            self.db["networks"][network["id"]] = network
            self.db["subnets"][subnet["id"]] = subnet
        self.make_group("default", "the project's default group")
        for zone in zones:
            self.make_zone(zone)

    def make_zone(self, name: str) -> dict:
        zone = {"id": new_id(), "name": name.rstrip(".") + ".", "status": "ACTIVE", "email": "admin@" + name, "ttl": 3600,
                "type": "PRIMARY", "project_id": "p-demo"}
        self.db["zones"][zone["id"]] = zone
        return zone

    def _address(self, network_id: str) -> str:
        subnet = self.db["subnets"][self.db["networks"][network_id]["subnets"][0]]
        n = next(self.addresses)
        while n & 255 in (0, 255):
            n = next(self.addresses)
        return f"{subnet['cidr'].rsplit('.', 2)[0]}.{n >> 8 & 255}.{n & 255}"

    def make_port(self, network_id: str, name: str, groups: list[str], owner: str = "", tags: list | None = None) -> dict:
        network = self.db["networks"].get(network_id)
        if network is None:
            raise error(404, f"Network {network_id} could not be found.")
        port = {"id": new_id(), "name": name, "network_id": network_id, "status": "ACTIVE", "admin_state_up": True,
                "fixed_ips": [{"subnet_id": network["subnets"][0], "ip_address": self._address(network_id)}],
                "security_groups": groups, "device_id": "", "device_owner": owner, "tags": list(tags or []),
                "mac_address": "fa:16:3e:00:00:01", "project_id": "p-demo", "description": ""}
        self.db["ports"][port["id"]] = port
        return port

    def make_group(self, name: str, description: str = "", tags: list | None = None) -> dict:
        group = {"id": new_id(), "name": name, "description": description, "tags": list(tags or []), "project_id": "p-demo",
                 "security_group_rules": []}
        self.db["security_groups"][group["id"]] = group
        return group

    def group_by_name(self, name_or_id: str) -> dict:
        for group in self.db["security_groups"].values():
            if name_or_id in (group["id"], group["name"]):
                return group
        raise error(404, f"Security group {name_or_id} could not be found.")

    def open_ports(self, port_ids: list[str]) -> set[int]:
        """The TCP ports the security groups of these Neutron ports let in (small ranges only)."""
        opened = set()
        for port_id in port_ids:
            for group in self.db["ports"].get(port_id, {}).get("security_groups", []):
                for rule in self.db["security_group_rules"].values():
                    low, high = rule.get("port_range_min"), rule.get("port_range_max")
                    if rule["security_group_id"] == group and rule["direction"] == "ingress" and low and high and high - low < 16:
                        opened.update(range(low, high + 1))
        return opened

    # --- Neutron's REST shape: one generic collection handler per resource kind ---------------------
    def network_routes(self, router: web.UrlDispatcher) -> None:
        root = "/network/v2.0"
        router.add_get(root, self.network_version)
        router.add_get(root + "/", self.network_version)
        router.add_get(root + "/extensions", self.network_extensions)
        for kind, singular in (("networks", "network"), ("subnets", "subnet"), ("ports", "port"), ("floatingips", "floatingip"),
                               ("security-groups", "security_group"), ("security-group-rules", "security_group_rule")):
            table = kind.replace("-", "_")
            router.add_get(f"{root}/{kind}", self.neutron_list(table))
            router.add_get(f"{root}/{kind}/{{id}}", self.neutron_show(table, singular))
            router.add_post(f"{root}/{kind}", self.neutron_create(table, singular))
            router.add_put(f"{root}/{kind}/{{id}}", self.neutron_update(table, singular))
            router.add_delete(f"{root}/{kind}/{{id}}", self.neutron_delete(table))
            router.add_put(f"{root}/{kind}/{{id}}/tags", self.neutron_tags(table))
        self.octavia_routes(router, "/load-balancer/v2.0")
        self.designate_routes(router, "/dns/v2")

    async def network_version(self, request: web.Request) -> web.Response:
        return web.json_response({"resources": [{"name": n, "collection": n, "links": []} for n in ("network", "port", "floatingip")]})

    async def network_extensions(self, request: web.Request) -> web.Response:
        aliases = ("standard-attr-tag", "tag-creation", "security-group", "router", "dns-integration")
        return web.json_response({"extensions": [{"alias": a, "name": a, "description": a, "links": [], "updated": ""} for a in aliases]})

    def _row(self, table: str, item_id: str) -> dict:
        row = self.db[table].get(item_id)
        if row is None:
            raise error(404, f"{table[:-1]} {item_id} could not be found.")
        return row

    def neutron_list(self, table: str):
        async def handler(request: web.Request) -> web.Response:
            rows = list(self.db[table].values())
            for key, value in request.query.items():
                if key == "tags":
                    rows = [r for r in rows if set(value.split(",")) <= set(r.get("tags", []))]
                elif key not in ("limit", "marker", "fields", "sort_key", "sort_dir"):
                    rows = [r for r in rows if str(r.get(key)).lower() == value.lower()]
            return web.json_response({table: [_view(r) for r in rows]})

        return handler

    def neutron_show(self, table: str, singular: str):
        async def handler(request: web.Request) -> web.Response:
            return web.json_response({singular: _view(self._row(table, request.match_info["id"]))})

        return handler

    def neutron_create(self, table: str, singular: str):
        async def handler(request: web.Request) -> web.Response:
            body = (await request.json())[singular]
            if table == "ports":
                row = self.make_port(body["network_id"], body.get("name", ""), body.get("security_groups", []), tags=body.get("tags"))
                row["description"] = body.get("description", "")
            elif table == "security_groups":
                row = self.make_group(body["name"], body.get("description", ""), body.get("tags"))
            elif table == "security_group_rules":
                self._row("security_groups", body["security_group_id"])
                for rule in self.db["security_group_rules"].values():
                    if all(rule.get(k) == body.get(k) for k in ("security_group_id", "direction", "protocol", "port_range_min", "port_range_max", "remote_ip_prefix")):
                        raise error(409, f"Security group rule already exists. Rule id is {rule['id']}.")
                row = {"id": new_id(), "ethertype": "IPv4", "remote_group_id": None, "remote_ip_prefix": None, "protocol": None,
                       "port_range_min": None, "port_range_max": None, **body}
                self.db["security_group_rules"][row["id"]] = row
            elif table == "floatingips":
                network = self._row("networks", body["floating_network_id"])
                row = {"id": new_id(), "floating_network_id": network["id"], "floating_ip_address": self._address(network["id"]),
                       "port_id": None, "fixed_ip_address": None, "status": "DOWN", "tags": list(body.get("tags", [])),
                       "description": body.get("description", ""), "project_id": "p-demo"}
                self.db["floatingips"][row["id"]] = row
                if body.get("port_id"):
                    self._associate(row, body["port_id"])
            else:
                raise error(400, f"creating {table} is not modelled")
            return web.json_response({singular: _view(row)}, status=201)

        return handler

    def _associate(self, fip: dict, port_id: str | None) -> None:
        if port_id:
            port = self._row("ports", port_id)
            fip.update(port_id=port_id, fixed_ip_address=port["fixed_ips"][0]["ip_address"], status="ACTIVE")
        else:
            fip.update(port_id=None, fixed_ip_address=None, status="DOWN")

    def neutron_update(self, table: str, singular: str):
        async def handler(request: web.Request) -> web.Response:
            row, body = self._row(table, request.match_info["id"]), (await request.json())[singular]
            if table == "floatingips" and "port_id" in body:
                self._associate(row, body["port_id"])
            else:
                row.update({k: v for k, v in body.items() if k in ("name", "description", "security_groups", "admin_state_up")})
            return web.json_response({singular: _view(row)})

        return handler

    def neutron_delete(self, table: str):
        async def handler(request: web.Request) -> web.Response:
            row = self._row(table, request.match_info["id"])
            if table == "ports" and row["device_id"] and row["device_owner"].startswith("compute:"):
                raise error(409, f"Port {row['id']} is in use by server {row['device_id']}")
            if table == "security_groups":
                if any(row["id"] in p["security_groups"] for p in self.db["ports"].values()):
                    raise error(409, f"Security Group {row['id']} in use.")
                for rule in [r for r in self.db["security_group_rules"].values() if r["security_group_id"] == row["id"]]:
                    del self.db["security_group_rules"][rule["id"]]
            if table == "ports":
                for fip in self.db["floatingips"].values():
                    if fip["port_id"] == row["id"]:
                        self._associate(fip, None)
            del self.db[table][row["id"]]
            return web.Response(status=204)

        return handler

    def neutron_tags(self, table: str):
        async def handler(request: web.Request) -> web.Response:
            row = self._row(table, request.match_info["id"])
            row["tags"] = list((await request.json())["tags"])
            return web.json_response({"tags": row["tags"]})

        return handler

    # --- Octavia --------------------------------------------------------------------------------
    def octavia_routes(self, router: web.UrlDispatcher, root: str) -> None:
        router.add_get(root, self.octavia_version)
        router.add_get(root + "/", self.octavia_version)
        for kind, singular in (("loadbalancers", "loadbalancer"), ("listeners", "listener"), ("pools", "pool"), ("healthmonitors", "healthmonitor")):
            router.add_get(f"{root}/lbaas/{kind}", self.octavia_list(kind))
            router.add_get(f"{root}/lbaas/{kind}/{{id}}", self.octavia_show(kind, singular))
            router.add_post(f"{root}/lbaas/{kind}", self.octavia_create(kind, singular))
            router.add_put(f"{root}/lbaas/{kind}/{{id}}", self.octavia_update(kind, singular))
            router.add_delete(f"{root}/lbaas/{kind}/{{id}}", self.octavia_delete(kind))
        router.add_get(root + "/lbaas/loadbalancers/{id}/stats", self.octavia_stats)
        router.add_get(root + "/lbaas/pools/{pool}/members", self.octavia_list("members"))
        router.add_get(root + "/lbaas/pools/{pool}/members/{id}", self.octavia_show("members", "member"))
        router.add_post(root + "/lbaas/pools/{pool}/members", self.octavia_create("members", "member"))
        router.add_put(root + "/lbaas/pools/{pool}/members/{id}", self.octavia_update("members", "member"))
        router.add_delete(root + "/lbaas/pools/{pool}/members/{id}", self.octavia_delete("members"))

    async def octavia_version(self, request: web.Request) -> web.Response:
        return web.json_response({"versions": [{"id": "v2.0", "status": "CURRENT", "links": [{"rel": "self", "href": f"{self.base}/load-balancer/v2.0/"}]}]})

    def _balancer_of(self, kind: str, body: dict) -> dict:
        """The load balancer a child belongs to (from its parent's chain)."""
        if kind == "loadbalancers":
            return body
        if kind == "members":
            return self._balancer_of("pools", self._row("pools", body["pool_id"]))
        if kind == "healthmonitors":
            return self._balancer_of("pools", self._row("pools", body["pool_id"]))
        lb_id = body.get("loadbalancer_id") or (self._row("listeners", body["listener_id"])["loadbalancer_id"] if body.get("listener_id") else None)
        return self._row("loadbalancers", lb_id)

    def _change(self, balancer: dict, status: str) -> None:
        """Start a change: refused (409) while another is pending, else PENDING_* for lb_seconds
        (or the longer time a test asked for the balancer's next change)."""
        if balancer["provisioning_status"].startswith("PENDING_") and status != "PENDING_CREATE":
            self.refused[balancer["id"]] = self.refused.get(balancer["id"], 0) + 1
            raise error(409, f"Load Balancer {balancer['id']} is immutable and cannot be updated.")
        seconds = self.slow_changes.pop(balancer["id"], self.lb_seconds)
        balancer.update(provisioning_status=status, _until=time.monotonic() + seconds)

    def slow_next_change(self, balancer_id: str, seconds: float) -> None:
        """The balancer's next change keeps it PENDING_UPDATE for `seconds` (an amphora slow to
        apply it: a test's knob)."""
        self.slow_changes[balancer_id] = seconds

    def tick_network(self, now: float) -> None:
        for balancer in list(self.db["loadbalancers"].values()):
            if balancer["provisioning_status"].startswith("PENDING_") and now >= balancer["_until"]:
                if balancer["provisioning_status"] == "PENDING_DELETE":
                    self._remove_balancer(balancer)
                    continue
                balancer["provisioning_status"] = "ACTIVE"
                balancer["operating_status"] = "ONLINE"
                for kind in OCTAVIA_KINDS:
                    for row in list(self.db[kind].values()):
                        if row["_lb"] == balancer["id"] and row["provisioning_status"].startswith("PENDING_"):
                            if row["provisioning_status"] == "PENDING_DELETE":
                                del self.db[kind][row["id"]]
                            else:
                                row["provisioning_status"] = "ACTIVE"
        for recordset in self.db["recordsets"].values():
            recordset["status"] = "ACTIVE"

    def _remove_balancer(self, balancer: dict) -> None:
        for kind in OCTAVIA_KINDS:
            for row in [r for r in self.db[kind].values() if r["_lb"] == balancer["id"]]:
                del self.db[kind][row["id"]]
        self.db["ports"].pop(balancer["vip_port_id"], None)
        for fip in self.db["floatingips"].values():
            if fip["port_id"] == balancer["vip_port_id"]:
                self._associate(fip, None)
        del self.db["loadbalancers"][balancer["id"]]

    def octavia_list(self, kind: str):
        async def handler(request: web.Request) -> web.Response:
            rows = [r for r in self.db[kind].values() if "pool" not in request.match_info or r["pool_id"] == request.match_info["pool"]]
            for key, value in request.query.items():
                if key == "tags":
                    rows = [r for r in rows if set(value.split(",")) <= set(r.get("tags", []))]
                elif key not in ("limit", "marker", "fields"):
                    rows = [r for r in rows if str(r.get(key)) == value]
            return web.json_response({kind: [_view(r) for r in rows]})

        return handler

    def octavia_show(self, kind: str, singular: str):
        async def handler(request: web.Request) -> web.Response:
            row = self._row(kind, request.match_info["id"])
            if kind == "loadbalancers" and row["provisioning_status"] == "PENDING_UPDATE":
                self.seen_pending[row["id"]] = self.seen_pending.get(row["id"], 0) + 1
            return web.json_response({singular: _view(row)})

        return handler

    def octavia_create(self, kind: str, singular: str):
        async def handler(request: web.Request) -> web.Response:
            body = (await request.json())[singular]
            if kind == "members":
                body["pool_id"] = request.match_info["pool"]
            row = {"id": new_id(), "provisioning_status": "PENDING_CREATE", "operating_status": "OFFLINE", "admin_state_up": True,
                   "tags": [], "name": "", "description": "", "project_id": "p-demo", **body}
            if kind == "loadbalancers":
                subnet = self._row("subnets", body["vip_subnet_id"]) if body.get("vip_subnet_id") else \
                    self.db["subnets"][self._row("networks", body["vip_network_id"])["subnets"][0]]
                port = self.make_port(subnet["network_id"], f"octavia-lb-{row['id']}", [], owner="Octavia")
                row.update(vip_subnet_id=subnet["id"], vip_network_id=subnet["network_id"], vip_port_id=port["id"],
                           vip_address=port["fixed_ips"][0]["ip_address"], _lb=row["id"], listeners=[], pools=[])
                self.db[kind][row["id"]] = row
                self._change(row, "PENDING_CREATE")
                for listener in body.get("listeners", []):  # a fully populated create: the whole tree at once
                    self._populate(row, listener)
            else:
                balancer = self._balancer_of(kind, row)
                self._change(balancer, "PENDING_UPDATE")
                row["_lb"] = balancer["id"]
                if kind == "members":
                    row.update(weight=body.get("weight", 1), _failing=self.failing_new_members,
                               operating_status="OFFLINE" if self._monitor_of(row["pool_id"]) else "NO_MONITOR")
                if kind == "pools" and row.get("listener_id"):
                    self.db["listeners"][row["listener_id"]]["default_pool_id"] = row["id"]
                if kind == "healthmonitors":
                    self.db["pools"][row["pool_id"]]["healthmonitor_id"] = row["id"]
                row.setdefault("loadbalancers", [{"id": balancer["id"]}])
                self.db[kind][row["id"]] = row
            return web.json_response({singular: _view(row)}, status=201)

        return handler

    def _populate(self, balancer: dict, listener: dict) -> None:
        """One listener of a fully populated create, with its default pool and health monitor."""
        def child(kind: str, body: dict) -> dict:
            row = {"id": new_id(), "provisioning_status": "PENDING_CREATE", "operating_status": "OFFLINE", "admin_state_up": True,
                   "tags": [], "name": "", "project_id": "p-demo", "_lb": balancer["id"], "loadbalancers": [{"id": balancer["id"]}], **body}
            self.db[kind][row["id"]] = row
            return row

        pool_body = dict(listener.pop("default_pool", None) or {})
        monitor_body = pool_body.pop("healthmonitor", None)
        made = child("listeners", {**listener, "loadbalancer_id": balancer["id"]})
        balancer["listeners"].append({"id": made["id"]})
        if pool_body:
            pool = child("pools", {**pool_body, "loadbalancer_id": balancer["id"], "listener_id": made["id"]})
            made["default_pool_id"] = pool["id"]
            balancer["pools"].append({"id": pool["id"]})
            if monitor_body:
                pool["healthmonitor_id"] = child("healthmonitors", {**monitor_body, "pool_id": pool["id"]})["id"]

    def octavia_update(self, kind: str, singular: str):
        async def handler(request: web.Request) -> web.Response:
            row, body = self._row(kind, request.match_info["id"]), (await request.json())[singular]
            self._change(self._balancer_of(kind, row), "PENDING_UPDATE")
            if kind != "loadbalancers":
                row["provisioning_status"] = "PENDING_UPDATE"
            row.update(body)
            return web.json_response({singular: _view(row)})

        return handler

    def octavia_delete(self, kind: str):
        async def handler(request: web.Request) -> web.Response:
            row = self._row(kind, request.match_info["id"])
            if kind == "loadbalancers":
                children = any(r["_lb"] == row["id"] for k in ("listeners", "pools") for r in self.db[k].values())
                if children and request.query.get("cascade", "").lower() != "true":
                    raise error(400, f"Cannot delete Load Balancer {row['id']} - it has children")
                self._change(row, "PENDING_DELETE")
            else:
                self._change(self._balancer_of(kind, row), "PENDING_UPDATE")
                row["provisioning_status"] = "PENDING_DELETE"
            return web.Response(status=204)

        return handler

    async def octavia_stats(self, request: web.Request) -> web.Response:
        self._row("loadbalancers", request.match_info["id"])
        return web.json_response({"stats": {"active_connections": 0, "bytes_in": 0, "bytes_out": 0, "request_errors": 0, "total_connections": 0}})

    def _monitor_of(self, pool_id: str) -> dict | None:
        return next((m for m in self.db["healthmonitors"].values() if m["pool_id"] == pool_id and m["provisioning_status"] != "PENDING_DELETE"), None)

    async def _monitor(self) -> None:
        """Octavia's health monitors: a real HTTP check of each member every `monitor_seconds`."""
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while True:
                await self._tick()
                for member in list(self.db["members"].values()):
                    monitor = self._monitor_of(member["pool_id"])
                    if monitor is None or member["provisioning_status"] == "PENDING_CREATE":
                        continue
                    ok = not member["_failing"] and await _check(session, member, monitor)
                    member["operating_status"] = ("DRAINING" if member.get("weight", 1) == 0 else "ONLINE") if ok else "ERROR"
                await asyncio.sleep(self.monitor_seconds)

    # --- Designate ------------------------------------------------------------------------------
    def designate_routes(self, router: web.UrlDispatcher, root: str) -> None:
        router.add_get(root + "/zones", self.list_zones)
        router.add_get(root + "/zones/{zone}/recordsets", self.list_recordsets)
        router.add_post(root + "/zones/{zone}/recordsets", self.create_recordset)
        router.add_get(root + "/zones/{zone}/recordsets/{id}", self.show_recordset)
        router.add_put(root + "/zones/{zone}/recordsets/{id}", self.update_recordset)
        router.add_delete(root + "/zones/{zone}/recordsets/{id}", self.delete_recordset)

    async def list_zones(self, request: web.Request) -> web.Response:
        zones = [z for z in self.db["zones"].values() if request.query.get("name", z["name"]) == z["name"]]
        return web.json_response({"zones": zones, "links": {}, "metadata": {"total_count": len(zones)}})

    async def list_recordsets(self, request: web.Request) -> web.Response:
        rows = [r for r in self.db["recordsets"].values() if r["zone_id"] == request.match_info["zone"]
                and request.query.get("name", r["name"]) == r["name"] and request.query.get("type", r["type"]) == r["type"]]
        return web.json_response({"recordsets": rows, "links": {}, "metadata": {"total_count": len(rows)}})

    async def create_recordset(self, request: web.Request) -> web.Response:
        zone, body = self._row("zones", request.match_info["zone"]), await request.json()
        if any(r["zone_id"] == zone["id"] and r["name"] == body["name"] and r["type"] == body["type"] for r in self.db["recordsets"].values()):
            raise error(409, "Duplicate RecordSet")
        row = {"id": new_id(), "zone_id": zone["id"], "zone_name": zone["name"], "status": "PENDING", "action": "CREATE",
               "ttl": body.get("ttl"), "description": body.get("description"), "records": body["records"], "name": body["name"], "type": body["type"]}
        self.db["recordsets"][row["id"]] = row
        return web.json_response(row, status=202)

    async def show_recordset(self, request: web.Request) -> web.Response:
        return web.json_response(self._row("recordsets", request.match_info["id"]))

    async def update_recordset(self, request: web.Request) -> web.Response:
        row = self._row("recordsets", request.match_info["id"])
        row.update({k: v for k, v in (await request.json()).items() if k in ("records", "ttl", "description")}, status="PENDING")
        return web.json_response(row, status=202)

    async def delete_recordset(self, request: web.Request) -> web.Response:
        row = self.db["recordsets"].pop(request.match_info["id"], None)
        if row is None:
            raise error(404, "Could not find RecordSet")
        return web.json_response({**row, "status": "PENDING", "action": "DELETE"}, status=202)


async def _check(session: aiohttp.ClientSession, member: dict, monitor: dict) -> bool:
    try:
        async with session.get(f"http://{member['address']}:{member.get('monitor_port') or member['protocol_port']}{monitor.get('url_path', '/')}") as answer:
            return 200 <= answer.status < 400
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
        return False


def _view(row: dict) -> dict:
    return {k: v for k, v in row.items() if not k.startswith("_")}
