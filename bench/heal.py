"""Self-healing benchmark: kill one, then three servers of production while `watch` runs.

Under steady load through the three load balancers (from a second process), `phoenix
watch production --interval W` runs as its own process. Servers are terminated abruptly
(SIGKILL to their process group, as a failing machine), keeping one server per role in
service. Reported: the time until watch acted on them (detect), the time until the full
count served again, one server's launch-to-service time, and failed requests.

Targets (issue 7): full count again within one watch interval plus one server's
launch-to-service time; failed requests only for connections open on the killed servers.
The benchmark cannot tell which connection a failed request was on, so it checks the
stricter zero failed requests. A time it did not see (no full count before the time-out,
no replacement in the history) is "not measured", never met. The exit code is 0 only
when every target was met.

    .venv/bin/python bench/heal.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import time
from pathlib import Path

from phoenixctl.example import init_example
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadProcess
from phoenixctl.engine.watch import pick_victims

sys.path.insert(0, str(Path(__file__).parent))
from common import NOT_MEASURED, exit_code, failed_requests_target, heading, judge, publish, scratch, verdict  # noqa: E402

LAUNCH_TO_SERVICE = ("launch", "boot", "health", "warmup", "swap")


def in_service(executor: Executor, env: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for server in executor.status(env)["servers"]:
        if server["in_service"]:
            counts[server["role"]] = counts.get(server["role"], 0) + 1
    return counts


def kill_and_heal(spec_path: Path, kill: int, seed: int, timeout: float) -> dict:
    project = Project(spec_path)
    try:
        executor = Executor(project)
        desired = {name: r.count for name, r in project.spec.environments["production"].roles.items()}
        victims = pick_victims([s for s in executor.reports.status("production").servers if s.in_service], kill, False, random.Random(seed))
        killed_at = time.monotonic()
        for victim in victims:
            executor.compute.terminate(project.store.server(victim.id).handle_data)
        ids = {v.id for v in victims}
        detected = full = None
        while time.monotonic() - killed_at < timeout:
            rows = [project.store.server(i) for i in ids]
            if detected is None and any(row.state != "in_service" for row in rows):
                detected = time.monotonic() - killed_at
            if all(row.state == "destroyed" for row in rows) and in_service(executor, "production") == desired:
                full = time.monotonic() - killed_at
                break
            time.sleep(0.05)
        # one server's launch-to-service time, from the watch pass that replaced them
        heal_op = next((op for op in executor.history("production", limit=5) if op["kind"] == "watch" and op["phases"].get("launch")), None)
        per_server: dict[str, float] = {}
        for row in project.store.phases(heal_op["id"]) if heal_op else []:
            if row.server_id and row.phase in LAUNCH_TO_SERVICE:
                per_server[row.server_id] = per_server.get(row.server_id, 0.0) + row.seconds
        return {
            "kill": kill,
            "victims": [v.id for v in victims],
            "detect": detected,
            "full": full,
            "launch_to_service": max(per_server.values(), default=None),
        }
    finally:
        project.close()


def seconds(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.2f}"


def with_unit(value: float | None) -> str:
    return NOT_MEASURED if value is None else f"{value:.2f} s"


def report(runs: list[dict], stats, interval: float, rate: float) -> tuple[list[str], list[bool | None]]:
    """The RESULTS.md section and the verdict on each named target (None: not measured)."""
    lines = heading("Self-healing (`bench/heal.py`)") + [
        f"Load: {rate:g} requests/s over 16 keep-alive connections through production's three balancers, from a second "
        f"process; `phoenix watch production --interval {interval:g}` in its own process; servers killed with SIGKILL "
        "to their process group, one per role always left serving.",
        "",
        "| killed | detect (s) | full count again (s) | one server's launch-to-service (s) | target: interval + launch-to-service (s) |",
        "|---|---|---|---|---|",
    ]
    targets, verdicts = [], []
    for r in runs:
        target = None if r["launch_to_service"] is None else interval + r["launch_to_service"]
        met = None if target is None else judge(r["full"], lambda full: full <= target)
        targets.append(met)
        lines.append(
            f"| {r['kill']} ({', '.join(r['victims'])}) | {seconds(r['detect'])} | {seconds(r['full'])} | "
            f"{seconds(r['launch_to_service'])} | {seconds(target)} |"
        )
        verdicts.append(f"kill {r['kill']}: {with_unit(r['full'])} against {with_unit(target)} ({verdict(met)})")
    no_failures = failed_requests_target(stats.sent, stats.failed)
    lines += [
        "",
        f"Requests over the whole run: {stats.sent} sent, {stats.failed} failed {dict(stats.errors) or ''}.  ",
        f"Targets: full count within interval + launch-to-service -> {'; '.join(verdicts) or 'not run (not measured)'}; "
        f"failed requests only for connections open on the killed servers, checked as zero failed requests "
        f"(HAProxy retries a refused or cut GET on another member) -> **{stats.failed} failed** ({verdict(no_failures)}).",
        "",
    ]
    return lines, [*(targets or [None]), no_failures]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--interval", type=float, default=5.0, help="watch interval (s)")
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    phoenix = str(Path(sys.executable).parent / "phoenix")
    with scratch("phoenix-bench-heal-") as tmp:
        init_example(Path(tmp))
        spec_path = Path(tmp) / "phoenix.yaml"
        project = Project(spec_path)
        executor = Executor(project)
        runs = []
        watcher = None
        try:
            executor.up("production")
            lbs = {lb["role"]: lb["address"] for lb in executor.status("production")["load_balancers"]}
            urls = [f"http://{lbs['frontend']}/page/{n}" for n in range(30)]
            urls += [f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]
            watcher = subprocess.Popen(
                [phoenix, "watch", "production", "--interval", str(args.interval), "-f", str(spec_path)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            with LoadProcess(urls, concurrency=16, rate=args.rate, max_seconds=600) as load:
                load.wait_for_requests(int(args.rate * 2))
                for kill in (1, 3):
                    runs.append(kill_and_heal(spec_path, kill, args.seed + kill, timeout=args.interval * 4 + 60))
                    r = runs[-1]
                    print(f"kill {kill}: detect {seconds(r['detect'])}s, full count {seconds(r['full'])}s", flush=True)
                    time.sleep(2.0)
            stats = load.stats
        finally:
            if watcher is not None:
                watcher.terminate()
                watcher.wait(60)
            executor.destroy("production")
            project.close()
    lines, targets = report(runs, stats, args.interval, args.rate)
    publish(lines, "heal", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
