"""Crash safety (issue 6): SIGKILL at every step of a rotation, locks, recovery.

The `phoenix` commands here run as real subprocesses, so that killing one is exactly what
a CI runner being killed mid-deploy does; failpoints (PHOENIX_FAILPOINT) choose where."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from conftest import PHOENIX, PRODUCTION_COUNTS, brought_up, cli_status, phoenix, server_cwd_pids, wait_for
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadGenerator

pytestmark = pytest.mark.slow

FAILPOINTS = ["launch", "health", "warmup", "swap", "drain", "destroy"]


@pytest.fixture
def production(tmp_path_factory):
    with brought_up(tmp_path_factory, "crash") as spec_path:
        yield spec_path


def lb_urls(spec_path: Path) -> list[str]:
    lbs = {lb["role"]: lb["address"] for lb in cli_status(spec_path)["load_balancers"]}
    return [f"http://{lbs['frontend']}/page/{n}" for n in range(30)] + [
        f"http://{lbs['backend']}/api/articles",
        f"http://{lbs['edit']}/healthz",
    ]


def test_sigkill_at_every_step_of_a_rotation(production: Path, capsys):
    workdir = production.parent / ".phoenix"
    report = []
    with LoadGenerator(lb_urls(production), concurrency=8, rate=150) as load:
        load.wait_for_requests(100)
        for point in FAILPOINTS:
            killed = phoenix(production, "rotate", "production", failpoint=point)
            assert killed.returncode == -signal.SIGKILL, (point, killed.returncode, killed.stderr)
            # the state database survived the kill intact
            with sqlite3.connect(workdir / "state.db") as db:
                assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok", point
            # `recover` alone must finish what the rotation was doing (exactly the desired count,
            # nothing left to plan); after the earlier points `up` recovers first, then converges
            following = phoenix(production, "recover" if point in ("swap", "drain", "destroy") else "up", "production", "--json")
            assert following.returncode == 0, (point, following.stderr)
            recovered = json.loads(following.stdout)["recovered"]
            assert any("never finished" in line for line in recovered), (point, recovered)
            now = cli_status(production)
            counts = {role: sum(1 for s in now["servers"] if s["role"] == role) for role in PRODUCTION_COUNTS}
            assert counts == PRODUCTION_COUNTS, (point, now["servers"])
            assert all(s["in_service"] and s["state"] == "in_service" for s in now["servers"]), point
            # no process of the environment that the state store does not list
            assert server_cwd_pids(workdir / "servers" / "production") == {s["pid"] for s in now["servers"]}, point
            # no balancer member that points at nothing
            project = Project(production)
            try:
                executor = Executor(project)
                for lb in project.store.load_balancers("production"):
                    members = executor.lbs.members(lb.handle_data)
                    assert set(members) == {s["id"] for s in now["servers"] if s["role"] == lb.role}, (point, lb.role)
                    assert all(m.up for m in members.values()), (point, lb.role)
            finally:
                project.close()
            planned = phoenix(production, "plan", "production")
            assert planned.returncode == 0, (point, planned.stdout)
            report.append((point, len(recovered), load.stats.failed))
        load.wait_for_requests(load.stats.sent + 100)
    with capsys.disabled():
        for point, actions, failed in report:
            print(f"\n  kill at {point:8s}: recovered with {actions} actions, failed requests so far {failed}", end="")
    assert load.stats.failed == 0, load.stats.as_dict()
    history = json.loads(phoenix(production, "history", "production", "--json", "--limit", "50").stdout)
    assert sum(1 for op in history if op["status"] == "interrupted") == len(FAILPOINTS)
    # Destroyed, nothing of it is left: a launch killed with its command could finish copying
    # a server's folder after recovery removed it, and the log aggregator then outlived the
    # project, waiting for a server that would never come.
    assert phoenix(production, "destroy", "production").returncode == 0
    workdir = production.parent / ".phoenix"
    assert list((workdir / "servers" / "production").glob("*")) == []
    aggregator_config = str(workdir / "logs" / ".aggregator" / "rsyslog.conf")
    assert not [p.pid for p in psutil.process_iter(["cmdline"]) if aggregator_config in (p.info["cmdline"] or [])]


def test_second_deploy_fails_at_once_naming_the_holder_then_waits_with_a_timeout(production: Path):
    env = {k: v for k, v in os.environ.items() if k != "PHOENIX_FAILPOINT"}
    first = subprocess.Popen([PHOENIX, "rotate", "production", "-f", str(production)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lock_file = production.parent / ".phoenix" / "locks" / "production.lock"
        wait_for(lambda: lock_file.exists() and lock_file.read_text().strip(), 30, "the first rotation to hold the lock")
        started = time.monotonic()
        second = phoenix(production, "deploy", "production")
        assert second.returncode == 3, second.stderr
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in second.stderr
        assert f"environment production is locked by rotate (host {os.uname().nodename}, pid {first.pid}, since " in lines[0]
        assert time.monotonic() - started < 10  # failed at once (lock-timeout 0)
        # read-only commands never wait for the lock
        assert phoenix(production, "status", "production", "--json", timeout=10).returncode == 0
        assert phoenix(production, "history", "production", timeout=10).returncode == 0
        waited = phoenix(production, "up", "production", "--lock-timeout", "120")
        assert waited.returncode == 0, waited.stderr
        # the rotation may still be exiting after it let the lock go: its exit, with a deadline
        assert first.wait(timeout=30) == 0
        # it ran to its end before the waiting command got the lock: the record's times say so
        project = Project(production)
        try:
            rotate, up = sorted(project.store.operations("production", 2), key=lambda op: op.started_at)
        finally:
            project.close()
        assert (rotate.kind, rotate.status, up.kind) == ("rotate", "succeeded", "up")
        assert rotate.ended_at <= up.started_at
    finally:
        if first.poll() is None:
            first.kill()
        first.wait(30)
        first.stderr.close()


def test_stale_lock_is_taken_over_and_recorded(production: Path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    lock_file = production.parent / ".phoenix" / "locks" / "production.lock"
    lock_file.write_text(json.dumps({"host": "ci-runner-7", "pid": dead.pid, "operation": "deploy", "since": "2026-01-01T00:00:00+00:00"}))
    result = phoenix(production, "up", "production", "--json")
    assert result.returncode == 0, result.stderr
    recorded = json.loads(result.stdout)["recovered"]
    assert recorded == [f"took over the lock of deploy (host ci-runner-7, pid {dead.pid}, since 2026-01-01T00:00:00+00:00)"]
    history = json.loads(phoenix(production, "history", "production", "--json").stdout)
    assert "took over the lock of deploy" in history[0]["summary"]


def test_recover_on_a_clean_environment_changes_nothing(production: Path):
    before = cli_status(production)
    result = phoenix(production, "recover", "production")
    assert result.returncode == 0 and "nothing to recover" in result.stdout
    after = cli_status(production)
    assert [(s["id"], s["pid"]) for s in after["servers"]] == [(s["id"], s["pid"]) for s in before["servers"]]


def test_orphan_process_is_removed(production: Path):
    """Reality wins: a server process the record never heard of is destroyed."""
    orphan_root = production.parent / ".phoenix" / "servers" / "production" / "backend-0rphan" / "root"
    orphan_root.mkdir(parents=True)
    orphan = subprocess.Popen(["sleep", "300"], cwd=orphan_root, start_new_session=True)
    try:
        result = phoenix(production, "recover", "production")
        assert result.returncode == 0, result.stderr
        assert f"backend-0rphan: process {orphan.pid} unknown to the record (an orphan): destroyed" in result.stdout
        assert orphan.wait(10) == -signal.SIGTERM  # stopped by recovery, not by us
    finally:
        if orphan.poll() is None:
            orphan.kill()
            orphan.wait()
