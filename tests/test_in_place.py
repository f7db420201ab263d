"""In-place environments (issue 17), for real: servers as processes behind real HAProxy,
updated where they stand under steady load; a failing update put back; a hand edit that
survives a deploy and shows in `drift`; one build to a phoenix and an in-place environment
at once; promotion of exactly another environment's images; `compare`.

The example's `ci-legacy` is used with more servers (2 frontend, 2 backend, 1 edit) so both
ways of updating run: drained out of the balancer (roles of two), and updated while it
serves (the only edit server)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import copy_example, destroy_quietly, phoenix
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadGenerator

pytestmark = pytest.mark.slow

LEGACY_COUNTS = {"frontend": 2, "backend": 2, "edit": 1}
LEGACY_ENV = "    env: {LOG_LEVEL: debug}\n    secrets:\n      tls_cert: {file: secrets/ci-legacy/"  # the in-place environment's own lines
LOAD = {"concurrency": 8, "rate": 120.0, "max_seconds": 180.0}


class Legacy:
    """A copy of the example with `ci-legacy` up (built-in update: no deploy script)."""

    def __init__(self, spec_path: Path):
        self.spec_path = spec_path
        self.project_dir = spec_path.parent

    def executor(self) -> Executor:
        return Executor(Project(self.spec_path), lock_timeout=60)

    def run(self, action):
        executor = self.executor()
        try:
            return action(executor)
        finally:
            executor.project.close()

    def status(self, env: str = "ci-legacy") -> dict:
        return self.run(lambda e: e.status(env))

    def load_urls(self, env: str = "ci-legacy") -> list[str]:
        lbs = {lb["role"]: lb["address"] for lb in self.status(env)["load_balancers"]}
        return [f"http://{lbs['frontend']}/", f"http://{lbs['frontend']}/page/1", f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]

    def edit_spec(self, old: str, new: str) -> None:
        text = self.spec_path.read_text()
        assert old in text, old
        self.spec_path.write_text(text.replace(old, new, 1))


def versions(status: dict) -> dict[str, str]:
    """Each server's answer to /version, asked of the server itself (not through a balancer)."""
    return {s["id"]: httpx.get(f"http://{s['address']}/version", timeout=5).text for s in status["servers"]}


def identity(status: dict) -> dict[str, tuple[str, str]]:
    return {s["id"]: (s["launched_at"], s["root"]) for s in status["servers"]}


@pytest.fixture(scope="module")
def legacy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Legacy]:
    spec_path = copy_example(tmp_path_factory, "legacy")
    env = Legacy(spec_path)
    env.edit_spec("    in_place: {command: sh deploy.sh}   # the team's own deployment script, once per server\n", "")
    env.edit_spec(
        "    roles: {backend: 1, edit: 1, frontend: 1}\n  production:",
        "    roles: {backend: 2, edit: 1, frontend: 2}\n  production:",
    )
    original = spec_path.read_text()
    try:
        up = env.run(lambda e: e.up("ci-legacy"))
        assert len(up.launched) == 5
        yield env
    finally:
        spec_path.write_text(original)
        for name in ("ci-legacy", "ci"):
            destroy_quietly(spec_path, name)


def test_in_place_deploy_under_load_keeps_servers_and_fails_no_request(legacy: Legacy):
    before = legacy.status()
    assert sorted(s["role"] for s in before["servers"]) == sorted(r for r, n in LEGACY_COUNTS.items() for _ in range(n))
    (legacy.project_dir / "VERSION").write_text("2.0.0\n")

    with LoadGenerator(legacy.load_urls(), **LOAD) as load:
        load.wait_for_requests(200)
        result = legacy.run(lambda e: e.deploy("ci-legacy"))
        load.wait_for_requests(load.stats.sent + 200)

    assert load.stats.failed == 0, load.stats.as_dict()
    assert sorted(result.updated) == sorted(s["id"] for s in before["servers"])
    assert result.launched == [] and result.retired == []
    after = legacy.status()
    assert identity(after) == identity(before)  # same ids, same age, same root
    assert all(s["in_service"] and s["state"] == "in_service" for s in after["servers"])
    assert len({s["image"] for s in after["servers"]}) == 1 and after["servers"][0]["image"] != before["servers"][0]["image"]
    assert set(versions(after).values()) == {"2.0.0"}
    assert {lb["role"]: lb["members_up"] for lb in after["load_balancers"]} == LEGACY_COUNTS

    # nothing changed since: the next deploy updates nothing
    again = legacy.run(lambda e: e.deploy("ci-legacy"))
    assert again.updated == [] and not again.changed


