"""A small stateful OpenStack emulator for the tests: Keystone v3, Nova, Glance, Neutron,
Octavia and Designate, only the parts Phoenix uses, as their API references describe them.

No maintained OpenStack emulator exists, so this one stands in for a cloud. openstacksdk is
its only client in the tests. One aiohttp application on one loopback port serves every
service under its own path (`/v3` Keystone, `/compute`, `/image`, `/network`,
`/load-balancer`, `/dns`), with the services' version documents (those of the SDK's own
test fixtures) and a catalogue in each token (keystoneauth's token fixture). Any user and
password is accepted.

What it models (and what only a real cloud shows, see README "OpenStack"):

- Servers go BUILD -> ACTIVE after `boot_seconds`. An active server really answers HTTP:
  the emulator listens on the server's fixed address (127.77.x.y) on every TCP port its
  security groups open, with a tiny responder (`/healthz`, `/`, `/sitemap.xml`, pages that
  name the image's VERSION), so Phoenix's health and warm-up gates and Octavia's health
  monitor are real HTTP checks. The image's steps and start command do not run.
- An image builder (user-data with a `bake.sh` part, as Phoenix's builder has) goes ACTIVE,
  then SHUTOFF after `bake_seconds` with `PHOENIX-BAKE: ok` on its console; the VERSION file
  of its layers is what servers of images made from it answer with.
- Octavia: every change puts the load balancer in PENDING_CREATE/UPDATE/DELETE for
  `lb_seconds`, and any change while it is pending is refused with 409 Conflict; members of
  a pool with a health monitor go OFFLINE -> ONLINE (or ERROR) by real HTTP checks every
  `monitor_seconds`, DRAINING at weight 0. Balancers carry no traffic (a VIP is an address
  only), so connection counts stay 0.
- Neutron ports, floating IPs (moved by updating their port), security groups and rules,
  tags; Nova server groups; Designate zones (made by the test, never by Phoenix) and
  recordsets.

Run alone: `python tests/openstack_emulator.py --port PORT` (Keystone at
http://127.0.0.1:PORT/v3)."""

from __future__ import annotations

import argparse
import asyncio
import base64
import gzip
import io
import itertools
import json
import tarfile
import threading
import time
import uuid
from email import message_from_bytes
from pathlib import Path

import yaml
from aiohttp import web

from openstack_emulator_network import NetworkServices, error

FIXTURES = Path(__import__("openstack").__file__).parent / "tests" / "unit" / "fixtures"
SERVICES = ("compute", "image", "network", "load-balancer", "dns")
VERSIONS = {  # service -> the SDK test fixture holding its version document
    "compute": "compute-version.json",
    "image": "image-version.json",
    "dns": "dns.json",
}


def now_iso() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def new_id() -> str:
    return str(uuid.uuid4())


