"""Dashboard benchmark (issue 22): the overview stays fast with a long history.

The example with `ci` up (real server processes behind real HAProxy; the overview lists all
of the example's environments). Measured side by side, with the history as `up` left it and
again after 10,000 operations (with 4 phase timings each, spread over the environments, a
successful drill among them) were written to the store:

- the overview over HTTP, as a browser gets it from a running `phoenix dashboard` (GET /,
  drift kept for 30 s as the dashboard keeps it);
- the overview built and rendered in-process by a fresh `Dashboard` (drift read from every
  server's files each time: the cold case);
- `ci`'s environment page over HTTP.

Target (issue 22): with 10,000 operations, the overview over HTTP renders in under 0.5 s
(median of `--repeat`). The exit code is 0 only when it was met.

    .venv/bin/python bench/dashboard.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

import httpx

from phoenixctl.engine import Executor, Project
from phoenixctl.example import init_example
from phoenixctl.state import operations, phases, utcnow
from phoenixctl.web.pages import render_overview
from phoenixctl.web.views import Dashboard

sys.path.insert(0, str(Path(__file__).parent))
from common import exit_code, heading, judge, publish, scratch, spread, verdict  # noqa: E402

PHOENIX = str(Path(sys.executable).parent / "phoenix")
HISTORY = 10_000
TARGET_OVERVIEW_S = 0.5
ENV = "ci"


def write_history(executor: Executor, count: int) -> None:
    """`count` finished operations over the last 30 days, round-robin over the environments,
    each with 4 phase timings; every 500th a successful drill."""
    envs = list(executor.project.spec.environments)
    now = utcnow()
    ops, timings = [], []
    for n in range(count):
        started = now - timedelta(days=30) + timedelta(seconds=n * 30 * 86400 / count)
        op_id = f"op-history-{n:05d}"
        kind = "drill" if n % 500 == 0 else ("deploy", "rotate", "watch")[n % 3]
        ops.append({
            "id": op_id, "env": envs[n % len(envs)], "kind": kind, "status": "failed" if n % 17 == 0 else "succeeded",
            "started_at": started, "ended_at": started + timedelta(seconds=40), "summary": f"{kind}: 3 launched, 3 retired",
            "image_ids": None,
        })
        for step, phase in enumerate(("launch", "boot", "health", "swap")):
            timings.append({
                "operation_id": op_id, "phase": phase, "server_id": f"frontend-{n:05d}",
                "started_at": started + timedelta(seconds=step * 5), "seconds": 4.0, "ok": True,
            })
    with executor.project.store.transaction() as connection:
        connection.execute(operations.insert(), ops)
        connection.execute(phases.insert(), timings)


class Served:
    """`phoenix dashboard` on a free loopback port, stopped by its pid."""

    def __init__(self, spec_path: Path):
        self.process = subprocess.Popen(
            [PHOENIX, "dashboard", "--listen", "127.0.0.1:0", "-f", str(spec_path)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        match = re.search(r"serving (http://\S+)", self.process.stdout.readline())
        if not match:
            self.stop()
            raise SystemExit("the dashboard did not start")
        self.url = match.group(1)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def get_seconds(url: str, repeat: int) -> list[float]:
    httpx.get(url, timeout=60).raise_for_status()  # the first: drift read, templates loaded
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        httpx.get(url, timeout=60).raise_for_status()
        times.append(time.perf_counter() - started)
    return times


def in_process_seconds(executor: Executor, repeat: int) -> list[float]:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        render_overview(Dashboard(executor).overview(), live=True)
        times.append(time.perf_counter() - started)
    return times


def measure(spec_path: Path, executor: Executor, repeat: int) -> dict:
    served = Served(spec_path)
    try:
        return {
            "overview_http": spread(get_seconds(served.url, repeat)),
            "overview_cold": spread(in_process_seconds(executor, repeat)),
            "environment_http": spread(get_seconds(f"{served.url}environments/{ENV}", repeat)),
            "operations": len(executor.project.store.operations(ENV, limit=HISTORY * 2)),
        }
    finally:
        served.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="requests of each page (the median is reported)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with scratch("phoenix-bench-dashboard-") as tmp:
        init_example(tmp / "website")
        spec_path = tmp / "website" / "phoenix.yaml"
        project = Project(spec_path)
        executor = Executor(project)
        try:
            executor.up(ENV)
            short = measure(spec_path, executor, args.repeat)
            write_history(executor, HISTORY)
            long = measure(spec_path, executor, args.repeat)
        finally:
            try:
                executor.destroy(ENV)
            finally:
                project.close()
    met = judge(long["overview_http"], lambda s: s < TARGET_OVERVIEW_S)
    lines = heading("Dashboard: the overview with a long history (`bench/dashboard.py`)") + [
        f"The example with `{ENV}` up (3 servers, 3 balancers; the overview lists all "
        f"{len(project.spec.environments)} of its environments). Seconds, median (min–max) of {args.repeat}; "
        f"over HTTP from a running `phoenix dashboard` (drift kept 30 s), in-process from a fresh `Dashboard` (drift read each time).",
        "",
        f"| page | history as `up` left it | with {HISTORY:,} more operations |",
        "|---|---|---|",
        f"| overview over HTTP (GET /) | {short['overview_http'].format(3)} | **{long['overview_http'].format(3)}** |",
        f"| overview in-process, cold (built and rendered) | {short['overview_cold'].format(3)} | {long['overview_cold'].format(3)} |",
        f"| `{ENV}` page over HTTP | {short['environment_http'].format(3)} | {long['environment_http'].format(3)} |",
        f"| operations of `{ENV}` in the store | {short['operations']} | {long['operations']} |",
        "",
        f"Target: with {HISTORY:,} operations the overview over HTTP under {TARGET_OVERVIEW_S} s: {verdict(met)}.",
        "",
    ]
    publish(lines, "dashboard", args.write)
    return exit_code([met])


if __name__ == "__main__":
    sys.exit(main())