def test_rotate_is_refused_and_plan_and_drift_work(legacy: Legacy):
    rotated = phoenix(legacy.spec_path, "rotate", "ci-legacy")
    assert rotated.returncode == 1
    assert "rotate refused: environment ci-legacy is in-place" in rotated.stderr and "phoenix deploy ci-legacy" in rotated.stderr
    assert rotated.stderr.count("\n") == 1 and "Traceback" not in rotated.stderr
    plan = phoenix(legacy.spec_path, "plan", "ci-legacy", "--json")
    assert plan.returncode == 0, plan.stderr
    assert all(role["replace"] == [] for role in json.loads(plan.stdout)["roles"])
    drift = phoenix(legacy.spec_path, "drift", "ci-legacy", "--json")
    assert drift.returncode == 0, drift.stderr


def test_hand_edit_survives_the_next_deploy_and_is_reported_by_drift(legacy: Legacy):
    server = next(s for s in legacy.status()["servers"] if s["role"] == "backend")
    root = Path(server["root"])
    (root / "requirements.txt").write_text("aiohttp  # pinned by hand during an incident\n")
    (root / "hotfix.txt").write_text("applied by hand\n")
    (legacy.project_dir / "VERSION").write_text("3.0.0\n")

    result = legacy.run(lambda e: e.deploy("ci-legacy"))

    assert server["id"] in result.updated
    assert (root / "requirements.txt").read_text() == "aiohttp  # pinned by hand during an incident\n"
    assert (root / "hotfix.txt").is_file() and (root / "VERSION").read_text() == "3.0.0\n"
    drift = {s["id"]: s for s in legacy.run(lambda e: e.drift("ci-legacy"))["servers"]}
    assert drift[server["id"]]["modified"] == ["requirements.txt"]
    assert drift[server["id"]]["added"] == ["hotfix.txt"]
    others = [s for sid, s in drift.items() if sid != server["id"]]
    assert all(not (s["modified"] or s["added"] or s["deleted"]) for s in others), others


def test_failing_deploy_script_puts_the_server_back_on_its_previous_build(legacy: Legacy):
    before = legacy.status()
    (legacy.project_dir / "broken-deploy.sh").write_text("echo 'deploy: cannot reach the package mirror' >&2\nexit 3\n")
    legacy.edit_spec(LEGACY_ENV, "    in_place: {command: sh broken-deploy.sh}\n" + LEGACY_ENV)
    (legacy.project_dir / "VERSION").write_text("4.0.0\n")
    try:
        with LoadGenerator(legacy.load_urls(), **LOAD) as load:
            load.wait_for_requests(100)
            deployed = phoenix(legacy.spec_path, "deploy", "ci-legacy")
            load.wait_for_requests(load.stats.sent + 100)
    finally:
        legacy.edit_spec("    in_place: {command: sh broken-deploy.sh}\n", "")
    assert deployed.returncode == 1, deployed.stderr
    assert "the deployment script (sh broken-deploy.sh) exited 3" in deployed.stderr
    assert "was put back on its previous build" in deployed.stderr
    assert load.stats.failed == 0, load.stats.as_dict()
    after = legacy.status()
    assert identity(after) == identity(before)
    assert set(versions(after).values()) == {"3.0.0"}
    assert all(s["in_service"] for s in after["servers"])
    history = legacy.run(lambda e: e.history("ci-legacy", limit=1))
    assert history[0]["status"] == "failed"


