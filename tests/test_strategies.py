"""Deployment strategies and rollback (issue 5), end to end with real haproxy and servers.

Every test runs under steady load through production's load balancers and requires that
no client request fails: bad builds are caught by a gate, by the canary's comparison, or
by HAProxy retrying a failed GET on another member."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from conftest import PRODUCTION_COUNTS, copy_example, destroy_quietly, process_gone
from phoenixctl.errors import GateFailed
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadGenerator
from phoenixctl.engine.strategies.canary import CanaryFailed

pytestmark = pytest.mark.slow


@dataclass
class Prod:
    spec_path: Path
    project: Project

    def executor(self) -> Executor:
        """A fresh project view of the (possibly edited) spec, as a new command would have."""
        self.project.close()
        self.project = Project(self.spec_path)
        return Executor(self.project, lock_timeout=60)

    def edit(self, change) -> None:
        data = yaml.safe_load(self.spec_path.read_text())
        change(data)
        self.spec_path.write_text(yaml.safe_dump(data, sort_keys=False))

    def version(self, text: str) -> None:
        (self.spec_path.parent / "VERSION").write_text(text + "\n")

    def status(self) -> dict:
        return self.executor().status("production")

    def serving(self, role: str | None = None) -> set[str]:
        return {s["id"] for s in self.status()["servers"] if s["in_service"] and (role is None or s["role"] == role)}

    def urls(self) -> list[str]:
        lbs = {lb["role"]: lb["address"] for lb in self.status()["load_balancers"]}
        return [f"http://{lbs['frontend']}/page/{n}" for n in range(30)] + [f"http://{lbs['backend']}/api/articles"]


@pytest.fixture
def prod(tmp_path_factory):
    spec_path = copy_example(tmp_path_factory, "strategies")
    data = yaml.safe_load(spec_path.read_text())
    data["environments"]["production"]["rollout"].update(canary_time="3s", keep_previous="10m")
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))
    env = Prod(spec_path, Project(spec_path))
    try:
        env.executor().up("production")
        yield env
    finally:
        env.project.close()
        destroy_quietly(spec_path, "production")


def under_load(prod: Prod, action, settle: int = 60):
    """Run action() under steady load; return (its result or exception, the load's stats, the
    stats of a second run once it has returned). Whatever the action did, succeeded or was
    refused, clients must get no failure once it returned: the second run is asserted here."""
    with LoadGenerator(prod.urls(), concurrency=8, rate=150) as load:
        load.wait_for_requests(100)
        try:
            outcome = action()
        except Exception as exc:  # noqa: BLE001 - returned for the test to judge
            outcome = exc
        started_after = load.stats.sent
        load.wait_for_requests(started_after + settle)
        # what clients got once the action returned
        tail = LoadGenerator(prod.urls(), concurrency=4, rate=200, max_requests=80)
    with tail:
        tail.wait_for_requests(80)
    assert tail.stats.failed == 0 and tail.stats.ok >= 80, tail.stats.as_dict()
    return outcome, load.stats, tail.stats


def test_blue_green_deploy_then_instant_rollback(prod: Prod):
    before = prod.serving()
    prod.version("2.0.0")
    result, stats, after = under_load(prod, lambda: prod.executor().deploy("production", strategy="blue-green"))
    assert not isinstance(result, Exception), result
    assert stats.failed == 0, stats.as_dict()
    assert set(after.versions) == {"2.0.0"}
    status = prod.status()
    standby = {s["id"] for s in status["servers"] if s["state"] == "standby"}
    assert standby == before and not (prod.serving() & before)
    assert all(not process_gone(s["pid"]) for s in status["servers"] if s["id"] in standby)
    executor = prod.executor()
    for lb in executor.store.load_balancers("production"):
        members = executor.lbs.members(lb.handle_data)
        assert all(members[s].standing_by for s in standby if s in members)
        assert sum(1 for s in standby if s in members) == PRODUCTION_COUNTS[lb.role]

    started = time.monotonic()
    result, stats, after = under_load(prod, lambda: prod.executor().rollback("production"))
    assert not isinstance(result, Exception), result
    assert stats.failed == 0, stats.as_dict()
    assert set(after.versions) == {"1.0.0"}
    assert prod.serving() == before
    assert not [s for s in prod.status()["servers"] if s["state"] == "standby"]
    history = prod.executor().history("production", limit=2)
    assert [(op["kind"], op["release"]["kind"]) for op in history] == [("rollback", "rollback"), ("deploy", "deploy")]
    assert "switched back" in history[0]["release"]["reason"] and "launch" not in history[0]["phases"]
    assert time.monotonic() - started < 30  # the benchmark measures it; here: it did not redeploy


def test_kept_group_expires(prod: Prod):
    prod.edit(lambda d: d["environments"]["production"]["rollout"].update(keep_previous="1s"))
    prod.version("2.0.0")
    prod.executor().deploy("production", strategy="blue-green")
    standby = [s for s in prod.status()["servers"] if s["state"] == "standby"]
    assert len(standby) == sum(PRODUCTION_COUNTS.values())
    time.sleep(1.1)  # let keep_previous pass: what is tested is the expiry itself
    assert sorted(prod.executor().up("production").retired) == sorted(s["id"] for s in standby)
    assert not [s for s in prod.status()["servers"] if s["state"] == "standby"]
    assert all(process_gone(s["pid"]) for s in standby)


def test_blue_green_build_failing_health_never_switches(prod: Prod):
    before = prod.serving()
    prod.edit(lambda d: (d["roles"]["backend"].setdefault("env", {}).update(HEALTH_FAIL="1"), d["defaults"]["deadlines"].update(health="2s")))
    result, stats, after = under_load(prod, lambda: prod.executor().deploy("production", strategy="blue-green"))
    assert isinstance(result, GateFailed) and result.gate == "health"
    assert stats.failed == 0 and prod.serving() == before
    assert not [s for s in prod.status()["servers"] if s["state"] == "standby"]


def test_canary_catches_a_build_that_fails_under_load(prod: Prod):
    before = prod.serving()
    prod.edit(lambda d: d["environments"]["production"]["roles"]["frontend"]["env"].update(FAIL_AFTER_REQUESTS="40"))
    result, stats, after = under_load(prod, lambda: prod.executor().deploy("production", strategy="canary"))
    assert isinstance(result, CanaryFailed), result
    assert "canary of frontend rolled back" in str(result) and "failed on the new build" in str(result)
    assert stats.failed == 0, stats.as_dict()  # the balancer retried the canary's 5xx elsewhere
    assert prod.serving("frontend") == {s for s in before if s.startswith("frontend")}
    history = prod.executor().history("production", limit=1)[0]
    assert history["status"] == "failed" and history["phases"]["canary"]["count"] == 1


def test_canary_failing_warm_up_never_serves(prod: Prod):
    before = prod.serving()
    prod.edit(lambda d: d["environments"]["production"]["roles"]["frontend"]["env"].update(PAGE_ERRORS="1"))
    result, stats, _ = under_load(prod, lambda: prod.executor().deploy("production", strategy="canary"))
    assert isinstance(result, GateFailed) and result.gate == "warm-up"
    assert stats.failed == 0 and prod.serving() == before


def test_canary_paused_then_promoted(prod: Prod):
    prod.version("2.0.0")
    result, stats, _ = under_load(prod, lambda: prod.executor().deploy("production", strategy="canary", pause=True))
    assert not isinstance(result, Exception), result
    assert result.paused and stats.failed == 0
    serving = prod.status()["servers"]
    new = [s for s in serving if s["in_service"] and s["id"] in result.launched]
    assert len(new) == 3  # one canary per role, beside the old servers
    assert len([s for s in serving if s["in_service"]]) == sum(PRODUCTION_COUNTS.values()) + 3
    assert prod.executor().history("production", limit=1)[0]["status"] == "paused"

    result, stats, after = under_load(prod, lambda: prod.executor().promote("production"))
    assert not isinstance(result, Exception), result
    assert stats.failed == 0 and set(after.versions) == {"2.0.0"}
    assert len(prod.serving()) == sum(PRODUCTION_COUNTS.values())
    statuses = [op["status"] for op in prod.executor().history("production", limit=2)]
    assert statuses == ["succeeded", "promoted"]


def test_canary_paused_then_rolled_back(prod: Prod):
    before = prod.serving()
    prod.version("2.0.0")
    prod.executor().deploy("production", strategy="canary", pause=True)
    result, stats, after = under_load(prod, lambda: prod.executor().rollback("production"))
    assert not isinstance(result, Exception), result
    assert stats.failed == 0 and set(after.versions) == {"1.0.0"}
    assert prod.serving() == before


def test_rollback_without_kept_group_redeploys_the_previous_release_rolling(prod: Prod):
    prod.edit(lambda d: d["environments"]["production"]["rollout"].update(strategy="canary"))
    prod.version("2.0.0")
    prod.executor().deploy("production")  # canary, then the rest
    assert prod.executor().history("production", limit=1)[0]["phases"]["canary"]["count"] == 3
    plan = prod.executor().describe("production", "rollback")
    ids_before_dry_run = prod.serving()
    assert "redeploy the release of" in plan["action"] and prod.serving() == ids_before_dry_run
    result, stats, after = under_load(prod, lambda: prod.executor().rollback("production"))
    assert not isinstance(result, Exception), result
    assert stats.failed == 0 and set(after.versions) == {"1.0.0"}
    op = prod.executor().history("production", limit=1)[0]
    assert op["kind"] == "rollback" and "canary" not in op["phases"]  # never repeats a canary
    assert op["release"]["reason"].startswith("back to the release of")
