"""Rotation benchmark: rotate N = 1, 5 and 20 servers of one role under steady load.

For each N, in one run side by side: bring up an environment with N servers of one role
(max_surge 100%), drive steady keep-alive load through its load balancer,
rotate every server, and report the rotation's wall time, the critical path of a single
server (launch + boot + health + swap of the slowest new server, then drain + destroy of
the slowest old one), the ratio of wall time to critical path x ideal batches, the ratio
to N=1, and failed requests.

Two kinds of server are measured, because on a 2-core machine all N servers boot on the
same two cores: the example's `backend` (aiohttp: about 0.2 CPU-seconds to import and
start) and a `static` role (Python's `http.server` serving a baked directory: about
0.03 CPU-seconds). The first shows what users of the example see; the second shows what
Phoenix's own orchestration costs when the server is cheap to start.

Target (issue 2): zero failed requests; rotating 20 takes at most 1.5x rotating 1.

    .venv/bin/python bench/rotation.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from common import heading, publish
from phoenixctl.example import init_example
from phoenixctl.engine import Executor, Project
import psutil

from phoenixctl.load import LoadProcess
from phoenixctl.plan import ideal_batches, rollout_limits
from phoenixctl.spec import RolloutSpec

ROLES = {"backend": ("/api/articles", "/healthz"), "static": ("/version", "/healthz")}
NEW_PHASES = ("launch", "boot", "health", "swap")
OLD_PHASES = ("drain", "destroy")


def make_project(directory: Path, sizes: list[int]) -> Path:
    init_example(directory)
    spec_path = directory / "phoenix.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    spec["images"]["static"] = {
        "files": ["VERSION"],
        "steps": ["mkdir -p site && cp VERSION site/version && echo ok > site/healthz"],
        "start": "python -m http.server --bind $PHOENIX_ADDRESS --directory site $PHOENIX_PORT",
    }
    spec["roles"]["static"] = {"image": "static", "port": 8090}
    spec["environments"] = {
        f"{role}-{n}": {"roles": {role: n}, "rollout": {"max_surge": "100%", "max_unavailable": 0}}
        for n in sizes
        for role in ROLES
    }
    spec["defaults"]["deadlines"] = {"boot": "60s", "health": "60s", "swap": "30s", "drain": "30s", "stop": "10s"}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec_path


def critical_path(executor: Executor, op_id: str) -> float:
    per_server: dict[str, dict[str, float]] = {}
    for row in executor.store.phases(op_id):
        if row.server_id:
            per_server.setdefault(row.server_id, {})[row.phase] = row.seconds
    new = [sum(p.get(name, 0) for name in NEW_PHASES) for p in per_server.values() if "launch" in p]
    old = [sum(p.get(name, 0) for name in OLD_PHASES) for p in per_server.values() if "drain" in p]
    return max(new, default=0) + max(old, default=0)


def run_one(spec_path: Path, role: str, n: int, rate: float) -> dict:
    env = f"{role}-{n}"
    project = Project(spec_path)
    executor = Executor(project)
    try:
        executor.up(env)
        lb = executor.status(env)["load_balancers"][0]["address"]
        with LoadProcess([f"http://{lb}{path}" for path in ROLES[role]], concurrency=16, rate=rate, max_seconds=300) as load:
            load.wait_for_requests(int(rate))
            started = time.monotonic()
            result = executor.rotate(env)
            wall = time.monotonic() - started
            load.wait_for_requests(load.answered + int(rate / 4))
        stats = load.stats
        # CPU the new servers burnt so far (mostly starting up): a floor no orchestration beats on these cores.
        server_cpu = 0.0
        for server in executor.status(env)["servers"]:
            try:
                times = psutil.Process(server["pid"]).cpu_times()
                server_cpu += times.user + times.system
            except psutil.Error:
                pass
        surge, unavailable = rollout_limits(n, RolloutSpec(max_surge="100%"))
        return {
            "role": role,
            "n": n,
            "wall": wall,
            "critical": critical_path(executor, result.id),
            "batches": ideal_batches(n, surge, unavailable),
            "replaced": len(result.retired),
            "server_cpu": server_cpu,
            "sent": stats.sent,
            "failed": stats.failed,
            "errors": dict(stats.errors),
        }
    finally:
        executor.destroy(env)
        project.close()


def markdown(rows: list[dict], repeats: int, rate: float) -> list[str]:
    lines = heading("Rotation (`bench/rotation.py`)") + [
        f"Load: {rate:g} requests/s over 16 keep-alive connections through the role's HAProxy during every rotation; "
        f"`max_surge: 100%`; median of {repeats} run(s) per N, all sizes and roles interleaved in one run.",
        "",
        "| server | N | ideal batches | wall (s) | critical path of one server (s) | wall / (critical x batches) | wall / wall(N=1) | CPU of the new servers (s) | CPU floor = CPU / cores (s) | replaced | requests | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for role in ROLES:
        by_n: dict[int, list[dict]] = {}
        for row in rows:
            if row["role"] == role:
                by_n.setdefault(row["n"], []).append(row)
        if not by_n:
            continue
        base = statistics.median(r["wall"] for r in by_n[min(by_n)])
        for n, runs in sorted(by_n.items()):
            wall = statistics.median(r["wall"] for r in runs)
            critical = statistics.median(r["critical"] for r in runs)
            batches = runs[0]["batches"]
            cpu = statistics.median(r["server_cpu"] for r in runs)
            lines.append(
                f"| {role} | {n} | {batches} | {wall:.2f} | {critical:.2f} | {wall / (critical * batches):.2f} | {wall / base:.2f} | "
                f"{cpu:.2f} | {cpu / (os.cpu_count() or 1):.2f} | "
                f"{sum(r['replaced'] for r in runs)}/{n * len(runs)} | {sum(r['sent'] for r in runs)} | {sum(r['failed'] for r in runs)} |"
            )
        ratio = statistics.median(r["wall"] for r in by_n[max(by_n)]) / base
        verdicts.append(f"{role}: rotating {max(by_n)} takes **{ratio:.2f}x** rotating {min(by_n)} ({'met' if ratio <= 1.5 else 'NOT met'})")
    failed = sum(r["failed"] for r in rows)
    lines += [
        "",
        f"Targets: zero failed requests -> **{failed} failed** ({'met' if failed == 0 else 'NOT met'}); at most 1.5x -> "
        + "; ".join(verdicts)
        + ".",
        "",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1,5,20", help="comma-separated server counts")
    parser.add_argument("--repeat", type=int, default=3, help="runs per size (the median is reported)")
    parser.add_argument("--roles", default=",".join(ROLES), help="which servers to measure: backend, static")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second during each rotation")
    parser.add_argument("--write", type=Path, help="update this RESULTS.md section")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-") as tmp:
        spec_path = make_project(Path(tmp), sizes)
        for attempt in range(args.repeat):
            for n, role in [(n, role) for n in sizes for role in args.roles.split(",")]:
                # interleaved, so machine noise hits every size alike
                row = run_one(spec_path, role, n, args.rate)
                rows.append(row)
                print(
                    f"run {attempt + 1} {role} N={n}: wall {row['wall']:.2f}s critical {row['critical']:.2f}s "
                    f"replaced {row['replaced']} requests {row['sent']} failed {row['failed']} {row['errors'] or ''}",
                    flush=True,
                )
    publish(markdown(rows, args.repeat, args.rate), "rotation", args.write)
    return 0 if sum(r["failed"] for r in rows) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