def test_failing_health_puts_the_server_back_and_says_so(legacy: Legacy):
    before = legacy.status()
    legacy.edit_spec(LEGACY_ENV, LEGACY_ENV.replace("debug}", "debug, HEALTH_FAIL: '1'}"))
    try:
        deployed = phoenix(legacy.spec_path, "deploy", "ci-legacy", timeout=240)
    finally:
        legacy.edit_spec("env: {LOG_LEVEL: debug, HEALTH_FAIL: '1'}", "env: {LOG_LEVEL: debug}")
    assert deployed.returncode == 1, deployed.stderr
    assert "health" in deployed.stderr and "was put back on its previous build" in deployed.stderr
    assert "ci-legacy serves" in deployed.stderr
    after = legacy.status()
    assert identity(after) == identity(before)
    assert all(s["in_service"] for s in after["servers"])
    assert {lb["role"]: lb["members_up"] for lb in after["load_balancers"]} == LEGACY_COUNTS


def test_an_update_interrupted_by_a_crash_is_put_back_by_recovery(legacy: Legacy):
    before = legacy.status()
    (legacy.project_dir / "VERSION").write_text("4.1.0\n")
    crashed = phoenix(legacy.spec_path, "deploy", "ci-legacy", failpoint="update")
    assert crashed.returncode != 0
    updating = [s["id"] for s in legacy.status()["servers"] if s["state"] == "updating"]
    assert updating, legacy.status()["servers"]  # backend and edit update side by side: one or both
    recovered = phoenix(legacy.spec_path, "recover", "ci-legacy", "--json")
    assert recovered.returncode == 0, recovered.stderr
    actions = json.loads(recovered.stdout)["recovered"]
    for server_id in updating:
        role = server_id.rsplit("-", 1)[0]
        assert f"{role}: {server_id} was being updated in place: back on its previous build, in service" in actions, actions
    after = legacy.status()
    assert identity(after) == identity(before)
    assert all(s["in_service"] and s["state"] == "in_service" for s in after["servers"])
    assert set(versions(after).values()) == {"3.0.0"}


def test_one_build_to_both_where_the_phoenix_one_fails_leaves_the_in_place_one_deployed(legacy: Legacy):
    up = phoenix(legacy.spec_path, "up", "ci", timeout=240)
    assert up.returncode == 0, up.stderr
    ci_before = legacy.status("ci")
    # only ci's new servers fail their health gate: the same build, ci's configuration
    legacy.edit_spec("  ci:\n    env: {LOG_LEVEL: debug}", "  ci:\n    env: {LOG_LEVEL: debug, HEALTH_FAIL: '1'}")
    (legacy.project_dir / "VERSION").write_text("5.0.0\n")
    try:
        both = phoenix(legacy.spec_path, "deploy", "ci", "ci-legacy", "--json", timeout=300)
    finally:
        legacy.edit_spec("  ci:\n    env: {LOG_LEVEL: debug, HEALTH_FAIL: '1'}", "  ci:\n    env: {LOG_LEVEL: debug}")
    assert both.returncode == 1
    assert "deploy failed in ci (1 of 2 environment(s)); deployed: ci-legacy" in both.stderr
    report = json.loads(both.stdout)
    results = {row["environment"]: row for row in report["environments"]}
    assert report["failed"] == ["ci"]
    assert results["ci"]["ok"] is False and "health" in results["ci"]["error"]
    assert results["ci-legacy"]["ok"] is True and len(results["ci-legacy"]["result"]["updated"]) == 5
    assert set(versions(legacy.status()).values()) == {"5.0.0"}
    ci_after = legacy.status("ci")
    assert {s["id"] for s in ci_after["servers"]} == {s["id"] for s in ci_before["servers"]}  # ci as it was
    assert {s["image"] for s in ci_after["servers"]} == {s["image"] for s in ci_before["servers"]}


def test_release_of_deploys_exactly_the_other_environments_images(legacy: Legacy):
    ci_images = {s["image"] for s in legacy.status("ci")["servers"]}
    ci_versions = set(versions(legacy.status("ci")).values())
    (legacy.project_dir / "VERSION").write_text("6.0.0\n")  # a newer build exists on disk: not the one promoted
    promoted = phoenix(legacy.spec_path, "deploy", "ci-legacy", "--release-of", "ci", "--json", timeout=240)
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(promoted.stdout)["baked"] == []
    after = legacy.status()
    assert {s["image"] for s in after["servers"]} == ci_images
    assert set(versions(after).values()) == ci_versions != {"6.0.0"}

    # refused, with the reason, when that release's images are gone
    (image,) = ci_images
    manifest = legacy.project_dir / ".phoenix" / "images" / image / "manifest.json"
    manifest.rename(manifest.with_name("manifest.json.away"))
    try:
        refused = phoenix(legacy.spec_path, "deploy", "ci-legacy", "--release-of", "ci")
    finally:
        manifest.with_name("manifest.json.away").rename(manifest)
    assert refused.returncode == 1
    assert f"its image web ({image}) is gone" in refused.stderr, refused.stderr


