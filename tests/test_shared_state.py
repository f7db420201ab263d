"""Shared state on a real PostgreSQL (issue 18): two checkouts of the example (two folders,
the same spec, the same `state.url`) act as two CI runners on one machine.

Runner B sees runner A's servers, history and releases; B's deploy while A holds the lock
exits 3 naming A, and waits with --lock-timeout; A killed with SIGKILL mid-rotation under
load is recovered by B with no failed request and no orphan; B rolls back a release A
deployed; PostgreSQL stopped in the middle of a rotation ends it with one line, the
environment serving, and the next command recovers. The cluster is a throwaway one
(tests/pg_cluster.py); every command is a real `phoenix` process."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import httpx
import psycopg
import pytest

from conftest import CI_COUNTS, PHOENIX, _baked_dependency_layers, copy_example, passable, server_cwd_pids, wait_for
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadGenerator
from test_aws import NOTHING, aws_example, cloud, moto_url  # noqa: F401 - moto's server and an empty account
from phoenixctl.state_location import StateLocation

pytestmark = pytest.mark.slow


@dataclass
class Runner:
    """One checkout of the project, as one CI runner runs it."""

    name: str
    spec: Path
    environ: dict

    def popen(self, *args: str, failpoint: str | None = None) -> subprocess.Popen:
        environ = {**self.environ, **({"PHOENIX_FAILPOINT": failpoint} if failpoint else {})}
        return subprocess.Popen([PHOENIX, *args, "-f", str(self.spec)], env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def run(self, *args: str, failpoint: str | None = None, timeout: float = 180) -> subprocess.CompletedProcess:
        process = self.popen(*args, failpoint=failpoint)
        try:
            out, err = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(30)
        return subprocess.CompletedProcess(process.args, process.returncode, out, err)

    def status(self) -> dict:
        """`status ci` as this runner sees it, read in this process (a command's start costs
        seconds on a busy machine; the runners' own commands are real processes)."""
        with pytest.MonkeyPatch.context() as patch:
            for name in ("PHOENIX_STATE_URL", "PHOENIX_LOCAL_HOME"):
                if name in self.environ:
                    patch.setenv(name, self.environ[name])
            project = Project(self.spec)
            try:
                return Executor(project).status("ci")
            finally:
                project.close()


@dataclass
class Team:
    a: Runner
    b: Runner
    url: str
    fleet: Path  # the local provider's files on this machine, which both runners use

    def no_orphan(self, status: dict) -> None:
        assert server_cwd_pids(self.fleet / "servers" / "ci") == {s["pid"] for s in status["servers"]}

    def converged(self) -> dict:
        status = self.b.status()
        counts = {role: sum(1 for s in status["servers"] if s["role"] == role) for role in CI_COUNTS}
        assert counts == CI_COUNTS, status["servers"]
        assert all(s["in_service"] and s["state"] == "in_service" for s in status["servers"]), status["servers"]
        self.no_orphan(status)
        return status


def lb_urls(status: dict) -> list[str]:
    lbs = {lb["role"]: lb["address"] for lb in status["load_balancers"]}
    return [f"http://{lbs['frontend']}/page/{n}" for n in range(10)] + [f"http://{lbs['backend']}/api/articles"]


@pytest.fixture(scope="module")
def team(pg_cluster, tmp_path_factory) -> Iterator[Team]:
    url = pg_cluster.fresh_database()
    home = passable(tmp_path_factory.mktemp("fleet-home"))
    fleet = home / f"website-{StateLocation(url=url).fleet_key()}"
    layers = fleet / "images" / "layers"  # the dependency layer the suite baked once, as copy_example does
    for folder in (fleet, layers.parent, layers):
        folder.mkdir(mode=0o711 if folder == fleet else 0o700, parents=True)
    for layer in _baked_dependency_layers(tmp_path_factory).iterdir():
        shutil.copytree(layer, layers / layer.name, symlinks=True, copy_function=os.link)
    environ = {k: v for k, v in os.environ.items() if k not in ("PHOENIX_FAILPOINT", "PHOENIX_STATE_URL")}
    environ["PHOENIX_LOCAL_HOME"] = str(home)
    runners = []
    for name in ("a", "b"):
        spec = copy_example(tmp_path_factory, f"runner-{name}", cached_layers=False)
        spec.write_text(spec.read_text().replace("provider: local ", f"state: {{url: '{url}'}}\nprovider: local ", 1))
        if runners:  # the same secrets as runner A's, as CI hands every runner the team's secrets
            shutil.rmtree(spec.parent / "secrets")
            shutil.copytree(runners[0].spec.parent / "secrets", spec.parent / "secrets")
        runners.append(Runner(name, spec, environ))
    team = Team(*runners, url=url, fleet=fleet)
    up = team.a.run("up", "ci")
    assert up.returncode == 0, up.stderr
    try:
        yield team
    finally:
        pg_cluster.start_if_stopped()
        team.a.run("destroy", "ci", "--lock-timeout", "60")


def test_runner_b_sees_what_runner_a_did(team: Team):
    b = team.b.status()
    assert {s["pid"] for s in b["servers"]} == server_cwd_pids(team.fleet / "servers" / "ci") and len(b["servers"]) == 3
    assert b["state"] == {"backend": "postgresql", "location": team.url}
    history = json.loads(team.b.run("history", "ci", "--json").stdout)
    assert [op["kind"] for op in history] == ["up"] and history[0]["status"] == "succeeded"
    assert not (team.a.spec.parent / ".phoenix" / "state.db").exists()  # nothing on the runner's disk
    plan = team.b.run("plan", "ci")  # the same secrets key, so the same fingerprints: nothing to do
    assert plan.returncode == 0, plan.stdout + plan.stderr


def holder_pid(url: str) -> int | None:
    """The pid the lock's holder recorded (None: nobody holds it, or died holding it unrecorded)."""
    with psycopg.connect(url) as connection:
        row = connection.execute("SELECT pid FROM lock_holders WHERE env = 'ci'").fetchone()
    return row[0] if row else None


def refused_then_waits(a: Runner, b: Runner, url: str) -> None:
    """B's deploy while A's rotation holds the lock exits 3 naming A; with --lock-timeout B
    waits, and runs once A has finished. A is stopped (SIGSTOP) once it holds the lock, so
    it holds it for as long as the test needs, whatever the machine's speed."""
    first = a.popen("rotate", "ci", "--role", "edit")
    try:
        wait_for(lambda: holder_pid(url), 60, "runner A to hold the lock")
        os.kill(first.pid, signal.SIGSTOP)
        refused = b.run("deploy", "ci")
        assert refused.returncode == 3, refused.stderr
        lines = refused.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in refused.stderr
        assert f"environment ci is locked by rotate (host {os.uname().nodename}, pid {first.pid}, since " in lines[0]
        waiting = b.popen("up", "ci", "--lock-timeout", "120", "--json")
        os.kill(first.pid, signal.SIGCONT)
        out, err = waiting.communicate(timeout=180)
        assert waiting.returncode == 0, err
        assert first.wait(60) == 0, first.stderr.read()
    finally:
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            first.kill()
        first.communicate(timeout=30)
    assert holder_pid(url) is None  # released cleanly: no holder left behind
    with psycopg.connect(url) as connection:  # B's up began after A's rotation ended
        up, rotate = connection.execute("SELECT kind, status, started_at, ended_at FROM operations WHERE env = 'ci' ORDER BY started_at DESC LIMIT 2")
    assert (rotate[0], rotate[1], up[0]) == ("rotate", "succeeded", "up") and rotate[3] <= up[2], (rotate, up)


def test_a_deploy_from_b_while_a_holds_the_lock_exits_3_naming_a_then_waits(team: Team):
    refused_then_waits(team.a, team.b, team.url)
    team.converged()


def test_a_killed_mid_rotation_under_load_is_recovered_by_b(team: Team):
    with LoadGenerator(lb_urls(team.b.status()), concurrency=4, rate=100) as load:
        load.wait_for_requests(50)
        killed = team.a.popen("rotate", "ci", "--role", "edit", failpoint="swap")
        _, stderr = killed.communicate(timeout=180)
        assert killed.returncode == -signal.SIGKILL, stderr
        assert holder_pid(team.url) == killed.pid  # the record of a holder that died holding the lock stays
        recovered = team.b.run("recover", "ci", "--json")
        assert recovered.returncode == 0, recovered.stderr
        actions = json.loads(recovered.stdout)["recovered"]
        assert any("took over the lock of rotate" in line for line in actions), actions
        assert any("never finished" in line for line in actions), actions
        team.converged()
        load.wait_for_requests(load.stats.sent + 50)
    assert load.stats.failed == 0, load.stats.as_dict()


def test_b_rolls_back_a_release_a_deployed(team: Team):
    before = {s["role"]: s["fingerprint"] for s in team.b.status()["servers"]}
    edited = "roles: {backend: 1, edit: {count: 1, env: {LOG_LEVEL: warning}}, frontend: 1}"  # a new release of one role
    team.a.spec.write_text(team.a.spec.read_text().replace("roles: {backend: 1, edit: 1, frontend: 1}", edited, 1))
    deployed = team.a.run("deploy", "ci")
    assert deployed.returncode == 0, deployed.stderr
    assert {s["role"]: s["fingerprint"] for s in team.b.status()["servers"]} != before
    rolled_back = team.b.run("rollback", "ci", "--json")
    assert rolled_back.returncode == 0, rolled_back.stderr
    assert {s["role"]: s["fingerprint"] for s in team.converged()["servers"]} == before


def test_postgresql_stopped_mid_rotation_then_started(team: Team, pg_cluster):
    status = team.b.status()
    old = {s["id"] for s in status["servers"]}
    with LoadGenerator(lb_urls(status), concurrency=4, rate=100) as load:
        load.wait_for_requests(50)
        rotation = team.b.popen("rotate", "ci", "--role", "edit")
        try:
            def launched() -> bool:
                with psycopg.connect(team.url) as connection:
                    return connection.execute("SELECT count(*) FROM servers WHERE env = 'ci' AND state <> 'destroyed'").fetchone()[0] > 3

            wait_for(launched, 60, "the rotation to launch a new server", interval=0.02)
            pg_cluster.stop()
            _, stderr = rotation.communicate(timeout=120)
        finally:
            if rotation.poll() is None:
                rotation.kill()
                rotation.communicate(timeout=30)
            pg_cluster.start_if_stopped()
        assert rotation.returncode == 1, stderr
        lines = stderr.strip().splitlines()
        assert "Traceback" not in stderr and lines[-1].startswith(f"phoenix: error: state store {team.url} unavailable: "), stderr
        # still serving, on the servers it had: a request through each balancer answers
        for url in lb_urls(status)[::5]:
            assert httpx.get(url, timeout=10).status_code == 200
        following = team.a.run("up", "ci", "--json")
        assert following.returncode == 0, following.stderr
        assert json.loads(following.stdout)["recovered"], following.stdout
        after = team.converged()
        load.wait_for_requests(load.stats.sent + 50)
    assert load.stats.failed == 0, load.stats.as_dict()
    assert len(after["servers"]) == 3 and old  # converged, whatever the rotation had replaced


# --- the same two runners on the AWS provider, against moto's server ----------------------------
# moto's instances run nothing: there is no traffic to count; the fleet is what moto holds.


def test_two_runners_share_one_fleet_on_aws(cloud, pg_cluster, tmp_path):
    url = pg_cluster.fresh_database()
    environ = {k: v for k, v in os.environ.items() if k != "PHOENIX_FAILPOINT"}
    environ["PHOENIX_STATE_URL"] = url  # the other way to name the store: CI's environment
    a = Runner("a", aws_example(tmp_path / "a"), environ)
    b_spec = aws_example(tmp_path / "b")
    shutil.rmtree(b_spec.parent / "secrets")
    shutil.copytree(a.spec.parent / "secrets", b_spec.parent / "secrets")
    b = Runner("b", b_spec, environ)

    def fleet() -> dict:
        status = b.status()
        live = {i["InstanceId"] for i in cloud.instances(env="ci")}
        assert live == {s["instance"] for s in status["servers"]} and len(live) == 3, (live, status["servers"])  # no orphan
        return {s["role"]: s["fingerprint"] for s in status["servers"]}

    try:
        up = a.run("up", "ci")
        assert up.returncode == 0, up.stderr
        first = fleet()  # B sees A's servers (the lock is the store's: the local runners' test shows it)
        killed = a.popen("rotate", "ci", "--role", "edit", failpoint="swap")
        killed.communicate(timeout=180)
        assert killed.returncode == -signal.SIGKILL
        recovered = b.run("recover", "ci", "--json")
        assert recovered.returncode == 0, recovered.stderr
        assert any("took over the lock of rotate" in line for line in json.loads(recovered.stdout)["recovered"])
        assert fleet() == first
        a.spec.write_text(a.spec.read_text().replace("roles: {backend: 1, edit: 1, frontend: 1}", "roles: {backend: 1, edit: {count: 1, env: {LOG_LEVEL: warning}}, frontend: 1}", 1))
        assert a.run("deploy", "ci").returncode == 0
        rolled_back = b.run("rollback", "ci")
        assert rolled_back.returncode == 0, rolled_back.stderr
        assert fleet() == first  # B went back to the release before A's
    finally:
        b.run("destroy", "ci", "--lock-timeout", "60")
    assert cloud.leftovers() == NOTHING
