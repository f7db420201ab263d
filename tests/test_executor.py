"""The executor's invariants, with the in-memory drivers (no process, no network).

The real drivers are exercised in the integration tests; here every event is recorded in
order with how many members take traffic right after it, so each invariant of DESIGN.md is
checked at every step: launch before terminate, never below the allowed count, never a
destroy while the balancer sends to the server, nothing left behind on a failure path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fakes import FakeWorld
from phoenixctl.errors import GateFailed, PhoenixError
from phoenixctl.engine import Executor, Project, Reporter

SPEC = {
    "project": "fake",
    "provider": "fake",
    "images": {"app": {"start": "serve"}},
    "roles": {"web": {"image": "app", "port": 8080}, "api": {"image": "app", "port": 9090}},
    "environments": {"prod": {"roles": {"web": 4, "api": 2}, "rollout": {"max_surge": 1, "max_unavailable": 0}}},
    "defaults": {"deadlines": {"boot": "2s", "health": "1s", "swap": "2s", "drain": "2s", "stop": "2s"}},
}


class Fleet:
    def __init__(self, directory: Path, **changes):
        self.spec_path = directory / "phoenix.yaml"
        self.write(**changes)
        self.world = FakeWorld.of(directory / ".phoenix")

    def write(self, **rollout) -> None:
        spec = yaml.safe_load(yaml.safe_dump(SPEC))
        spec["environments"]["prod"]["rollout"].update(rollout)
        self.spec_path.write_text(yaml.safe_dump(spec))

    def executor(self) -> Executor:
        return Executor(Project(self.spec_path))

    def serving(self, role: str) -> set[str]:
        return self.world.serving(f"prod/{role}")

    def alive(self) -> set[str]:
        return {sid for sid, server in self.world.servers.items() if server["alive"]}


@pytest.fixture
def fleet(tmp_path: Path) -> Fleet:
    fleet = Fleet(tmp_path)
    fleet.executor().up("prod")
    return fleet


def test_up_then_rolling_rotation_keeps_every_invariant(fleet: Fleet):
    before = fleet.serving("web") | fleet.serving("api")
    assert len(fleet.serving("web")) == 4 and len(fleet.serving("api")) == 2
    start = len(fleet.world.events)
    result = fleet.executor().rotate("prod")
    assert sorted(result.retired) == sorted(before) and len(result.launched) == 6
    assert fleet.world.min_serving("prod/web", start) >= 4  # max_unavailable 0
    assert fleet.world.min_serving("prod/api", start) >= 2
    events = [e for e in fleet.world.events[start:] if e[0] in ("launch", "drain") and e[1].startswith("web")]
    # launch before terminate, one at a time (max_surge 1): launch, drain, launch, drain ...
    assert [e[0] for e in events] == ["launch", "drain"] * 4
    assert fleet.world.violations == []
    assert fleet.alive() == fleet.serving("web") | fleet.serving("api")


def test_a_failing_health_gate_leaves_the_old_servers_serving(fleet: Fleet):
    before = fleet.serving("web")
    fleet.world.unhealthy_roles.add("web")
    with pytest.raises(GateFailed) as raised:
        fleet.executor().rotate("prod", role="web")
    assert raised.value.gate == "health"
    assert fleet.serving("web") == before
    assert fleet.alive() == before | fleet.serving("api")  # the new server is gone
    assert fleet.world.violations == []


def test_parallel_retirements_never_drain_the_last_server(fleet: Fleet):
    """With max_unavailable 100% the plan retires the two oldest of three web servers side
    by side first; the newest is secretly DOWN. Checked and drained under one lock per
    balancer, the guard must keep one of the two serving."""
    fleet.write(max_surge=0, max_unavailable="100%")
    spec = yaml.safe_load(fleet.spec_path.read_text())
    spec["environments"]["prod"]["roles"]["web"] = 3
    fleet.spec_path.write_text(yaml.safe_dump(spec))
    executor = fleet.executor()
    executor.up("prod")  # retires one of the four: three left
    rows = executor.store.servers("prod", "web")  # oldest first, as the plan orders them
    assert len(rows) == 3
    fleet.world.servers[rows[-1].id]["healthy"] = False  # the newest: DOWN behind the plan's back
    start = len(fleet.world.events)
    with pytest.raises(PhoenixError, match="it is the last web server in service"):
        fleet.executor().rotate("prod", role="web")
    assert fleet.world.min_serving("prod/web", start) >= 1


def test_cleanup_destroys_new_servers_even_when_the_balancer_is_unreachable(fleet: Fleet):
    before = fleet.alive()
    fleet.world.unhealthy_roles.add("api")
    fleet.world.fail_remove = True
    with pytest.raises(PhoenixError):
        fleet.executor().rotate("prod", role="api")
    assert fleet.alive() == before  # nothing orphaned, even with the balancer failing


def test_blue_green_switches_in_one_step_and_keeps_the_previous_group(fleet: Fleet):
    before = fleet.serving("web")
    start = len(fleet.world.events)
    fleet.write(strategy="blue-green")
    fleet.executor().rotate("prod", role="web")
    switches = [e for e in fleet.world.events[start:] if e[0] == "switch"]
    assert len(switches) == 1 and set(switches[0][2]) == before  # the whole old group, at once
    assert fleet.world.min_serving("prod/web", start) >= 4
    status = fleet.executor().status("prod")
    assert {s["id"] for s in status["servers"] if s["state"] == "standby"} == before
    start = len(fleet.world.events)
    fleet.executor().rollback("prod")
    assert fleet.serving("web") == before and fleet.world.min_serving("prod/web", start) >= 4
    assert not [e for e in fleet.world.events[start:] if e[0] == "launch"]  # a switch, no redeploy
    assert fleet.world.violations == []


def test_blue_green_rollback_switches_every_role_back_before_it_drains_any(fleet: Fleet):
    """A rollback switched a role back, waited out its drain, then switched the next: clients
    saw the previous build on the last role a drain or two late. Every switch comes first now."""
    before = {role: fleet.serving(role) for role in ("web", "api")}
    fleet.write(strategy="blue-green")
    fleet.executor().rotate("prod")
    start = len(fleet.world.events)
    fleet.executor().rollback("prod")
    events = [e[0] for e in fleet.world.events[start:]]
    assert events.count("switch") == 2
    last_switch = max(i for i, kind in enumerate(events) if kind == "switch")
    assert "destroy" in events and last_switch < events.index("destroy") and last_switch < events.index("remove")
    assert {role: fleet.serving(role) for role in ("web", "api")} == before
    assert fleet.world.violations == []


def test_control_plane_rotates_two_hundred_servers(tmp_path: Path):
    fleet = Fleet(tmp_path, max_surge="25%")
    spec = yaml.safe_load(fleet.spec_path.read_text())
    spec["environments"]["prod"]["roles"] = {"web": 200}
    fleet.spec_path.write_text(yaml.safe_dump(spec))
    fleet.executor().up("prod")
    before = fleet.serving("web")
    start = len(fleet.world.events)
    result = fleet.executor().rotate("prod")
    assert len(before) == 200 and sorted(result.retired) == sorted(before)
    assert fleet.world.min_serving("prod/web", start) >= 200
    assert len(fleet.alive()) == 200 and fleet.world.violations == []


def test_watch_exits_non_zero_when_it_ends_with_a_role_below_its_count(fleet: Fleet, capsys):
    from phoenixctl.cli import main

    victims = sorted(fleet.serving("web"))[:2]
    for victim in victims:
        fleet.world.servers[victim]["alive"] = False  # two web servers die ...
    fleet.world.unhealthy_roles.add("web")  # ... and their replacements fail their health gate
    code = main(["watch", "prod", "--passes", "1", "--interval", "0", "-f", str(fleet.spec_path)])
    captured = capsys.readouterr()
    assert code == 1, captured
    assert captured.err.strip().splitlines()[-1] == "phoenix: error: watch ended with prod below its count: web serves 2 of 4"
    fleet.world.unhealthy_roles.clear()  # healthy again: the next watch heals and ends at full count
    assert main(["watch", "prod", "--passes", "1", "--interval", "0", "-f", str(fleet.spec_path)]) == 0
    assert len(fleet.serving("web")) == 4 and fleet.world.violations == []


def test_chaos_terminates_a_serving_server_expected_and_healing_destroys_none_in_service(tmp_path: Path):
    """`terminate` is chaos: killing a server the balancer sends to is what it is for, so the
    fake records it apart (expected), never as a violation; the healing that follows must
    still take the dead member out before destroying anything."""
    from phoenixctl.engine.watch import chaos

    fleet = Fleet(tmp_path)
    spec = yaml.safe_load(fleet.spec_path.read_text())
    spec["provider"] = {"name": "fake", "server_checks": False}  # no load: nothing listens at the fake addresses
    fleet.spec_path.write_text(yaml.safe_dump(spec))
    fleet.executor().up("prod")
    before = fleet.serving("web")
    report = chaos(fleet.spec_path, "prod", 1, "web", True, 10, 10, Reporter(), seed=7)
    [victim] = report.killed
    assert victim in before and fleet.world.terminated_in_service == [victim]
    assert fleet.world.violations == []
    assert len(fleet.serving("web")) == 4 and victim not in fleet.serving("web") | fleet.alive()


def _new_build(fleet: Fleet, on_failure: str) -> None:
    spec = yaml.safe_load(fleet.spec_path.read_text())
    spec["images"]["app"]["start"] = "serve --build 2"  # a new image for both roles
    spec["environments"]["prod"]["rollout"]["on_failure"] = on_failure
    fleet.spec_path.write_text(yaml.safe_dump(spec))


def _fingerprints(fleet: Fleet, role: str) -> set[str]:
    return {row.fingerprint for row in fleet.executor().store.servers("prod", role) if row.in_service}


def test_a_failed_deploy_rolls_back_the_roles_it_already_moved(fleet: Fleet):
    """web converges on the new build, api fails its gate: by default web goes back, so the
    environment ends on one release, and the error says which release each role serves."""
    before = {role: _fingerprints(fleet, role) for role in ("web", "api")}
    up_release = fleet.executor().store.releases("prod")[0].operation_id
    _new_build(fleet, "rollback")
    fleet.world.unhealthy_roles.add("api")
    start = len(fleet.world.events)
    with pytest.raises(GateFailed) as raised:
        fleet.executor().deploy("prod")
    assert {role: _fingerprints(fleet, role) for role in ("web", "api")} == before
    assert f"prod serves the release of {up_release} on every role" in str(raised.value)
    assert len(fleet.serving("web")) == 4 and len(fleet.serving("api")) == 2
    assert fleet.world.min_serving("prod/web", start) >= 4 and fleet.world.violations == []
    history = fleet.executor().history("prod", limit=1)[0]
    assert history["status"] == "failed" and f"serves the release of {up_release} on every role" in history["summary"]


def test_a_failed_deploy_keeps_moved_roles_when_asked_and_says_so(fleet: Fleet):
    before = _fingerprints(fleet, "api")
    up_release = fleet.executor().store.releases("prod")[0].operation_id
    _new_build(fleet, "keep")
    fleet.world.unhealthy_roles.add("api")
    with pytest.raises(GateFailed) as raised:
        fleet.executor().deploy("prod")
    assert _fingerprints(fleet, "api") == before and len(_fingerprints(fleet, "web")) == 1
    assert _fingerprints(fleet, "web") != _fingerprints(fleet, "api")
    assert f"prod serves the release of {up_release} on api; the new build on web" in str(raised.value)