def test_compare_shows_time_to_live_per_build_and_failed_deploys(legacy: Legacy):
    (legacy.project_dir / "VERSION").write_text("7.0.0\n")
    both = phoenix(legacy.spec_path, "deploy", "ci", "ci-legacy", timeout=300)
    assert both.returncode == 0, both.stderr
    compared = phoenix(legacy.spec_path, "compare", "ci", "ci-legacy", "--json")
    assert compared.returncode == 0, compared.stderr
    report = json.loads(compared.stdout)
    assert report["environments"] == ["ci", "ci-legacy"]
    latest = report["builds"][0]
    assert latest["time_to_live_s"]["ci"] > 0 and latest["time_to_live_s"]["ci-legacy"] > 0
    assert latest["ratio"] == pytest.approx(latest["time_to_live_s"]["ci"] / latest["time_to_live_s"]["ci-legacy"], rel=0.01)
    failed_build = next(b for b in report["builds"] if b["failed"].get("ci"))
    assert failed_build["time_to_live_s"].get("ci") is None and failed_build["time_to_live_s"]["ci-legacy"] > 0
    text = phoenix(legacy.spec_path, "compare", "ci", "ci-legacy")
    assert text.returncode == 0 and "time to live" in text.stdout and "failed" in text.stdout, text.stdout
    history = phoenix(legacy.spec_path, "history", "ci-legacy", "--json")
    assert json.loads(history.stdout)[0]["time_to_live_s"] > 0


def test_rollback_puts_the_previous_build_back_on_the_same_servers_under_load(legacy: Legacy):
    """`rollback` of an in-place environment redeploys the previous release where the servers
    stand: the same servers (launch time, root) answer with the build before, and no request
    fails while it happens."""
    before = legacy.status()
    previous = set(versions(before).values())
    (legacy.project_dir / "VERSION").write_text("8.0.0\n")
    deployed = phoenix(legacy.spec_path, "deploy", "ci-legacy", timeout=240)
    assert deployed.returncode == 0, deployed.stderr
    assert set(versions(legacy.status()).values()) == {"8.0.0"} != previous
    with LoadGenerator(legacy.load_urls(), **LOAD) as load:
        load.wait_for_requests(100)
        rolled = phoenix(legacy.spec_path, "rollback", "ci-legacy", timeout=240)
        load.wait_for_requests(load.stats.sent + 100)
    assert rolled.returncode == 0, rolled.stderr
    assert load.stats.failed == 0, load.stats.as_dict()
    after = legacy.status()
    assert identity(after) == identity(before)  # updated where they stand: nothing replaced
    assert set(versions(after).values()) == previous
    assert all(s["in_service"] for s in after["servers"])
    history = legacy.run(lambda e: e.history("ci-legacy", limit=1))
    assert (history[0]["kind"], history[0]["status"]) == ("rollback", "succeeded"), history[0]


def test_demo_branch_by_abstraction_ships_one_build_to_both_and_compares():
    """The shipped example as it is: `ci` beside `ci-legacy` (its deploy.sh), under load."""
    import subprocess
    import sys

    demo = subprocess.run(
        [str(Path(sys.executable).parent / "phoenix"), "demo", "--branch-by-abstraction", "--rate", "80"],
        capture_output=True, text=True, timeout=600,
    )
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "deploy ci: 3 launched, 3 retired" in demo.stdout
    assert "deploy ci-legacy: 3 updated in place" in demo.stdout
    assert "time to live of build 2.0.0" in demo.stdout and "ci/ci-legacy" in demo.stdout
    assert "0 failed — no request failed" in demo.stdout
