"""Integration tests: the example website on real HAProxy and real server processes.

The `production` fixture (conftest.py) brings one copy of the example up once; the tests
that use it run in file order and each leaves it serving: rotate, up again, deploy a new
version, a deploy that fails its health gate, the servers' private roots, and last
`destroy`. `bake` and the CLI run in copies of their own."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import httpx
import psutil
import pytest
import yaml

from phoenixctl import cli
from phoenixctl.errors import GateFailed, PhoenixError
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadGenerator

from conftest import CI_COUNTS, PRODUCTION_COUNTS, Environment, process_alive, process_gone, server_cwd_pids

pytestmark = pytest.mark.slow

LOAD = {"concurrency": 16, "rate": 200.0, "max_seconds": 120.0}
ADDRESS = re.compile(r"^127\.\d{1,3}\.\d{1,3}\.\d{1,3}:\d{1,5}$")


# --- helpers ------------------------------------------------------------------------------


def role_counts(report: dict) -> dict[str, int]:
    return dict(Counter(s["role"] for s in report["servers"]))


def ids_of(report: dict, role: str | None = None) -> set[str]:
    return {s["id"] for s in report["servers"] if role is None or s["role"] == role}


def start_times(report: dict) -> dict[int, float]:
    """pid -> process start time of every server (to tell a recycled pid from ours)."""
    return {s["pid"]: psutil.Process(s["pid"]).create_time() for s in report["servers"]}


def assert_serving(report: dict, counts: dict[str, int]) -> None:
    """Exactly `counts` servers per role, every one in service, every balancer alive with
    every member UP."""
    assert role_counts(report) == counts
    not_serving = [(s["id"], s["state"], s["in_service"]) for s in report["servers"] if not (s["state"] == "in_service" and s["in_service"] is True)]
    assert not_serving == []
    lbs = {lb["role"]: lb for lb in report["load_balancers"]}
    assert sorted(lbs) == sorted(counts)
    for role, count in counts.items():
        assert lbs[role]["alive"] is True, role
        assert lbs[role]["members_up"] == count, role


def run_under_load(env: Environment, action, before: int = 300, after: int = 300):
    """Run `action()` while steady load goes through all three balancers; wait for `before`
    answers first and `after` more once it returned. Returns (action's result, LoadStats)."""
    with LoadGenerator(env.load_urls(), **LOAD) as load:
        load.wait_for_requests(before)
        result = action()
        load.wait_for_requests(load.stats.ok + load.stats.failed + after)
    return result, load.stats


# --- production: one environment, brought up once, used in order --------------------------


def test_rotate_production_under_load(production: Environment):
    assert production.up_result.changed is True
    assert len(production.up_result.launched) == sum(PRODUCTION_COUNTS.values())
    before = production.status()
    assert_serving(before, PRODUCTION_COUNTS)
    old_processes = start_times(before)

    result, stats = run_under_load(production, lambda: production.executor.rotate("production"))

    assert stats.failed == 0, stats.as_dict()
    assert stats.ok >= 600
    assert sorted(result.retired) == sorted(ids_of(before))
    assert len(result.launched) == len(set(result.launched)) == len(before["servers"])
    after = production.status()
    assert_serving(after, PRODUCTION_COUNTS)
    assert ids_of(after) == set(result.launched)
    assert ids_of(after).isdisjoint(ids_of(before))
    for role in PRODUCTION_COUNTS:
        assert len(ids_of(after, role)) == len(ids_of(before, role))
    still_running = [pid for pid, started in old_processes.items() if not process_gone(pid, started)]
    assert still_running == []


def test_second_up_changes_nothing(production: Environment):
    before = production.status()
    result = production.executor.up("production")
    assert result.changed is False
    assert (result.launched, result.retired, result.removed, result.destroyed, result.baked) == ([], [], [], [], [])
    after = production.status()
    assert {(s["id"], s["pid"]) for s in after["servers"]} == {(s["id"], s["pid"]) for s in before["servers"]}
    assert [(lb["role"], lb["pid"]) for lb in after["load_balancers"]] == [(lb["role"], lb["pid"]) for lb in before["load_balancers"]]
    assert_serving(after, PRODUCTION_COUNTS)


def test_bake_is_content_addressed(bake_copy: Path):
    project = Project(bake_copy)
    try:
        executor = Executor(project)
        [(name, first_id, cached, _)] = executor.bake()
        assert (name, cached) == ("web", False)
        assert re.fullmatch(r"img-web-[0-9a-f]{16}", first_id)
        images = bake_copy.parent / ".phoenix" / "images"
        assert (images / first_id / "manifest.json").is_file()

        assert executor.bake() == [("web", first_id, True, pytest.approx(0, abs=5))]
        assert sorted(p.name for p in images.iterdir()) == [first_id, "layers"]  # the deps layer kept for later bakes

        (bake_copy.parent / "VERSION").write_text("1.0.1\n")
        [(_, second_id, cached, _)] = executor.bake()
        assert cached is False
        assert second_id != first_id
        assert (images / second_id / "rootfs" / "VERSION").read_text() == "1.0.1\n"
        assert (images / first_id / "rootfs" / "VERSION").read_text() == "1.0.0\n"
    finally:
        project.close()


def test_deploy_new_version_under_load(production: Environment):
    before = production.status()
    old_processes = start_times(before)
    (old_image,) = {s["image"] for s in before["servers"]}
    (production.project_dir / "VERSION").write_text("2.0.0\n")

    result, stats = run_under_load(production, lambda: production.executor.deploy("production"))

    assert stats.failed == 0, stats.as_dict()
    assert set(stats.versions) <= {"1.0.0", "2.0.0"}, stats.as_dict()
    assert len(result.baked) == 1 and result.baked[0] != old_image
    assert sorted(result.retired) == sorted(ids_of(before))
    after = production.status()
    assert_serving(after, PRODUCTION_COUNTS)
    assert ids_of(after) == set(result.launched)
    assert ids_of(after).isdisjoint(ids_of(before))
    assert {s["image"] for s in after["servers"]} == {result.baked[0]}
    assert [pid for pid, started in old_processes.items() if not process_gone(pid, started)] == []

    # Every answer now comes from the new build.
    with LoadGenerator(production.load_urls(), **LOAD) as load:
        load.wait_for_requests(200)
    assert load.stats.failed == 0, load.stats.as_dict()
    assert set(load.stats.versions) == {"2.0.0"}, load.stats.as_dict()

    again = production.executor.deploy("production")
    assert again.changed is False
    assert again.baked == []
    assert {(s["id"], s["pid"]) for s in production.status()["servers"]} == {(s["id"], s["pid"]) for s in after["servers"]}


def test_failed_health_gate_leaves_environment_as_before(production: Environment, capsys: pytest.CaptureFixture):
    spec_path = production.spec_path
    original = spec_path.read_text()
    before = production.status()
    assert_serving(before, PRODUCTION_COUNTS)
    frontends_before = ids_of(before, "frontend")

    data = yaml.safe_load(original)
    data["roles"]["frontend"]["env"] = {"HEALTH_FAIL": "1"}
    data["defaults"]["deadlines"]["health"] = "3s"
    try:
        spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
        failing = Project(spec_path)
        try:
            executor = Executor(failing, lock_timeout=60)

            def failed_deploys():
                with pytest.raises(GateFailed) as raised:
                    executor.deploy("production")
                capsys.readouterr()
                code = cli.main(["deploy", "production", "-f", str(spec_path)])
                return raised.value, code, capsys.readouterr()

            (error, code, (out, err)), stats = run_under_load(production, failed_deploys, before=200, after=200)
            history = executor.history("production", limit=2)
            rows = failing.store.servers("production", "frontend", include_destroyed=True)
        finally:
            failing.close()
    finally:
        spec_path.write_text(original)

    # The API raises the gate that failed ...
    assert isinstance(error, PhoenixError)
    assert error.gate == "health"
    assert error.server_id.startswith("frontend-") and error.server_id not in frontends_before
    assert "HTTP 500" in str(error)
    # ... and the CLI says it in one line, exit code 1, no traceback.
    assert code == 1
    assert "Traceback" not in out + err
    assert out == ""
    error_lines = [line for line in err.splitlines() if not line.startswith("  ")]
    assert len(error_lines) == 1, err
    assert re.fullmatch(
        r"phoenix: error: server (frontend-[0-9a-f]{6}) failed its health gate: GET /healthz still answered HTTP 500 after 3s; "
        r"see \.phoenix/logs/production/frontend/\1\.log: .*access GET /healthz 500 .*"  # the log's last lines: its access lines
        r"; production serves the release of op-\d{8}-\d{6}-[0-9a-f]{6} on every role",  # a release is the unit
        error_lines[0],
    ), err
    assert err.splitlines()[-1] == error_lines[0]

    # Nobody noticed.
    assert stats.failed == 0, stats.as_dict()

    # The environment serves as before: same servers, all in service.
    after = production.status()
    assert_serving(after, PRODUCTION_COUNTS)
    assert ids_of(after, "frontend") == frontends_before
    assert {(s["id"], s["pid"]) for s in after["servers"]} == {(s["id"], s["pid"]) for s in before["servers"]}

    # The failed operations are on record.
    assert [(op["kind"], op["status"]) for op in history] == [("deploy", "failed"), ("deploy", "failed")]
    for op in history:
        assert "failed: server frontend-" in op["summary"]
        assert op["phases"]["health"]["count"] == PRODUCTION_COUNTS["frontend"]
        assert op["phases"]["health"]["failed"] == PRODUCTION_COUNTS["frontend"]
        assert "swap" not in op["phases"]

    # The new servers are destroyed: rows say so, processes and directories are gone.
    failed_ops = {op["id"] for op in history}
    new_rows = [row for row in rows if row.operation_id in failed_ops]
    assert len(new_rows) == 2 * PRODUCTION_COUNTS["frontend"]
    assert {row.id for row in new_rows}.isdisjoint(frontends_before)
    assert [(row.id, row.state) for row in new_rows if row.state != "destroyed"] == []
    assert [row.id for row in new_rows if not process_gone(row.handle_data["pid"], row.handle_data["started"])] == []
    assert [row.id for row in new_rows if Path(row.handle_data["dir"]).exists()] == []

    # Nothing orphaned: the only processes running from server roots are the listed servers.
    assert server_cwd_pids(production.workdir / "servers") == {s["pid"] for s in after["servers"]}

    # Nothing half-registered: each balancer's members are exactly its in-service servers.
    for lb in production.project.store.load_balancers("production"):
        members = production.executor.lbs.members(lb.handle_data)
        assert set(members) == ids_of(after, lb.role), lb.role
        assert [name for name, member in members.items() if not member.up] == [], lb.role


def test_each_server_root_is_its_own_copy(production: Environment):
    report = production.status()
    server, *others = report["servers"]
    root = Path(server["root"])
    rootfs = production.workdir / "images" / server["image"] / "rootfs"
    assert root == production.workdir / "servers" / "production" / server["id"] / "root"
    assert psutil.Process(server["pid"]).cwd() == str(root)
    assert (root / "app" / "server.py").is_file() and (rootfs / "app" / "server.py").is_file()
    assert not os.path.samefile(root / "VERSION", rootfs / "VERSION")

    marker = root / "written-on-the-server.txt"
    marker.write_text("state written on a server must not reach the image\n")
    assert marker.is_file()
    assert not (rootfs / marker.name).exists()
    assert [s["id"] for s in others if (Path(s["root"]) / marker.name).exists()] == []


def test_destroy_leaves_no_process_behind(production: Environment):
    before = production.status()
    assert_serving(before, PRODUCTION_COUNTS)
    servers = start_times(before)
    balancers = {lb["pid"]: psutil.Process(lb["pid"]).create_time() for lb in before["load_balancers"]}
    assert len(balancers) == len(PRODUCTION_COUNTS)
    logs = {s["id"]: production.workdir / "logs" / "production" / s["role"] / f"{s['id']}.log" for s in before["servers"]}

    result = production.executor.destroy("production")

    assert sorted(result.destroyed) == sorted(ids_of(before))
    assert [pid for pid, started in servers.items() if not process_gone(pid, started)] == []
    assert [pid for pid, started in balancers.items() if not process_gone(pid, started)] == []
    after = production.status()
    assert after["servers"] == []
    assert after["load_balancers"] == []
    assert server_cwd_pids(production.workdir / "servers") == set()
    # Logs were shipped off the servers: they survive destruction.
    roles = {s["id"]: s["role"] for s in before["servers"]}
    version = (production.project_dir / "VERSION").read_text().strip()  # what they were launched with
    for server_id, log in logs.items():
        assert log.is_file(), log
        assert f"{server_id} {roles[server_id]} {version} listening on" in log.read_text()


# --- the CLI, in processes of its own -----------------------------------------------------


def test_servers_outlive_the_command(ci_copy: Path):
    phoenix = Path(sys.executable).parent / "phoenix"
    assert phoenix.is_file()

    def run(*args: str) -> subprocess.CompletedProcess:
        done = subprocess.run([str(phoenix), *args, "-f", str(ci_copy)], capture_output=True, text=True, timeout=120)
        assert "Traceback" not in done.stdout + done.stderr, done.stderr
        assert done.returncode == 0, (args, done.stdout, done.stderr)
        return done

    run("up", "ci")
    report = json.loads(run("status", "ci", "--json").stdout)
    assert {"servers", "load_balancers"} <= set(report)
    assert role_counts(report) == CI_COUNTS
    keys = {"id", "role", "address", "image", "state", "in_service", "launched_at", "age_s", "pid", "root"}
    for server in report["servers"]:
        assert keys <= set(server), server
        assert server["id"].startswith(server["role"] + "-")
        assert ADDRESS.fullmatch(server["address"]), server
        assert re.fullmatch(r"img-web-[0-9a-f]{16}", server["image"])
        assert (server["state"], server["in_service"]) == ("in_service", True)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", server["launched_at"])
        assert server["age_s"] >= 0
        assert Path(server["root"]).is_dir()
    # The command has exited; its servers still run.
    pids = start_times(report)
    assert [pid for pid in pids if not process_alive(pid)] == []
    lbs = {lb["role"]: lb["address"] for lb in report["load_balancers"]}
    assert sorted(lbs) == sorted(CI_COUNTS)
    assert all(ADDRESS.fullmatch(address) for address in lbs.values()), lbs
    response = httpx.get(f"http://{lbs['frontend']}/", timeout=10)
    assert response.status_code == 200
    assert response.headers["X-Version"] == "1.0.0"

    run("destroy", "ci")
    assert [pid for pid, started in pids.items() if not process_gone(pid, started)] == []
    operations = json.loads(run("history", "ci", "--json").stdout)
    assert [(op["kind"], op["status"]) for op in operations] == [("destroy", "succeeded"), ("up", "succeeded")]
    destroy, up = operations
    for phase in ("launch", "boot", "health", "swap"):
        assert up["phases"][phase]["count"] == sum(CI_COUNTS.values()), phase
        assert up["phases"][phase]["failed"] == 0, phase
        assert up["phases"][phase]["max_s"] >= 0, phase
    assert destroy["phases"]["destroy"]["count"] == sum(CI_COUNTS.values())