class Emulator(NetworkServices):
    """The whole cloud: state in dicts, read and changed on the emulator's own event loop."""

    def __init__(self, port: int = 0, *, boot_seconds: float = 0.3, bake_seconds: float = 0.5, image_seconds: float = 0.3,
                 lb_seconds: float = 0.3, monitor_seconds: float = 0.2, region: str = "RegionOne", zones: tuple[str, ...] = ()):
        self.port = port
        self.boot_seconds, self.bake_seconds, self.image_seconds = boot_seconds, bake_seconds, image_seconds
        self.lb_seconds, self.monitor_seconds = lb_seconds, monitor_seconds
        self.region = region
        self.catalogue = set(SERVICES)  # the services tokens list (a test takes some away)
        self.failing_new_members = False  # members added while set never pass the health monitor (a test's knob)
        self.slow_changes: dict[str, float] = {}  # balancer -> how long its next change stays pending (a test's knob)
        self.seen_pending: dict[str, int] = {}  # balancer -> reads that found it PENDING_UPDATE
        self.refused: dict[str, int] = {}  # balancer -> changes refused with 409 while pending
        self.db: dict[str, dict[str, dict]] = {kind: {} for kind in (
            "servers", "images", "flavors", "server_groups", "networks", "subnets", "ports", "floatingips",
            "security_groups", "security_group_rules", "loadbalancers", "listeners", "pools", "healthmonitors",
            "members", "zones", "recordsets")}
        self.addresses = itertools.count(10)
        self._responders: dict[str, list[web.AppRunner]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._seed(zones)

    # --- running ------------------------------------------------------------------------------
    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth_url(self) -> str:
        return f"{self.base}/v3"

    def start(self) -> "Emulator":
        ready = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(ready,), name="openstack-emulator", daemon=True)
        self._thread.start()
        if not ready.wait(10):
            raise RuntimeError("the OpenStack emulator did not start")
        return self

    def _run(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        runner = web.AppRunner(self.app(), access_log=None)
        self._loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", self.port)
        self._loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        monitor = self._loop.create_task(self._monitor())
        ready.set()
        try:
            self._loop.run_forever()
        finally:
            monitor.cancel()
            for runners in list(self._responders.values()):
                for responder in runners:
                    self._loop.run_until_complete(responder.cleanup())
            self._loop.run_until_complete(runner.cleanup())
            self._loop.close()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def call(self, function, *args):
        """Run `function(*args)` on the emulator's loop (a test changing or reading the state)."""
        done = asyncio.run_coroutine_threadsafe(self._call(function, *args), self._loop)
        return done.result(10)

    async def _call(self, function, *args):
        await self._tick()
        return function(*args)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._ticking], client_max_size=4 * 2**20)
        app.router.add_get("/", self.root_versions)
        app.router.add_get("/v3", self.identity_version)
        app.router.add_get("/v3/", self.identity_version)
        app.router.add_post("/v3/auth/tokens", self.issue_token)
        for service in SERVICES:
            app.router.add_get(f"/{service}", self.versions(service))
            app.router.add_get(f"/{service}/", self.versions(service))
        self.compute_routes(app.router, "/compute/v2.1")
        self.image_routes(app.router, "/image/v2")
        self.network_routes(app.router)
        return app

    @web.middleware
    async def _ticking(self, request: web.Request, handler):
        await self._tick()
        service = request.path.strip("/").split("/", 1)[0]
        if service in SERVICES and service not in self.catalogue:
            raise error(404, f"service {service} is not in this cloud")
        return await handler(request)

    async def _tick(self) -> None:
        """Move every timed transition that is due (lazily, at each request and monitor round)."""
        now = time.monotonic()
        for server in list(self.db["servers"].values()):
            if server["status"] == "BUILD" and now >= server["_ready_at"]:
                server["status"] = "ACTIVE"
                if server["_builder"]:
                    server["_off_at"] = now + self.bake_seconds
                else:
                    await self._start_responders(server)
            elif server["status"] == "ACTIVE" and server.get("_off_at") and now >= server["_off_at"]:
                server["status"], server["_console"] = "SHUTOFF", server["_console"] + "PHOENIX-BAKE: ok\n"
            elif server["status"] == "DELETED" and now >= server["_gone_at"]:
                del self.db["servers"][server["id"]]
        for image in self.db["images"].values():
            if image["status"] == "saving" and now >= image["_ready_at"]:
                image["status"] = "active"
        self.tick_network(now)

    # --- Keystone -----------------------------------------------------------------------------
    async def root_versions(self, request: web.Request) -> web.Response:
        return await self.identity_versions(request)

    async def identity_versions(self, request: web.Request) -> web.Response:
        document = json.loads((FIXTURES / "discovery.json").read_text().replace("https://identity.example.com", self.base))
        return web.json_response(document, status=300)

    async def identity_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": {
            "id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{self.auth_url}/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}],
        }})

    async def issue_token(self, request: web.Request) -> web.Response:
        """A token for any user and password, scoped to the project asked for, with the catalogue."""
        auth = (await request.json()).get("auth", {})
        user = auth.get("identity", {}).get("password", {}).get("user", {})
        project = auth.get("scope", {}).get("project", {}).get("name") or "demo"
        catalog = [
            {"type": service, "name": service, "id": f"svc-{service}", "endpoints": [
                {"id": f"{service}-{interface}", "interface": interface, "region": self.region, "region_id": self.region,
                 "url": f"{self.base}/{service}"} for interface in ("public", "internal", "admin")]}
            for service in sorted(self.catalogue)
        ]
        expires = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(time.time() + 3600))
        token = {"token": {
            "methods": ["password"], "expires_at": expires, "issued_at": now_iso(), "catalog": catalog,
            "user": {"id": "u-" + user.get("name", "user"), "name": user.get("name", "user"), "domain": {"id": "default", "name": "Default"}},
            "project": {"id": "p-demo", "name": project, "domain": {"id": "default", "name": "Default"}},
            "roles": [{"id": "r-member", "name": "member"}],
        }}
        return web.json_response(token, status=201, headers={"X-Subject-Token": uuid.uuid4().hex})

    def versions(self, service: str):
        async def handler(request: web.Request) -> web.Response:
            if service in VERSIONS:
                text = (FIXTURES / VERSIONS[service]).read_text()
                host = "http://image.example.com" if service == "image" else f"https://{service}.example.com"
                document = json.loads(text.replace(host, f"{self.base}/{service}"))
                if service == "compute":  # a current Nova: microversions up to 2.96
                    current = document["versions"][1]
                    current.update(version="2.96", min_version="2.1")
                    document["versions"] = [current]
                if service == "image":
                    document["versions"] = [v for v in document["versions"] if v["id"].startswith("v2")]
                return web.json_response(document, status=300 if service == "image" else 200)
            versioned = {"network": ("v2.0", "v2.0"), "load-balancer": ("v2.0", "v2.0")}[service]
            return web.json_response({"versions": [{
                "id": versioned[0], "status": "CURRENT", "updated": "2023-01-01T00:00:00Z",
                "links": [{"rel": "self", "href": f"{self.base}/{service}/{versioned[1]}/"}],
            }]})

        return handler

    # --- Nova ---------------------------------------------------------------------------------
    def _seed(self, zones: tuple[str, ...]) -> None:
        for name, ram, vcpus in (("m1.small", 2048, 1), ("m1.medium", 4096, 2), ("m1.large", 8192, 4)):
            self.db["flavors"][name] = {"id": name, "name": name, "ram": ram, "vcpus": vcpus, "disk": 20, "original_name": name}
        for name in ("debian-12", "ubuntu-24.04"):
            image = self._image(name, {}, visibility="public")
            image.update(status="active", _payload={"version": "base image"})
        self.seed_network(zones)

    def compute_routes(self, router: web.UrlDispatcher, root: str) -> None:
        router.add_get(root, self.compute_version)
        router.add_get(root + "/", self.compute_version)
        router.add_get(root + "/flavors", self.list_flavors)
        router.add_get(root + "/flavors/detail", self.list_flavors)
        router.add_get(root + "/flavors/{id}", self.show_flavor)
        router.add_post(root + "/servers", self.create_server)
        router.add_get(root + "/servers", self.list_servers)
        router.add_get(root + "/servers/detail", self.list_servers)
        router.add_get(root + "/servers/{id}", self.show_server)
        router.add_delete(root + "/servers/{id}", self.delete_server)
        router.add_post(root + "/servers/{id}/action", self.server_action)
        router.add_post(root + "/os-server-groups", self.create_server_group)
        router.add_get(root + "/os-server-groups", self.list_server_groups)
        router.add_get(root + "/os-server-groups/{id}", self.show_server_group)
        router.add_delete(root + "/os-server-groups/{id}", self.delete_server_group)

    async def compute_version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": {"id": "v2.1", "status": "CURRENT", "version": "2.96", "min_version": "2.1",
                                              "links": [{"rel": "self", "href": f"{self.base}/compute/v2.1/"}]}})

    async def list_flavors(self, request: web.Request) -> web.Response:
        return web.json_response({"flavors": list(self.db["flavors"].values())})

    async def show_flavor(self, request: web.Request) -> web.Response:
        flavor = self.db["flavors"].get(request.match_info["id"])
        if flavor is None:
            raise error(404, f"Flavor {request.match_info['id']} could not be found.")
        return web.json_response({"flavor": flavor})

    async def create_server(self, request: web.Request) -> web.Response:
        document = await request.json()
        body = document["server"]
        hints = document.get("os:scheduler_hints") or document.get("OS-SCH-HNT:scheduler_hints") or {}  # both spellings are Nova's
        image = self.db["images"].get(body.get("imageRef", ""))
        if image is None or image["status"] != "active":
            raise error(400, f"Image {body.get('imageRef')} could not be found or is not active.")
        if body.get("flavorRef") not in self.db["flavors"]:
            raise error(400, f"Flavor {body.get('flavorRef')} could not be found.")
        group = hints.get("group")
        if group and group not in self.db["server_groups"]:
            raise error(400, f"Server group {group} could not be found.")
        userdata = base64.b64decode(body["user_data"]) if body.get("user_data") else b""
        server_id = new_id()
        ports = []
        for wanted in body.get("networks", []) if isinstance(body.get("networks"), list) else []:
            if wanted.get("port"):
                port = self.db["ports"].get(wanted["port"])
                if port is None or port["device_id"]:
                    raise error(400, f"Port {wanted['port']} is not usable.")
                ports.append(port)
            else:
                groups = [self.group_by_name(g["name"])["id"] for g in body.get("security_groups", [{"name": "default"}])]
                port = self.make_port(wanted["uuid"], f"{body['name']}-port", groups, owner="compute:nova")
                port["_nova_made"] = True
                ports.append(port)
        if not ports:
            raise error(400, "Multiple possible networks found, use a Network ID to be more specific.")
        for port in ports:
            port.update(device_id=server_id, device_owner=port["device_owner"] or "compute:nova")
        builder = any(part.get_filename() == "bake.sh" for part in _parts(userdata))
        server = {
            "id": server_id, "name": body["name"], "status": "BUILD", "metadata": body.get("metadata", {}),
            "image": {"id": image["id"]}, "flavor": {"original_name": body["flavorRef"], "vcpus": 1, "ram": 2048, "disk": 20},
            "created": now_iso(), "updated": now_iso(), "tenant_id": "p-demo", "user_id": "u", "tags": body.get("tags", []),
            "config_drive": "True" if body.get("config_drive") else "", "OS-EXT-STS:vm_state": "building",
            "_ports": [p["id"] for p in ports], "_ready_at": time.monotonic() + self.boot_seconds, "_builder": builder,
            "_payload": _payload(userdata) if builder else dict(image["_payload"]), "_group": group,
            "_console": "cloud-init: booting\n",
        }
        self.db["servers"][server_id] = server
        if group:
            self.db["server_groups"][group]["members"].append(server_id)
        return web.json_response({"server": {"id": server_id, "links": [], "adminPass": "x"}}, status=202)

    def _server_view(self, server: dict) -> dict:
        addresses: dict[str, list] = {}
        for port_id in server["_ports"]:
            port = self.db["ports"].get(port_id)
            if port:
                network = self.db["networks"][port["network_id"]]["name"]
                addresses.setdefault(network, []).append({"addr": port["fixed_ips"][0]["ip_address"], "version": 4, "OS-EXT-IPS:type": "fixed"})
                for fip in self.db["floatingips"].values():
                    if fip["port_id"] == port_id:
                        addresses[network].append({"addr": fip["floating_ip_address"], "version": 4, "OS-EXT-IPS:type": "floating"})
        view = {k: v for k, v in server.items() if not k.startswith("_")}
        view.update(addresses=addresses, security_groups=[{"name": n} for n in self._server_groups_names(server)],
                    **{"OS-EXT-STS:vm_state": {"BUILD": "building", "ACTIVE": "active", "SHUTOFF": "stopped", "DELETED": "deleted"}[server["status"]]})
        return view

    def _server_groups_names(self, server: dict) -> list[str]:
        names = set()
        for port_id in server["_ports"]:
            for group in self.db["ports"].get(port_id, {}).get("security_groups", []):
                if group in self.db["security_groups"]:
                    names.add(self.db["security_groups"][group]["name"])
        return sorted(names)

    def _server(self, request: web.Request) -> dict:
        server = self.db["servers"].get(request.match_info["id"])
        if server is None:
            raise error(404, f"Instance {request.match_info['id']} could not be found.")
        return server

    async def list_servers(self, request: web.Request) -> web.Response:
        import re

        name = request.query.get("name")
        servers = [s for s in self.db["servers"].values() if s["status"] != "DELETED" and (not name or re.search(name, s["name"]))]
        return web.json_response({"servers": [self._server_view(s) for s in servers]})

    async def show_server(self, request: web.Request) -> web.Response:
        return web.json_response({"server": self._server_view(self._server(request))})

    async def delete_server(self, request: web.Request) -> web.Response:
        server = self._server(request)
        if server["status"] != "DELETED":
            server.update(status="DELETED", _gone_at=time.monotonic() + self.boot_seconds)
            await self._stop_responders(server)
            for port_id in server["_ports"]:
                port = self.db["ports"].get(port_id)
                if port and port.get("_nova_made"):
                    del self.db["ports"][port_id]
                elif port:
                    port.update(device_id="", device_owner="")
            for group in self.db["server_groups"].values():
                if server["id"] in group["members"]:
                    group["members"].remove(server["id"])
        return web.Response(status=204)

    async def server_action(self, request: web.Request) -> web.Response:
        server, body = self._server(request), await request.json()
        if "os-getConsoleOutput" in body:
            return web.json_response({"output": server["_console"]})
        if "os-stop" in body:
            if server["status"] == "ACTIVE":
                server["status"] = "SHUTOFF"
                await self._stop_responders(server)
            return web.Response(status=202)
        if "createImage" in body:
            wanted = body["createImage"]
            if server["status"] not in ("ACTIVE", "SHUTOFF"):
                raise error(409, f"Cannot 'createImage' instance {server['id']} while it is in vm_state {server['status']}")
            image = self._image(wanted["name"], wanted.get("metadata", {}))
            image.update(status="saving", _ready_at=time.monotonic() + self.image_seconds, _payload=dict(server["_payload"]))
            return web.json_response({"image_id": image["id"]}, status=202)
        raise error(400, f"unsupported action {sorted(body)}")

    async def create_server_group(self, request: web.Request) -> web.Response:
        body = (await request.json())["server_group"]
        group = {"id": new_id(), "name": body["name"], "policy": body.get("policy") or body.get("policies", ["anti-affinity"])[0],
                 "rules": body.get("rules", {}), "members": [], "project_id": "p-demo", "user_id": "u"}
        self.db["server_groups"][group["id"]] = group
        return web.json_response({"server_group": group})

    async def list_server_groups(self, request: web.Request) -> web.Response:
        return web.json_response({"server_groups": list(self.db["server_groups"].values())})

    async def show_server_group(self, request: web.Request) -> web.Response:
        group = self.db["server_groups"].get(request.match_info["id"])
        if group is None:
            raise error(404, f"Server group {request.match_info['id']} could not be found.")
        return web.json_response({"server_group": group})

    async def delete_server_group(self, request: web.Request) -> web.Response:
        if self.db["server_groups"].pop(request.match_info["id"], None) is None:
            raise error(404, f"Server group {request.match_info['id']} could not be found.")
        return web.Response(status=204)

    # --- the servers' responders ----------------------------------------------------------------
    async def _start_responders(self, server: dict) -> None:
        address = self.db["ports"][server["_ports"][0]]["fixed_ips"][0]["ip_address"]
        version = server["_payload"].get("version", "unknown")
        runners = []
        for port in sorted(self.open_ports(server["_ports"])):
            app = web.Application()
            app.router.add_get("/{tail:.*}", _responder(server["name"], version))
            runner = web.AppRunner(app, access_log=None)
            await runner.setup()
            try:
                await web.TCPSite(runner, address, port).start()
            except OSError:  # the address is another's here: the server does not answer on it
                await runner.cleanup()
                continue
            runners.append(runner)
        self._responders[server["id"]] = runners

    async def _stop_responders(self, server: dict) -> None:
        for runner in self._responders.pop(server["id"], []):
            await runner.cleanup()

    # --- Glance -------------------------------------------------------------------------------
    def _image(self, name: str, properties: dict, visibility: str = "private") -> dict:
        image = {"id": new_id(), "name": name, "status": "queued", "visibility": visibility, "tags": [],
                 "created_at": now_iso(), "updated_at": now_iso(), "size": 2 * 2**30, "disk_format": "qcow2",
                 "container_format": "bare", "owner": "p-demo", "min_disk": 0, "min_ram": 0, "protected": False,
                 "_payload": {}, **{k: str(v) for k, v in properties.items()}}
        self.db["images"][image["id"]] = image
        return image

    def image_routes(self, router: web.UrlDispatcher, root: str) -> None:
        router.add_get(root + "/images", self.list_images)
        router.add_get(root + "/images/{id}", self.show_image)
        router.add_delete(root + "/images/{id}", self.delete_image)

    @staticmethod
    def _image_view(image: dict) -> dict:
        return {k: v for k, v in image.items() if not k.startswith("_")}

    async def list_images(self, request: web.Request) -> web.Response:
        filters = {k: v for k, v in request.query.items() if k not in ("limit", "marker", "sort", "sort_key", "sort_dir")}
        images = [i for i in self.db["images"].values() if all(str(i.get(k)) == v for k, v in filters.items())]
        return web.json_response({"images": [self._image_view(i) for i in images], "schema": "/v2/schemas/images",
                                  "first": "/v2/images"})

    async def show_image(self, request: web.Request) -> web.Response:
        image = self.db["images"].get(request.match_info["id"])
        if image is None:
            raise error(404, f"No image found with ID {request.match_info['id']}")
        return web.json_response(self._image_view(image))

    async def delete_image(self, request: web.Request) -> web.Response:
        if self.db["images"].pop(request.match_info["id"], None) is None:
            raise error(404, f"No image found with ID {request.match_info['id']}")
        return web.Response(status=204)


