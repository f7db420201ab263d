"""Keeping servers phoenix (issue 7): plan reasons, drift and state on servers, persistent
mounts, the watch loop (self-healing, SIGTERM) and chaos, with real servers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import PHOENIX, PRODUCTION_COUNTS, brought_up, cli_status, wait_for
from conftest import phoenix as run
from phoenixctl import cli

pytestmark = pytest.mark.slow
def edit(spec_path: Path, change) -> None:
    data = yaml.safe_load(spec_path.read_text())
    change(data)
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))


def plan(spec_path: Path) -> tuple[int, dict]:
    result = run(spec_path, "plan", "production", "--json")
    return result.returncode, json.loads(result.stdout)


def reasons(report: dict) -> dict[str, str]:
    return {item["server"]: item["reason"] for role in report["roles"] for item in role["replace"]}


@pytest.fixture
def production(tmp_path_factory):
    with brought_up(tmp_path_factory, "keeper") as spec_path:
        yield spec_path


def test_plan_gives_age_config_and_image_reasons(production: Path):
    code, report = plan(production)
    assert code == 0 and not report["needs_replacement"]
    servers = {s["id"]: s for s in cli_status(production)["servers"]}

    edit(production, lambda d: d["environments"]["production"].update(max_age="1s"))
    time.sleep(1.1)  # let the servers pass max_age: the age itself is what is tested
    code, report = plan(production)
    assert code == 1
    assert set(reasons(report)) == set(servers)
    assert all(r.startswith("older than max_age") for r in reasons(report).values())

    edit(production, lambda d: (d["environments"]["production"].update(max_age="7d"), d["roles"]["backend"].setdefault("env", {}).update(WORKERS="2")))
    code, report = plan(production)
    assert code == 1 and reasons(report) == {sid: "boot configuration changed" for sid, s in servers.items() if s["role"] == "backend"}

    (production.parent / "VERSION").write_text("9.0.0\n")
    code, report = plan(production)
    assert code == 1 and set(reasons(report).values()) == {"image changed"} and set(reasons(report)) == set(servers)
    # plan changed nothing
    assert {s["id"] for s in cli_status(production)["servers"]} == set(servers)


def test_drift_is_seen_and_watch_replaces_the_server(production: Path):
    edit_server = next(s for s in cli_status(production)["servers"] if s["role"] == "edit")
    root = Path(edit_server["root"])
    (root / "app" / "server.py").write_text((root / "app" / "server.py").read_text() + "\n# hotfix by hand\n")
    (root / "tmp").mkdir()
    (root / "tmp" / "cache.bin").write_bytes(b"cache")  # the edit role declares no scratch: a new file is state
    result = run(production, "drift", "production", "--json")
    assert result.returncode == 1, result.stderr  # like plan: 1 when there is something to act on
    report = {s["id"]: s for s in json.loads(result.stdout)["servers"]}
    assert report[edit_server["id"]]["modified"] == ["app/server.py"]
    assert report[edit_server["id"]]["added"] == ["tmp/cache.bin"]
    assert all(not (s["modified"] or s["added"] or s["deleted"]) for sid, s in report.items() if sid != edit_server["id"])
    code, planned = plan(production)
    assert code == 1 and reasons(planned)[edit_server["id"]].startswith("drifted: 1 modified (app/server.py), 1 added")

    # tmp/cache.bin is state on the server (edit declares no scratch): retiring it is refused,
    # and that refusal does not stop the pass from healing a dead server of another role
    backend = next(s for s in cli_status(production)["servers"] if s["role"] == "backend")
    os.killpg(backend["pid"], signal.SIGKILL)
    watch = run(production, "watch", "production", "--passes", "1")
    assert watch.returncode == 0, watch.stdout + watch.stderr  # every role serves its count when it ends
    assert "refusing to retire " + edit_server["id"] in watch.stdout and "tmp/cache.bin" in watch.stdout
    assert f"removing {backend['id']}: dead" in watch.stdout
    after = cli_status(production)
    assert edit_server["id"] in {s["id"] for s in after["servers"]}
    assert backend["id"] not in {s["id"] for s in after["servers"]}
    assert sum(1 for s in after["servers"] if s["role"] == "backend" and s["in_service"]) == 2
    history = json.loads(run(production, "history", "production", "--json", "--limit", "1").stdout)
    assert history[0]["status"] == "incomplete" and f"refused: {edit_server['id']}" in history[0]["summary"]

    # declared as scratch, the file no longer blocks; the hand-made fix is drift: replaced
    edit(production, lambda d: d["roles"]["edit"].update(scratch=["tmp/*"]))
    watch = run(production, "watch", "production", "--passes", "1")
    assert watch.returncode == 0, watch.stderr
    assert f"will replace {edit_server['id']}: drifted: 1 modified (app/server.py)" in watch.stdout
    after = cli_status(production)
    assert edit_server["id"] not in {s["id"] for s in after["servers"]}
    assert sum(1 for s in after["servers"] if s["role"] == "edit" and s["in_service"]) == 1
    assert run(production, "plan", "production").returncode == 0


def test_state_on_a_server_blocks_retirement_unless_discarded(production: Path, capsys):
    backend = next(s for s in cli_status(production)["servers"] if s["role"] == "backend")
    (Path(backend["root"]) / "uploads.db").write_text("someone's data")
    code = cli.main(["rotate", "production", "--role", "backend", "-f", str(production)])
    err = capsys.readouterr().err
    assert code == 1 and f"refusing to retire {backend['id']}: it holds state written on the server (uploads.db)" in err
    assert err.strip().splitlines()[-1].startswith("phoenix: error: refusing to retire")
    assert backend["id"] in {s["id"] for s in cli_status(production)["servers"]}  # nothing launched or retired
    assert len(cli_status(production)["servers"]) == sum(PRODUCTION_COUNTS.values())
    assert cli.main(["rotate", "production", "--role", "backend", "--discard-state", "-f", str(production)]) == 0
    assert backend["id"] not in {s["id"] for s in cli_status(production)["servers"]}


def test_persistent_mount_survives_replacement(production: Path):
    lbs = {lb["role"]: lb["address"] for lb in cli_status(production)["load_balancers"]}
    put = httpx.put(f"http://{lbs['edit']}/api/articles/hello", content="Hello phoenix\nbody")
    assert put.status_code == 201
    edit_server = next(s for s in cli_status(production)["servers"] if s["role"] == "edit")
    assert (Path(edit_server["root"]) / "persistent" / "content" / "hello.txt").read_text().startswith("Hello phoenix")
    assert run(production, "rotate", "production", "--role", "edit").returncode == 0
    assert run(production, "rotate", "production", "--role", "backend").returncode == 0
    articles = httpx.get(f"http://{lbs['backend']}/api/articles").json()["articles"]
    assert [a["name"] for a in articles] == ["hello"]
    new_edit = next(s for s in cli_status(production)["servers"] if s["role"] == "edit")
    assert new_edit["id"] != edit_server["id"]
    assert (Path(new_edit["root"]) / "persistent" / "content" / "hello.txt").exists()
    assert (production.parent / ".phoenix" / "persistent" / "production" / "content" / "hello.txt").exists()
    assert run(production, "drift", "production", "--json").returncode == 0
    assert not json.loads(run(production, "drift", "production", "--json").stdout)["drifted"]


def test_watch_heals_a_killed_server_and_stops_cleanly_on_sigterm(production: Path):
    victim = next(s for s in cli_status(production)["servers"] if s["role"] == "frontend")
    os.killpg(victim["pid"], signal.SIGKILL)
    env = {k: v for k, v in os.environ.items() if k != "PHOENIX_FAILPOINT"}
    watcher = subprocess.Popen(
        [PHOENIX, "watch", "production", "--interval", "1", "-f", str(production)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        def healed():
            servers = cli_status(production)["servers"]
            return victim["id"] not in {s["id"] for s in servers} and sum(1 for s in servers if s["role"] == "frontend" and s["in_service"]) == 3

        wait_for(healed, 60, "watch to replace the killed frontend")
        watcher.send_signal(signal.SIGTERM)
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.communicate()
    assert watcher.returncode == 0, err
    assert f"removing {victim['id']}: dead: its process is gone" in out
    assert "watch stopped after" in out
    history = json.loads(run(production, "history", "production", "--json", "--limit", "50").stdout)
    assert not [op for op in history if op["status"] == "running"]


def test_chaos_then_watch_returns_to_full_count(production: Path):
    env = {k: v for k, v in os.environ.items() if k != "PHOENIX_FAILPOINT"}
    watcher = subprocess.Popen(
        [PHOENIX, "watch", "production", "--interval", "1", "-f", str(production)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        before = {s["id"] for s in cli_status(production)["servers"]}
        result = run(production, "chaos", "production", "--kill", "3", "--timeout", "90", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert len(report["killed"]) == 3 and set(report["killed"]) <= before
        assert report["failed"] == 0, report
        servers = cli_status(production)["servers"]
        assert {role: sum(1 for s in servers if s["role"] == role and s["in_service"]) for role in PRODUCTION_COUNTS} == PRODUCTION_COUNTS
    finally:
        watcher.send_signal(signal.SIGTERM)
        watcher.wait(60)
