"""The simulated provider (issue 15): a fleet of hundreds of servers rehearsed through separate
`phoenix` processes, nothing started. Each command is a real subprocess; what one command
did, the next sees through the world kept under `.phoenix/simulated/`.

Modelled durations are checked by what they make happen (a gate that waits, a drain that
outlasts its deadline), never by the time they took."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml

from conftest import PHOENIX, cli_status, phoenix, wait_for
from phoenixctl.state import StateStore

SPEC = {
    "project": "rehearsal",
    "provider": {"name": "simulated"},
    "images": {"app": {"start": "serve"}},
    "roles": {
        "web": {"image": "app", "port": 8080, "warmup": {"paths": ["/"]}},
        "api": {"image": "app", "port": 9090},
    },
    "environments": {
        "ci": {"roles": {"web": 120, "api": 30}, "rollout": {"max_surge": "25%"}},
        "qa": {"roles": {"web": 30, "api": 5}, "rollout": {"max_surge": "50%"}},
    },
    "defaults": {"deadlines": {"boot": "10s", "health": "10s", "swap": "10s", "drain": "10s", "stop": "10s"}},
}


def write_spec(directory: Path, **changes) -> Path:
    spec = json.loads(json.dumps(SPEC))
    for key, value in changes.items():
        spec[key] = value
    path = directory / "phoenix.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def ok(result: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def as_json(spec_path: Path, *args: str) -> dict | list:
    return json.loads(ok(phoenix(spec_path, *args, "--json")).stdout)


def serving(spec_path: Path, env: str) -> dict[str, set[str]]:
    """In-service server ids by role, as `phoenix status ENV --json` shows them."""
    roles: dict[str, set[str]] = {}
    for server in cli_status(spec_path, env)["servers"]:
        if server["in_service"]:
            roles.setdefault(server["role"], set()).add(server["id"])
    return roles


def world(spec_path: Path, env: str) -> dict:
    """The environment's simulated world as its files hold it once no command runs."""
    folder = spec_path.parent / ".phoenix" / "simulated"
    assert (folder / f"{env}.journal").read_bytes() == b""  # folded into the snapshot when the command ended
    return json.loads((folder / f"{env}.json").read_text())


@pytest.mark.slow
def test_a_fleet_of_hundreds_across_separate_commands(tmp_path: Path):
    spec_path = write_spec(tmp_path)

    up = ok(phoenix(spec_path, "up", "ci"))
    assert "not warmed: simulated servers run nothing" in up.stderr  # warm-up skipped, saying why
    before = serving(spec_path, "ci")
    assert {role: len(ids) for role, ids in before.items()} == {"web": 120, "api": 30}
    status = cli_status(spec_path, "ci")
    assert all(s["address"].endswith(".simulated.invalid:8080") for s in status["servers"] if s["role"] == "web")
    assert set(world(spec_path, "ci")["servers"]) == before["web"] | before["api"]

    plan = as_json(spec_path, "plan", "ci")
    assert plan["needs_replacement"] is False and all(not role["replace"] for role in plan["roles"])

    rotated = as_json(spec_path, "rotate", "ci")
    after = serving(spec_path, "ci")
    assert {role: len(ids) for role, ids in after.items()} == {"web": 120, "api": 30}
    assert not (after["web"] | after["api"]) & (before["web"] | before["api"])  # every server replaced
    assert set(rotated["retired"]) == before["web"] | before["api"] and set(rotated["launched"]) == after["web"] | after["api"]
    assert set(world(spec_path, "ci")["servers"]) == after["web"] | after["api"]  # the old ones are gone from the world too

    history = as_json(spec_path, "history", "ci")
    assert [(op["kind"], op["status"]) for op in history] == [("rotate", "succeeded"), ("up", "succeeded")]
    assert {"launch", "boot", "health", "swap", "drain", "destroy"} <= set(history[0]["phases"])
    assert history[0]["phases"]["launch"]["count"] == 150 and history[0]["phases"]["drain"]["count"] == 150

    chaos = ok(phoenix(spec_path, "chaos", "ci", "--kill", "3", "--heal", "--seed", "1", "--timeout", "60"))
    assert "chaos: no load sent: simulated servers run nothing" in chaos.stderr
    assert {role: len(ids) for role, ids in serving(spec_path, "ci").items()} == {"web": 120, "api": 30}

    ok(phoenix(spec_path, "destroy", "ci"))
    assert cli_status(spec_path, "ci")["servers"] == []
    assert world(spec_path, "ci") == {"format": 1, "servers": {}, "balancers": {}}