def _parts(userdata: bytes) -> list:
    if not userdata:
        return []
    raw = gzip.decompress(userdata) if userdata[:2] == b"\x1f\x8b" else userdata
    return [part for part in message_from_bytes(raw).walk() if not part.is_multipart()]


def _payload(userdata: bytes) -> dict:
    """What a builder's layers hold that the emulated servers show: the VERSION file."""
    for part in _parts(userdata):
        if part.get_content_subtype() != "cloud-config":
            continue
        for entry in (yaml.safe_load(part.get_payload(decode=True)) or {}).get("write_files", []):
            try:
                with tarfile.open(fileobj=io.BytesIO(base64.b64decode(entry["content"]))) as tar:
                    member = next((m for m in tar.getmembers() if m.name == "VERSION"), None)
                    if member is not None:
                        return {"version": tar.extractfile(member).read().decode().strip()}
            except (tarfile.TarError, ValueError, KeyError):
                continue
    return {}


def _responder(name: str, version: str):
    pages = [f"/page/{n}" for n in range(1, 6)]

    async def answer(request: web.Request) -> web.Response:
        path = request.path
        if path == "/healthz":
            return web.Response(text="ok")
        if path == "/sitemap.xml":
            urls = "".join(f"<url><loc>http://{request.host}{p}</loc></url>" for p in pages)
            return web.Response(text=f'<?xml version="1.0"?><urlset xmlns="http://www.sitemaps.org/schemas/sitemap/0.9">{urls}</urlset>',
                                content_type="application/xml")
        if path == "/" or path in pages:
            links = "".join(f'<a href="{p}">{p}</a>' for p in pages)
            return web.Response(text=f"<html><body><h1>{name}</h1><p>version {version}</p>{links}</body></html>", content_type="text/html")
        return web.Response(status=404, text="not found")

    return answer


def main() -> None:
    parser = argparse.ArgumentParser(description="A small OpenStack emulator (Keystone v3, Nova, Glance, Neutron, Octavia, Designate) on loopback")
    parser.add_argument("--port", type=int, default=5050)
    parser.add_argument("--zone", action="append", default=[], help="a Designate zone to hold (e.g. website.test)")
    parser.add_argument("--lb-seconds", type=float, default=2.0, help="how long Octavia stays PENDING_* after a change")
    parser.add_argument("--boot-seconds", type=float, default=1.0)
    args = parser.parse_args()
    emulator = Emulator(args.port, zones=tuple(args.zone), lb_seconds=args.lb_seconds, boot_seconds=args.boot_seconds).start()
    print(f"OpenStack emulator: OS_AUTH_URL={emulator.auth_url} (any user and password)", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        emulator.stop()


if __name__ == "__main__":
    main()
