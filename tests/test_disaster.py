"""Disaster recovery (issue 20): backups of the persistent layer, rebuild from nothing,
restore of an older backup, a corrupt backup refused and skipped, and a drill under load.

Real parts throughout: the `phoenix` command as a subprocess, real server processes, real
HAProxy. The disaster is done as one would happen: every process of the environment killed,
its servers', balancers' and persistent folders deleted, its rows deleted from the state
store. One `ci` environment is shared by the tests of this module, in order."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import sqlite3
from pathlib import Path

import httpx
import psutil
import pytest

from conftest import brought_up, phoenix, wait_for
from phoenixctl.load import LoadGenerator

pytestmark = pytest.mark.slow

ENV = "ci"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    with brought_up(tmp_path_factory, "disaster", ENV) as spec_path:
        yield spec_path


@pytest.fixture(scope="module")
def lbs(site) -> dict[str, str]:
    """The balancers' addresses: a rebuild brings them back at the same ones (checked)."""
    return balancers(site)


def status(spec_path: Path, env: str = ENV) -> dict:
    result = phoenix(spec_path, "status", env, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def balancers(spec_path: Path) -> dict[str, str]:
    return {lb["role"]: lb["address"] for lb in status(spec_path)["load_balancers"]}


def write_articles(lbs: dict[str, str], names: list[str]) -> None:
    edit = lbs["edit"]
    with httpx.Client(timeout=10) as client:
        for name in names:
            assert client.put(f"http://{edit}/api/articles/{name}", content=f"Title of {name}\nThe body of {name}.\n").status_code == 201


def served_articles(lbs: dict[str, str]) -> dict[str, str]:
    """Every article the backend serves, by name: its body, read through the balancer."""
    backend = lbs["backend"]
    with httpx.Client(timeout=10) as client:
        names = [a["name"] for a in client.get(f"http://{backend}/api/articles").json()["articles"]]
        return {name: client.get(f"http://{backend}/api/articles/{name}").json()["body"] for name in names}


def checksums(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.glob("*.txt"))}


def versions(lbs: dict[str, str]) -> dict[str, str]:
    with httpx.Client(timeout=10) as client:
        return {role: client.get(f"http://{address}/version").text for role, address in lbs.items()}


