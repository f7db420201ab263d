"""The OpenStack provider against the emulator (`tests/openstack_emulator.py`), through openstacksdk.

One emulator serves the whole module (its transitions made short: Octavia stays PENDING_*
0.2 s after each change unless a test holds it longer). Its servers answer HTTP on their own
loopback addresses, so Phoenix's health and warm-up gates and Octavia's health monitor are
real HTTP checks; the builder's steps and the image's start command do not run there (the
builder script itself is tested in test_aws.py, the same script on every cloud). Leftovers
are counted over everything in the emulated project, tagged or not."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import httpx
import openstack
import pytest

from phoenixctl.deadline import Deadline
from phoenixctl.drivers.openstack.api import OpenStack
from phoenixctl.engine import Executor, Project
from phoenixctl.errors import PhoenixError
from phoenixctl.example import example_dir

from conftest import PHOENIX, edited_example
from openstack_emulator import Emulator

PRODUCTION = {"frontend": 3, "backend": 2, "edit": 1}
# openstacksdk warns about its own internals (RemovedInSDK50Warning) on every call: thousands of lines
pytestmark = pytest.mark.filterwarnings("ignore::openstack.warnings._RemovedInSDKWarning")


@pytest.fixture(scope="module")
def emulator():
    running = Emulator(zones=("website.test",), boot_seconds=0.2, bake_seconds=0.3, image_seconds=0.2, lb_seconds=0.2, monitor_seconds=0.1).start()
    yield running
    running.stop()


class Cloud:
    """openstacksdk on the emulator, for the tests' own look at what exists."""

    def __init__(self, emulator: Emulator):
        self.emulator = emulator
        self.conn = openstack.connect(auth_url=emulator.auth_url, username="tester", password="any", project_name="demo",
                                      user_domain_name="Default", project_domain_name="Default", region_name="RegionOne")

    def servers(self, **meta: str) -> list:
        return [s for s in self.conn.compute.servers() if all(s.metadata.get(f"phoenix:{k}") == v for k, v in meta.items())]

    def inventory(self) -> dict[str, set[str]]:
        c = self.conn
        return {
            "servers": {s.id for s in c.compute.servers()},
            "ports": {p.id for p in c.network.ports()},
            "floating IPs": {f.floating_ip_address for f in c.network.ips()},
            "security groups": {g.name for g in c.network.security_groups()},
            "server groups": {g.name for g in c.compute.server_groups()},
            "load balancers": {b.name for b in c.load_balancer.load_balancers()},
            "records": {r.name for z in c.dns.zones() for r in c.dns.recordsets(z)},
        }

    def mark(self) -> None:
        self.before = self.inventory()

    def leftovers(self) -> dict[str, list[str]]:
        return {kind: sorted(found - self.before[kind]) for kind, found in self.inventory().items()}

    def holder(self, floating_ip_id: str) -> str | None:
        """The server a floating IP points at (by its port's device)."""
        fip = self.conn.network.get_ip(floating_ip_id)
        return self.conn.network.get_port(fip.port_id).device_id if fip.port_id else None

    def members(self, pool_id: str) -> dict[str, str]:
        return {m.name: m.operating_status for m in self.conn.load_balancer.members(pool_id)}


NOTHING = {kind: [] for kind in ("servers", "ports", "floating IPs", "security groups", "server groups", "load balancers", "records")}


@pytest.fixture
def cloud(emulator, monkeypatch) -> Cloud:
    for name in [n for n in os.environ if n.startswith("OS_")]:
        monkeypatch.delenv(name)
    for name, value in dict(OS_AUTH_URL=emulator.auth_url, OS_USERNAME="phoenix", OS_PASSWORD="any", OS_PROJECT_NAME="demo",
                            OS_USER_DOMAIN_NAME="Default", OS_PROJECT_DOMAIN_NAME="Default", OS_REGION_NAME="RegionOne").items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("PHOENIX_FAILPOINT", raising=False)
    OpenStack._shared.clear()
    cloud = Cloud(emulator)
    cloud.mark()
    yield cloud
    emulator.failing_new_members = False
    emulator.catalogue = {"compute", "image", "network", "load-balancer", "dns"}