@pytest.mark.slow
def test_two_environments_driven_side_by_side_keep_each_others_servers(tmp_path: Path):
    """Two processes on two environments at once: each environment has its own files, so
    neither command's writes can undo the other's."""
    spec_path = write_spec(tmp_path)
    for command in ("up", "rotate"):
        running = [subprocess.Popen([PHOENIX, command, env, "-f", str(spec_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for env in ("ci", "qa")]
        for process in running:
            _, stderr = process.communicate(timeout=300)
            assert process.returncode == 0, stderr[-3000:]
        for env, counts in (("ci", {"web": 120, "api": 30}), ("qa", {"web": 30, "api": 5})):
            ids = serving(spec_path, env)
            assert {role: len(found) for role, found in ids.items()} == counts
            assert set(world(spec_path, env)["servers"]) == set().union(*ids.values())


def test_modelled_durations_make_the_gates_wait(tmp_path: Path):
    """web takes 1.5s to listen and 1.5s more to pass its check: its servers are seen booting,
    then checking, then in service. api's own boot (60s) outlasts the 2s boot deadline: its
    boot gate fails, whatever web does."""
    provider = {"name": "simulated", "simulated": {"boot": "1.5s", "health": "1.5s", "roles": {"api": {"boot": "60s"}}}}
    spec_path = write_spec(tmp_path, provider=provider)
    spec = yaml.safe_load(spec_path.read_text())
    spec["environments"]["ci"]["roles"] = {"web": 1}
    spec["environments"]["qa"]["roles"] = {"api": 1}
    spec["defaults"]["deadlines"]["boot"] = "5s"
    spec_path.write_text(yaml.safe_dump(spec))

    process = subprocess.Popen([PHOENIX, "up", "ci", "-f", str(spec_path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    seen: list[str] = []

    def in_service() -> bool:
        store = StateStore(tmp_path / ".phoenix" / "state.db")
        try:
            states = [row.state for row in store.servers("ci")]
        finally:
            store.close()
        if states and (not seen or seen[-1] != states[0]):
            seen.append(states[0])
        return states == ["in_service"]

    try:
        wait_for(in_service, 60, "the web server in service", interval=0.02)
    finally:
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert [state for state in seen if state in ("booting", "checking", "in_service")] == ["booting", "checking", "in_service"]

    spec["defaults"]["deadlines"]["boot"] = "2s"
    spec_path.write_text(yaml.safe_dump(spec))
    failed = phoenix(spec_path, "up", "qa")
    assert failed.returncode == 1
    assert re.fullmatch(
        r"phoenix: error: server (api-[0-9a-f]{6}) failed its boot gate: \1 to listen: not done after 2s", failed.stderr.splitlines()[-1]
    ), failed.stderr


def test_a_drain_longer_than_its_deadline_is_cut_short(tmp_path: Path):
    """A retiring member keeps its sessions for the modelled drain time (60s here), longer
    than the 1s drain deadline: Phoenix says so and removes it anyway."""
    spec_path = write_spec(tmp_path, provider={"name": "simulated", "simulated": {"drain": "60s"}})
    spec = yaml.safe_load(spec_path.read_text())
    spec["environments"]["qa"]["roles"] = {"web": 1}
    spec["defaults"]["deadlines"]["drain"] = "1s"
    spec_path.write_text(yaml.safe_dump(spec))
    ok(phoenix(spec_path, "up", "qa"))
    rotated = ok(phoenix(spec_path, "rotate", "qa"))
    assert "to reach zero" in rotated.stderr and "removing it anyway" in rotated.stderr, rotated.stderr


BAD_SIMULATED = {
    "a duration that is none": ({"name": "simulated", "simulated": {"boot": "soon"}}, "provider.simulated.boot: 'soon' is not a duration (use e.g. 30s, 500ms, 2m)"),
    "a negative duration": ({"name": "simulated", "simulated": {"roles": {"web": {"health": -1}}}},
                            "provider.simulated.roles.web.health: a duration must not be negative"),
    "an unknown field": ({"name": "simulated", "simulated": {"boot_time": "1s"}}, "provider.simulated.boot_time: unknown field"),
    "an unknown role": ({"name": "simulated", "simulated": {"roles": {"wbe": {"boot": "1s"}}}},
                        "provider.simulated.roles.wbe: unknown role 'wbe' (roles: api, web)"),
    "on another provider": ({"name": "local", "simulated": {"boot": "1s"}}, "provider.simulated: is for provider simulated, not local"),
}


@pytest.mark.parametrize("case", BAD_SIMULATED)
def test_a_bad_simulated_field_is_one_line_naming_the_place(tmp_path: Path, case: str):
    provider, message = BAD_SIMULATED[case]
    spec_path = write_spec(tmp_path, provider=provider)
    text = spec_path.read_text()
    line = next(n for n, content in enumerate(text.splitlines(), 1) if content.strip().startswith(message.split(":")[0].split(".")[-1] + ":"))
    result = phoenix(spec_path, "validate")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"phoenix: error: {spec_path}:{line}: {message}"


@pytest.mark.slow
def test_a_rotation_killed_mid_way_is_recovered_to_the_desired_count(tmp_path: Path):
    """`kill -9` in the middle of a rotation (the swap failpoint): the changes made until then
    are in the world's journal, as a cloud would keep the servers; `phoenix recover` brings
    the record and the world together, every role serving exactly its count."""
    spec_path = write_spec(tmp_path)
    ok(phoenix(spec_path, "up", "ci"))
    before = serving(spec_path, "ci")

    killed = phoenix(spec_path, "rotate", "ci", failpoint="swap:50")
    assert killed.returncode == -9, killed.stderr[-2000:]
    journal = tmp_path / ".phoenix" / "simulated" / "ci.journal"
    assert journal.stat().st_size > 0  # what the killed command did, not yet folded

    recovered = ok(phoenix(spec_path, "recover", "ci"))
    assert "never finished: recovering" in recovered.stdout + recovered.stderr
    after = serving(spec_path, "ci")
    assert {role: len(ids) for role, ids in after.items()} == {"web": 120, "api": 30}
    assert (after["web"] | after["api"]) - (before["web"] | before["api"])  # the killed command's new servers serve
    assert set(world(spec_path, "ci")["servers"]) == after["web"] | after["api"]  # nothing orphaned, nothing missing
    plan = as_json(spec_path, "plan", "ci")
    assert plan["needs_replacement"] is False


def test_the_simulated_provider_says_what_it_cannot_do(tmp_path: Path):
    spec = json.loads(json.dumps(SPEC))
    spec["roles"]["web"]["discovery"] = {"type": "floating_ip"}
    spec["environments"] = {"ci": {"roles": {"web": 1}}}
    spec_path = tmp_path / "phoenix.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    result = phoenix(spec_path, "up", "ci")
    assert result.returncode == 2 and result.stderr.strip().endswith("roles.web.discovery.type: provider simulated has no floating IPs")

    spec_path.write_text(yaml.safe_dump(SPEC))
    doctor = {row["capability"]: row for row in as_json(spec_path, "doctor")["capabilities"]}
    assert doctor["server checks"]["ok"] is False and "simulated servers run nothing" in doctor["server checks"]["detail"]


def test_the_benchmarks_spec_rehearses_many_environments(tmp_path: Path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
    try:
        from common import simulated_spec
    finally:
        sys.path.pop(0)
    spec_path = simulated_spec(3, 20, tmp_path, roles=("web", "api"))
    ok(phoenix(spec_path, "up", "env-001"))
    assert {role: len(ids) for role, ids in serving(spec_path, "env-001").items()} == {"web": 20, "api": 20}
    assert cli_status(spec_path, "env-002")["servers"] == []


def test_a_server_id_already_taken_is_drawn_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Six hex digits repeat among thousands of servers (a rotation of 1,000 hit one in about
    one run in eight): a new server never takes an id the record already has."""
    from phoenixctl.engine import Executor, Project
    from phoenixctl.engine import lifecycle

    spec = json.loads(json.dumps(SPEC))
    spec["environments"] = {"ci": {"roles": {"api": 1}}}
    spec_path = tmp_path / "phoenix.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    draws = iter(["aaaaaa", "aaaaaa", "bbbbbb"])
    monkeypatch.setattr(lifecycle, "secrets", SimpleNamespace(token_hex=lambda n: next(draws)))  # lifecycle's draws alone
    for command in ("up", "rotate"):
        project = Project(spec_path)
        try:
            getattr(Executor(project), command)("ci")
        finally:
            project.close()
    assert [s["id"] for s in cli_status(spec_path, "ci")["servers"] if s["in_service"]] == ["api-bbbbbb"]


def test_a_world_of_another_format_is_one_line(tmp_path: Path):
    spec = json.loads(json.dumps(SPEC))
    spec["environments"] = {"ci": {"roles": {"api": 1}}}
    spec_path = tmp_path / "phoenix.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    ok(phoenix(spec_path, "up", "ci"))
    snapshot = tmp_path / ".phoenix" / "simulated" / "ci.json"
    snapshot.write_text('{"format": 2}')
    result = phoenix(spec_path, "status", "ci")
    assert result.returncode == 1 and result.stderr.strip() == (
        f"phoenix: error: {snapshot}: not a simulated world of format 1 (format 2); remove it to start the simulation afresh"
    )