def take_backup(spec_path: Path) -> dict:
    result = phoenix(spec_path, "backup", ENV, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def catalogue(spec_path: Path) -> Path:
    return spec_path.parent / ".phoenix" / "backups" / "website" / ENV


def backups_on_disk(spec_path: Path) -> list[dict]:
    """The backups' manifests, newest first, read from the backup location itself."""
    manifests = [json.loads(path.read_text()) for path in (catalogue(spec_path) / "manifests").glob("*.json")]
    return sorted(manifests, key=lambda m: m["created_at"], reverse=True)


def disaster(spec_path: Path) -> None:
    """Everything of the environment gone: processes killed, folders and rows deleted."""
    workdir = spec_path.parent / ".phoenix"
    mine = [str((workdir / folder / ENV).resolve()) + os.sep for folder in ("servers", "lb")]
    killed = []
    for process in psutil.process_iter(["pid", "cwd"]):
        cwd = (process.info["cwd"] or "").removesuffix(" (deleted)") + os.sep
        if any(cwd.startswith(prefix) for prefix in mine):
            os.kill(process.info["pid"], signal.SIGKILL)
            killed.append(process.info["pid"])
    assert killed, "no process of the environment found to kill"
    wait_for(lambda: not any(psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE for pid in killed), 10, "the kill")
    for folder in ("servers", "lb", "persistent"):
        shutil.rmtree(workdir / folder / ENV)
    with sqlite3.connect(workdir / "state.db") as db:
        ops = "(SELECT id FROM operations WHERE env = ?)"
        for table in ("phases", "warmups"):
            db.execute(f"DELETE FROM {table} WHERE operation_id IN {ops}", (ENV,))
        for table in ("servers", "load_balancers", "releases", "operations", "secret_hashes"):
            db.execute(f"DELETE FROM {table} WHERE env = ?", (ENV,))


def test_rebuild_after_a_disaster_serves_the_release_and_every_article_of_the_backup(site: Path, lbs: dict[str, str]):
    write_articles(lbs, [f"article-{n}" for n in range(20)])
    before_versions = versions(lbs)
    content = site.parent / ".phoenix" / "persistent" / ENV / "content"
    before_articles, before_sums = served_articles(lbs), checksums(content)
    backup = take_backup(site)
    assert backup["files"] == 20 and backup["release"]["image_ids"]

    disaster(site)
    assert not content.exists()

    rebuilt = phoenix(site, "rebuild", ENV, "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    assert report["backup"] == backup["id"] and report["restored_files"] == 20
    assert set(report["phases"]) == {"backup", "cleanup", "images", "restore", "servers"}
    assert report["recovery_time_s"] > 0 and report["recovery_point_s"] >= 0
    assert balancers(site) == lbs  # back where clients know them
    assert versions(lbs) == before_versions
    assert served_articles(lbs) == before_articles
    assert checksums(content) == before_sums
    history = json.loads(phoenix(site, "history", ENV, "--json").stdout)
    assert history[0]["kind"] == "rebuild" and history[0]["status"] == "succeeded", history[0]
    assert "recovery time" in history[0]["summary"]


def test_restore_of_an_older_backup_refused_while_writers_run_then_done(site: Path, lbs: dict[str, str]):
    older = backups_on_disk(site)[0]
    write_articles(lbs, ["newer-one", "newer-two"])
    take_backup(site)
    assert {"newer-one", "newer-two"} <= set(served_articles(lbs))

    refused = phoenix(site, "restore", ENV, "--backup", older["id"])
    assert refused.returncode == 1 and "--stop-writers" in refused.stderr, refused.stderr
    assert {"newer-one", "newer-two"} <= set(served_articles(lbs))  # nothing was touched

    restored = phoenix(site, "restore", ENV, "--backup", older["id"], "--stop-writers")
    assert restored.returncode == 0, restored.stderr
    articles = served_articles(lbs)
    assert "newer-one" not in articles and len(articles) == len(older["files"])


def test_a_corrupt_backup_is_refused_by_verify_and_skipped_by_rebuild(site: Path, lbs: dict[str, str]):
    backups = json.loads(phoenix(site, "backup", ENV, "--list", "--json").stdout)
    newest, good = backups[0], backups[1]
    manifest = json.loads((catalogue(site) / "manifests" / f"{newest['id']}.json").read_text())
    only_newest = manifest["files"]["content/newer-one.txt"]["sha256"]
    (catalogue(site) / "objects" / only_newest[:2] / only_newest).write_text("bit rot\n")

    verified = phoenix(site, "backup", ENV, "--verify", newest["id"])
    assert verified.returncode == 1 and "corrupt" in verified.stderr and "content/newer-one.txt" in verified.stderr, verified.stderr
    assert phoenix(site, "backup", ENV, "--verify", good["id"]).returncode == 0

    images = site.parent / ".phoenix" / "images"
    for image in [path for path in images.iterdir() if path.name.startswith("img-")]:
        shutil.rmtree(image)  # the images are gone too: baked again from the recorded recipe
    with sqlite3.connect(site.parent / ".phoenix" / "state.db") as db:  # the balancers' rows lost, their processes run on
        db.execute("DELETE FROM load_balancers WHERE env = ?", (ENV,))

    rebuilt = phoenix(site, "rebuild", ENV, "--json")
    assert rebuilt.returncode == 0, rebuilt.stderr
    report = json.loads(rebuilt.stdout)
    assert report["backup"] == good["id"]
    assert report["rebaked"] and report["image_ids"] == good["release"]["image_ids"], report  # same recipe, same content address
    assert any(newest["id"] in line and "skipped" in line for line in report["skipped"]), report["skipped"]
    assert "newer-one" not in served_articles(lbs)
    # the balancers nothing recorded were found and ended: one HAProxy per role, none left over
    folder = str((site.parent / ".phoenix" / "lb" / ENV).resolve()) + os.sep
    running = [p for p in psutil.process_iter(["name", "cwd"]) if p.info["name"] == "haproxy" and (p.info["cwd"] or "").startswith(folder)]
    assert len(running) == len(lbs), [p.info["cwd"] for p in running]


def test_drill_under_load_touches_nothing_and_leaves_no_scratch_environment(site: Path, lbs: dict[str, str]):
    spec_text = site.read_text()
    site.write_text(spec_text.replace("  ci:\n", "  ci:\n    drill: {every: 7d}\n", 1))
    try:
        warned = phoenix(site, "plan", ENV)
        assert "no drill of ci succeeded" in warned.stderr, warned.stderr
        urls = [f"http://{lbs['frontend']}/page/{n}" for n in range(10)] + [f"http://{lbs['backend']}/api/articles"]
        with LoadGenerator(urls, concurrency=4, rate=60) as load:
            load.wait_for_requests(30)
            drilled = phoenix(site, "drill", ENV, "--json", timeout=180)
            load.wait_for_requests(load.stats.sent + 30)
        assert drilled.returncode == 0, drilled.stderr
        assert load.stats.failed == 0, load.stats.errors
        report = json.loads(drilled.stdout)
        assert report["ok"] and report["torn_down"] and report["differences"] == []
        assert report["recovery_time_s"] > 0 and report["recovery_point_s"] >= 0
        assert report["compared"]["pages"] > 10 and report["compared"]["files"] == report["restored_files"]
        scratch = report["into"]
        workdir = site.parent / ".phoenix"
        assert status(site, ENV)["drill"]["last_successful_drill"]["operation"] == report["operation"]
        assert "warning" not in phoenix(site, "plan", ENV).stderr
        # the scratch environment is gone: no process, no folder of data, no row
        prefix = str((workdir / "servers" / scratch).resolve())
        assert not [p for p in psutil.process_iter(["cwd"]) if (p.info["cwd"] or "").startswith(prefix)]
        assert not (workdir / "persistent" / scratch).exists()
        with sqlite3.connect(workdir / "state.db") as db:
            assert db.execute("SELECT count(*) FROM servers WHERE env = ? AND state != 'destroyed'", (scratch,)).fetchone()[0] == 0
            assert db.execute("SELECT count(*) FROM load_balancers WHERE env = ?", (scratch,)).fetchone()[0] == 0
    finally:
        site.write_text(spec_text)


def test_watch_takes_a_backup_when_the_newest_is_older_than_backup_every(site: Path):
    spec_text = site.read_text()
    before = backups_on_disk(site)
    site.write_text(spec_text.replace("  ci:\n", "  ci:\n    backup: {every: 1s}\n", 1))
    try:
        watched = phoenix(site, "watch", ENV, "--passes", "1", "--interval", "1")
        assert watched.returncode == 0, watched.stderr
        after = backups_on_disk(site)
        assert len(after) == len(before) + 1 and f"backup {after[0]['id']} taken" in watched.stdout + watched.stderr
    finally:
        site.write_text(spec_text)


def test_backup_fields_are_validated_with_their_place(site: Path):
    spec_text = site.read_text()
    try:
        site.write_text(spec_text.replace("  ci:\n", "  ci:\n    backup: {keep: 0}\n", 1))
        result = phoenix(site, "validate")
        assert result.returncode == 2, result.stderr
        assert "environments.ci.backup.keep" in result.stderr and "phoenix.yaml:" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    finally:
        site.write_text(spec_text)
    for argv, said in ((["drill", ENV, "--into", ENV], "names the environment itself"), (["backup", ENV, "--verify", "bk-nope"], "no backup bk-nope")):
        refused = phoenix(site, *argv)
        assert refused.returncode == 2 and said in refused.stderr and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