def openstack_example(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """A copy of examples/website-openstack (with a TLS pair per environment), edited as asked."""
    return edited_example(tmp_path, "website-openstack", *edits)


def executor(spec: Path) -> Executor:
    return Executor(Project(spec))


def phoenix(spec: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([PHOENIX, *args], cwd=spec.parent, env={**os.environ, **env}, capture_output=True, text=True, timeout=120)


def balancers(ex: Executor, env: str) -> dict[str, dict]:
    return {row.role: row.handle_data for row in ex.store.load_balancers(env)}


# --- the example, from its directory, with nothing prepared --------------------------------------


def test_example_ci_up_rotate_destroy_from_its_directory(cloud, tmp_path):
    shutil.copytree(example_dir("website-openstack"), tmp_path / "site", ignore=shutil.ignore_patterns(".phoenix", "secrets"))
    spec = tmp_path / "site" / "phoenix.yaml"

    up = phoenix(spec, "up", "ci")
    assert up.returncode == 0, up.stderr
    first = {s.id: s for s in cloud.servers(env="ci")}
    assert sorted(s.metadata["phoenix:role"] for s in first.values()) == ["backend", "edit", "frontend"]
    rows = executor(spec).store.servers("ci")
    assert sorted(row.role for row in rows if row.in_service) == ["backend", "edit", "frontend"]
    assert {row.handle_data["server_id"] for row in rows} == set(first)
    # The servers answer for real on their addresses: the example's version, as baked.
    version = (spec.parent / "VERSION").read_text().strip()
    frontend = next(row for row in rows if row.role == "frontend")
    assert f"version {version}" in httpx.get(f"http://{frontend.address}:{frontend.port}/").text
    lbs = balancers(executor(spec), "ci")
    edit_before = cloud.holder(lbs["edit"]["floating_ip_id"])
    assert first[edit_before].metadata["phoenix:role"] == "edit"
    for pool, _, _ in lbs["backend"]["pools"]:
        assert set(cloud.members(pool).values()) == {"ONLINE"}

    rotate = phoenix(spec, "rotate", "ci")
    assert rotate.returncode == 0, rotate.stderr
    second = {s.id: s for s in cloud.servers(env="ci")}
    assert len(second) == 3 and not set(second) & set(first)  # every server replaced, the old ones deleted
    edit_after = cloud.holder(lbs["edit"]["floating_ip_id"])
    assert edit_after in second and second[edit_after].metadata["phoenix:role"] == "edit"  # the address moved to the new editor

    destroy = phoenix(spec, "destroy", "ci")
    assert destroy.returncode == 0, destroy.stderr
    assert cloud.leftovers() == NOTHING


# --- production: up, a deploy through a busy balancer, destroy -------------------------------------------


def test_production_lifecycle_on_openstack(cloud, emulator, tmp_path):
    spec = openstack_example(tmp_path)
    ex = executor(spec)
    try:
        result = ex.up("production")
        assert len(result.launched) == 6

        servers = cloud.servers(env="production")
        by_role: dict[str, list] = {}
        for server in servers:
            by_role.setdefault(server.metadata["phoenix:role"], []).append(server)
        assert {role: len(items) for role, items in by_role.items()} == PRODUCTION
        rows = {row.id: row for row in ex.store.servers("production")}
        for server in servers:
            meta = server.metadata
            assert meta["phoenix:project"] == "website" and meta["phoenix:operation"] == result.id
            assert meta["phoenix:fingerprint"] == rows[meta["phoenix:server"]].fingerprint
        assert {s.flavor.original_name for s in by_role["frontend"]} == {"m1.large"}  # environment x role placement
        assert {s.flavor.original_name for s in by_role["backend"] + by_role["edit"]} == {"m1.medium"}
        group = next(g for g in cloud.conn.compute.server_groups() if g.name == "phoenix:website:production:frontend")
        assert group.policy == "soft-anti-affinity" and sorted(group.member_ids) == sorted(s.id for s in by_role["frontend"])

        # The ways in: Octavia balancers (a TCP pool beside the HTTP one for the TLS port), the
        # frontend's VIP on a floating IP, the editor's floating IP, Designate records on both.
        lbs = balancers(ex, "production")
        assert sorted(port for _, port, _ in lbs["frontend"]["pools"]) == [8080, 8443]
        for pool, port, _ in lbs["frontend"]["pools"]:
            assert set(cloud.members(pool)) == {s.metadata["phoenix:server"] for s in by_role["frontend"]}
            monitor = cloud.conn.load_balancer.get_pool(pool).health_monitor_id
            assert cloud.conn.load_balancer.get_health_monitor(monitor).url_path == "/healthz"
        frontend_lb = cloud.conn.load_balancer.get_load_balancer(lbs["frontend"]["lb_id"])
        assert "phoenix:env=production" in frontend_lb.tags
        vip = cloud.conn.network.get_ip(lbs["frontend"]["vip_floating_ip_id"])
        assert vip.port_id == frontend_lb.vip_port_id
        zone = next(iter(cloud.conn.dns.zones(name="website.test.")))
        records = {r.name: r.records for r in cloud.conn.dns.recordsets(zone)}
        assert records["www.website.test."] == [vip.floating_ip_address]
        assert records["edit.website.test."] == [cloud.conn.network.get_ip(lbs["edit"]["floating_ip_id"]).floating_ip_address]

        # A new build, and the backend balancer slow to apply the first change of it: it stays
        # PENDING_UPDATE for 2 s (Octavia refuses every other change meanwhile with 409 Conflict);
        # Phoenix waits and the deploy succeeds.
        (spec.parent / "VERSION").write_text("2.0.0\n")
        backend_lb = lbs["backend"]["lb_id"]
        emulator.call(emulator.slow_next_change, backend_lb, 2.0)
        ex = executor(spec)
        deployed = ex.deploy("production")
        assert len(deployed.launched) == 6 and len(deployed.retired) == 6 and deployed.baked
        assert emulator.seen_pending.get(backend_lb, 0) + emulator.refused.get(backend_lb, 0) > 0  # Phoenix met it pending
        for row in ex.store.servers("production"):
            assert "version 2.0.0" in httpx.get(f"http://{row.address}:{row.port}/").text
        for pool, _, _ in lbs["backend"]["pools"]:
            assert set(cloud.members(pool)) == {r.id for r in ex.store.servers("production") if r.role == "backend"}
    finally:
        executor(spec).destroy("production")
    assert cloud.leftovers() == NOTHING


# --- the balancer's own gate ------------------------------------------------------------------------


def test_a_member_that_never_goes_online_fails_the_gate_and_is_removed(cloud, emulator, tmp_path):
    spec = openstack_example(tmp_path, ("swap: 5m", "swap: 2s"))
    ex = executor(spec)
    try:
        ex.up("ci")
        before = {s.id for s in cloud.servers(env="ci", role="backend")}
        pool = balancers(ex, "ci")["backend"]["pools"][0][0]
        old_members = cloud.members(pool)
        emulator.failing_new_members = True  # the health monitor never reaches the new servers
        with pytest.raises(PhoenixError, match=r"load balancer gate"):
            executor(spec).rotate("ci", role="backend")
        assert cloud.members(pool) == old_members  # the new member removed, the old one serving
        assert {s.id for s in cloud.servers(env="ci", role="backend")} == before  # the new server deleted
    finally:
        emulator.failing_new_members = False
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING


# --- nothing hides: recovery by tags ---------------------------------------------------------------


def test_recovery_and_destroy_find_what_only_the_tags_know(cloud, tmp_path):
    spec = openstack_example(tmp_path, ("    max_age: 1d\n", "    max_age: 1d\n    dns_zone: website.test\n"))  # records too
    ex = executor(spec)
    try:
        ex.up("ci")
        # A command killed between create_server and writing the record leaves a server the
        # state store never heard of: the kill is real (SIGKILL at the `launch` failpoint).
        killed = phoenix(spec, "rotate", "ci", "--role", "backend", PHOENIX_FAILPOINT="launch")
        assert killed.returncode == -9, killed.stderr
        known = {row.handle_data.get("server_id") for row in executor(spec).store.servers("ci")}
        unknown = [s for s in cloud.servers(env="ci") if s.id not in known]
        assert len(unknown) == 1 and unknown[0].metadata["phoenix:role"] == "backend"

        recovered = executor(spec).recover("ci")
        assert any(f"server {unknown[0].id} runs: adopted" in action for action in recovered.recovered), recovered.recovered
        live = {s.id for s in cloud.servers(env="ci")}
        assert unknown[0].id not in live and len(live) == 3  # adopted, then deleted: it never served

        # Balancers, floating IPs and DNS records the record lost: `destroy` finds them by their
        # tags (the records, which have none, by their description).
        ex = executor(spec)
        assert {r.name for z in cloud.conn.dns.zones() for r in cloud.conn.dns.recordsets(z)} >= {"www.website.test.", "edit.website.test."}
        for row in ex.store.load_balancers("ci"):
            ex.store.delete_load_balancer("ci", row.role)
    finally:
        result = executor(spec).destroy("ci")
    assert sum("orphan" in action for action in result.recovered) == 3, result.recovered
    assert cloud.leftovers() == NOTHING


# --- doctor and validate ---------------------------------------------------------------------------------


def test_doctor_reports_the_catalogue_and_probe_timings(cloud, tmp_path):
    spec = openstack_example(tmp_path)
    result = phoenix(spec, "doctor", "--probe", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["capability"]: row for row in json.loads(result.stdout)["capabilities"]}
    assert "load-balancer" in rows["account"]["detail"] and "dns" in rows["account"]["detail"]
    assert all(rows[name]["ok"] for name in ("account", "network", "images", "load balancer", "floating IP", "DNS"))
    assert rows["probe: launch"]["seconds"] > 0 and rows["probe: image"]["seconds"] > 0
    assert cloud.leftovers() == NOTHING  # the probe's server is gone (its image too)


def test_validate_refuses_what_the_catalogue_lacks(cloud, emulator, tmp_path):
    """The example passes `validate` on the full catalogue (every other test here runs it); without
    Octavia, then without Designate, its roles needing them are refused in one line naming them."""
    spec = openstack_example(tmp_path)
    full = emulator.catalogue
    for service, place, named in [("load-balancer", "roles.frontend.discovery.type", "load-balancer service (Octavia)"),
                                  ("dns", "roles.frontend.discovery.dns", "dns service (Designate)")]:
        emulator.catalogue = full - {service}
        result = phoenix(spec, "validate")
        assert result.returncode == 2, result.stderr
        [line] = result.stderr.strip().splitlines()
        assert place in line and named in line, line


def test_a_retried_launch_makes_one_server(cloud, tmp_path):
    from phoenixctl.drivers.openstack.compute import OpenStackCompute
    from phoenixctl.drivers.base import LaunchRequest
    from phoenixctl.spec import PlacementSpec, load_spec

    spec = openstack_example(tmp_path)
    loaded = load_spec(spec)
    compute = OpenStackCompute(spec.parent / ".phoenix", "website", loaded.spec.provider)
    image = next(i for i in cloud.conn.image.images() if i.name == "debian-12").id
    request = LaunchRequest(server_id="backend-twice", env="ci", role="backend", image_id="img", image_location=image, port=8081,
                            command="true", userdata=b"#cloud-config\n", placement=PlacementSpec(flavor="m1.small"))
    first, second = compute.launch(request), compute.launch(request)
    try:
        assert first.handle["server_id"] == second.handle["server_id"]
        assert len(cloud.servers(server="backend-twice")) == 1
    finally:
        compute.destroy(first.handle, Deadline(30, "the test's server"))
        compute.teardown("ci", Deadline(30, "the test's groups"))
    assert cloud.leftovers() == NOTHING


def test_the_emulator_runs_alone(tmp_path):
    """`python tests/openstack_emulator.py --port PORT`: Keystone v3 at http://127.0.0.1:PORT/v3."""
    import socket
    import sys

    with socket.socket() as probe:  # a free port, given back for the emulator to take
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    script = Path(__file__).parent / "openstack_emulator.py"
    process = subprocess.Popen([sys.executable, str(script), "--port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert f"OS_AUTH_URL=http://127.0.0.1:{port}/v3" in process.stdout.readline()
        token = httpx.post(f"http://127.0.0.1:{port}/v3/auth/tokens", json={"auth": {"identity": {"methods": ["password"], "password": {
            "user": {"name": "anyone", "password": "anything", "domain": {"name": "Default"}}}}, "scope": {"project": {"name": "demo"}}}})
        assert token.status_code == 201 and token.headers["X-Subject-Token"]
        assert {s["type"] for s in token.json()["token"]["catalog"]} == {"compute", "image", "network", "load-balancer", "dns"}
    finally:
        process.terminate()
        process.wait(10)
