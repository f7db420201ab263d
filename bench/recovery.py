"""Disaster-recovery benchmark: production rebuilt from nothing, and drilled while it serves.

The example's `production` (3 frontend + 2 backend + 1 edit servers) is brought `up` from
nothing (images baked beforehand, so `up` and `rebuild` start from the same images) and
timed; 1,000 articles are written through the edit balancer and a backup is taken. Then
the disaster: every process of the environment killed (SIGKILL), its servers', balancers'
and persistent folders deleted, its rows deleted from the state store. `rebuild` is timed,
and every article is read back through the backend balancer and its file's checksum
compared with the backup's. Last, `drill production` runs while production serves steady
load from a second process.

Targets (issue 20): rebuild's recovery time <= 2x the time of `up` from nothing in the same
run; 0 articles lost or changed; the drill likewise (recovery time <= 2x up, its copy equal
to production), with 0 failed requests on production while it runs. The exit code is 0
only when every target was met.

    .venv/bin/python bench/recovery.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import signal
import sqlite3
import sys
import time
from pathlib import Path

import httpx
import psutil

from phoenixctl.engine import Executor, Project
from phoenixctl.engine.disaster import DisasterRecovery
from phoenixctl.example import init_example
from phoenixctl.load import LoadProcess

sys.path.insert(0, str(Path(__file__).parent))
from common import exit_code, failed_requests_target, heading, judge, publish, scratch, verdict  # noqa: E402

ENV = "production"


def write_articles(edit: str, count: int) -> None:
    with httpx.Client(timeout=10) as client:
        for n in range(count):
            response = client.put(f"http://{edit}/api/articles/article-{n:04d}", content=f"Article {n}\n{'body ' * (n % 50 + 10)}\n")
            response.raise_for_status()


def served(backend: str) -> dict[str, str]:
    with httpx.Client(timeout=10) as client:
        names = [a["name"] for a in client.get(f"http://{backend}/api/articles").json()["articles"]]
        return {name: client.get(f"http://{backend}/api/articles/{name}").json()["body"] for name in names}


def checksums(directory: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in directory.glob("*.txt")}


def disaster(workdir: Path) -> int:
    """Every process of the environment killed; its folders and rows deleted. Returns the kills."""
    prefixes = [str((workdir / folder / ENV).resolve()) + os.sep for folder in ("servers", "lb")]
    killed = 0
    for process in psutil.process_iter(["pid", "cwd"]):
        cwd = (process.info["cwd"] or "").removesuffix(" (deleted)") + os.sep
        if any(cwd.startswith(prefix) for prefix in prefixes):
            os.kill(process.info["pid"], signal.SIGKILL)
            killed += 1
    for folder in ("servers", "lb", "persistent"):
        shutil.rmtree(workdir / folder / ENV, ignore_errors=True)
    with sqlite3.connect(workdir / "state.db") as db:
        for table in ("phases", "warmups"):
            db.execute(f"DELETE FROM {table} WHERE operation_id IN (SELECT id FROM operations WHERE env = ?)", (ENV,))
        for table in ("servers", "load_balancers", "releases", "operations", "secret_hashes"):
            db.execute(f"DELETE FROM {table} WHERE env = ?", (ENV,))
    return killed


def run(tmp: Path, articles: int, rate: float) -> dict:
    init_example(tmp)
    spec_path = tmp / "phoenix.yaml"
    workdir = tmp / ".phoenix"
    project = Project(spec_path)
    try:
        executor = Executor(project)
        executor.bake()
        started = time.monotonic()
        executor.up(ENV)
        up_seconds = time.monotonic() - started
        lbs = {lb["role"]: lb["address"] for lb in executor.status(ENV)["load_balancers"]}
        write_articles(lbs["edit"], articles)
        before, before_sums = served(lbs["backend"]), checksums(workdir / "persistent" / ENV / "content")
        backup = DisasterRecovery(executor).backup(ENV)
    finally:
        project.close()
    killed = disaster(workdir)
    project = Project(spec_path)
    try:
        recovery = DisasterRecovery(Executor(project))
        started = time.monotonic()
        rebuilt = recovery.rebuild(ENV)
        rebuild_seconds = time.monotonic() - started
        after, after_sums = served(lbs["backend"]), checksums(workdir / "persistent" / ENV / "content")
        lost = len(set(before) - set(after)) + sum(1 for name in before if name in after and after[name] != before[name])
        changed_files = sum(1 for name, digest in before_sums.items() if after_sums.get(name) != digest)
        urls = [f"http://{lbs['frontend']}/page/{n}" for n in range(30)] + [f"http://{lbs['backend']}/api/articles"]
        with LoadProcess(urls, concurrency=16, rate=rate, max_seconds=900) as load:
            load.wait_for_requests(int(rate * 2))
            started = time.monotonic()
            drilled = recovery.drill(ENV)
            drill_seconds = time.monotonic() - started
            load.wait_for_requests(load.stats.sent + int(rate))
        stats = load.stats
        return {
            "up": up_seconds, "backup": backup, "killed": killed, "rebuild": rebuild_seconds, "rebuilt": rebuilt,
            "articles": len(before), "lost": lost, "changed_files": changed_files, "drill": drill_seconds, "drilled": drilled,
            "sent": stats.sent, "failed": stats.failed, "errors": dict(stats.errors),
        }
    finally:
        try:
            Executor(project).destroy(ENV)
        finally:
            project.close()


def report(r: dict, rate: float) -> tuple[list[str], list[bool | None]]:
    limit = 2 * r["up"]
    rebuild_met = judge(r["rebuilt"].recovery_time_s, lambda s: s <= limit)
    drill_met = judge(r["drilled"].recovery_time_s, lambda s: s <= limit)
    intact = judge(r["lost"] + r["changed_files"], lambda n: n == 0)
    drill_equal = r["drilled"].ok and not r["drilled"].differences
    no_failures = failed_requests_target(r["sent"], r["failed"])
    phases = lambda rep: ", ".join(f"{name} {seconds:.2f}" for name, seconds in rep.phases.items())  # noqa: E731
    lines = heading("Disaster recovery (`bench/recovery.py`)") + [
        f"The example's production (3 + 2 + 1 servers) with {r['articles']} articles written through the edit balancer; "
        f"backup {r['backup'].id} ({len(r['backup'].files)} files, {r['backup'].size} bytes). Disaster: {r['killed']} processes "
        "killed (servers and balancers), the servers', balancers' and persistent folders deleted, the environment's rows "
        "deleted from the state store. Drill: while production serves "
        f"{rate:g} requests/s over 16 keep-alive connections from a second process.",
        "",
        "| measured | seconds | phases (s) |",
        "|---|---|---|",
        f"| `up` from nothing (images baked beforehand) | {r['up']:.2f} | |",
        f"| `rebuild` after the disaster: recovery time | {r['rebuilt'].recovery_time_s:.2f} | {phases(r['rebuilt'])} |",
        f"| `drill` (scratch copy rebuilt, compared, torn down): recovery time | {r['drilled'].recovery_time_s:.2f} | {phases(r['drilled'])} |",
        f"| `drill` whole, with comparing and tearing down | {r['drill']:.2f} | |",
        "",
        f"Recovery point: {r['rebuilt'].recovery_point_s:.0f} s (rebuild), {r['drilled'].recovery_point_s:.0f} s (drill): the backup's age "
        "when the environment served again.  ",
        f"Drill compared: {', '.join(f'{n} {what}' for what, n in r['drilled'].compared.items())}; differences: "
        f"{len(r['drilled'].differences)}.  ",
        f"Targets: rebuild <= 2 x up ({limit:.2f} s) -> {verdict(rebuild_met)}; articles lost or changed against the backup: "
        f"{r['lost']} served, {r['changed_files']} files by checksum -> {verdict(intact)}; drill <= 2 x up -> {verdict(drill_met)}; "
        f"drill's copy equal to production -> {verdict(drill_equal)}; requests on production during the drill: {r['sent']} sent, "
        f"**{r['failed']} failed** {r['errors'] or ''} -> {verdict(no_failures)}.",
        "",
    ]
    return lines, [rebuild_met, intact, drill_met, drill_equal, no_failures]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with scratch("phoenix-bench-recovery-") as tmp:
        result = run(Path(tmp), args.articles, args.rate)
    lines, targets = report(result, args.rate)
    publish(lines, "recovery", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
