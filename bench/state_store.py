"""State store benchmark: a rotation of the example's production under load, with the state
in SQLite (`.phoenix/state.db`) and in PostgreSQL (a throwaway local cluster on a Unix
socket), side by side in one run, interleaved.

For each store: the rotation's wall time, the journal writes per replaced server (every
INSERT, UPDATE and DELETE the store ran during the rotation, counted at the driver, divided
by the servers replaced), the time spent in those writes, and failed requests of steady
keep-alive load through every balancer.

Targets (issue 18): zero failed requests with either store; the rotation on PostgreSQL
takes at most 1.25x the one on SQLite (the store is never what a rotation waits on). The
exit code is 0 only when both were met.

    .venv/bin/python bench/state_store.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from sqlalchemy import event

from phoenixctl.engine import Executor, Project
from phoenixctl.example import init_example
from phoenixctl.load import LoadProcess

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from common import exit_code, failed_requests_target, heading, judge, publish, scratch, spread, verdict  # noqa: E402
from pg_cluster import Cluster  # noqa: E402 - the tests' throwaway cluster, made the same way here

ENV = "production"
TARGET_RATIO = 1.25
WRITES = ("INSERT", "UPDATE", "DELETE")


class WriteCounter:
    """Counts the store's writes (and the time in them) at the driver, while `counting`."""

    def __init__(self, engine) -> None:
        self.counting, self.writes, self.seconds = False, 0, 0.0
        event.listen(engine, "before_cursor_execute", self._before)
        event.listen(engine, "after_cursor_execute", self._after)

    def _before(self, conn, cursor, statement, parameters, context, executemany) -> None:
        conn.info["started"] = time.perf_counter()

    def _after(self, conn, cursor, statement, parameters, context, executemany) -> None:
        if self.counting and statement.lstrip().upper().startswith(WRITES):
            self.writes += len(parameters) if executemany else 1
            self.seconds += time.perf_counter() - conn.info.pop("started", time.perf_counter())


def make_project(directory: Path, state_url: str | None) -> Path:
    init_example(directory)
    spec = directory / "phoenix.yaml"
    if state_url:
        spec.write_text(spec.read_text().replace("provider: local ", f"state: {{url: '{state_url}'}}\nprovider: local ", 1))
    return spec


def rotate_once(name: str, executor: Executor, counter: WriteCounter, rate: float) -> dict:
    lbs = {lb["role"]: lb["address"] for lb in executor.status(ENV)["load_balancers"]}
    urls = [f"http://{lbs['frontend']}/page/{n}" for n in range(10)] + [f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]
    with LoadProcess(urls, concurrency=8, rate=rate, max_seconds=600) as load:
        load.wait_for_requests(int(rate))
        counter.counting, counter.writes, counter.seconds = True, 0, 0.0
        started = time.monotonic()
        result = executor.rotate(ENV)
        wall = time.monotonic() - started
        counter.counting = False
        load.wait_for_requests(load.answered + int(rate / 4))
    replaced = len(result.retired)
    return {
        "store": name, "wall": wall, "replaced": replaced, "writes": counter.writes / replaced if replaced else None,
        "write_ms": 1000 * counter.seconds / counter.writes if counter.writes else None, "sent": load.stats.sent, "failed": load.stats.failed,
    }


def markdown(rows: list[dict], repeats: int, rate: float, pg_version: str) -> tuple[list[str], list[bool | None]]:
    lines = heading("State store: SQLite and PostgreSQL (`bench/state_store.py`)") + [
        f"The example's `{ENV}` (3 frontend, 2 backend, 1 edit) rotated under {rate:g} requests/s over 8 keep-alive "
        f"connections through its three balancers; {repeats} rotation(s) per store, interleaved: median (min–max). "
        f"PostgreSQL {pg_version}, a local cluster on a Unix socket (fsync off, as a throwaway one); SQLite in WAL mode. "
        "Journal writes: INSERT/UPDATE/DELETE statements the store ran during the rotation, per replaced server.",
        "",
        "| store | wall (s) | journal writes per server | time per write (ms) | replaced | requests | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    walls = {}
    for name in ("sqlite", "postgresql"):
        runs = [r for r in rows if r["store"] == name]
        walls[name] = spread(r["wall"] for r in runs)
        lines.append(
            f"| {name} | {walls[name].format()} | {spread(r['writes'] for r in runs).format(1)} | "
            f"{spread(r['write_ms'] for r in runs).format(2)} | {sum(r['replaced'] for r in runs)} | "
            f"{sum(r['sent'] for r in runs)} | {sum(r['failed'] for r in runs)} |"
        )
    failed = sum(r["failed"] for r in rows)
    no_failures = failed_requests_target(sum(r["sent"] for r in rows), failed)
    ratio = walls["postgresql"].median / walls["sqlite"].median if walls["sqlite"].complete and walls["postgresql"].complete else None
    close = judge(ratio, lambda value: value <= TARGET_RATIO)
    lines += [
        "",
        f"Targets: zero failed requests -> **{failed} failed** ({verdict(no_failures)}); PostgreSQL's rotation at most "
        f"{TARGET_RATIO:g}x SQLite's -> **{'not measured' if ratio is None else f'{ratio:.2f}x'}** ({verdict(close)}).",
        "",
    ]
    return lines, [no_failures, close]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=2, help="rotations per store (the median is reported)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second during each rotation")
    parser.add_argument("--write", type=Path, help="update this RESULTS.md section")
    args = parser.parse_args()
    cluster = Cluster()
    rows, executors = [], {}
    try:
        with scratch("phoenix-bench-state-") as tmp:
            os.environ["PHOENIX_LOCAL_HOME"] = str(tmp / "fleet")  # the shared store's local fleet folder
            specs = {"sqlite": make_project(tmp / "sqlite", None), "postgresql": make_project(tmp / "postgresql", cluster.fresh_database())}
            try:
                for name, spec in specs.items():
                    project = Project(spec)
                    executors[name] = (Executor(project), WriteCounter(project.store.engine), project)
                    executors[name][0].up(ENV)
                for attempt in range(args.repeat):
                    for name, (executor, counter, _) in executors.items():
                        row = rotate_once(name, executor, counter, args.rate)
                        rows.append(row)
                        print(f"run {attempt + 1} {name}: wall {row['wall']:.2f}s writes/server {row['writes']} failed {row['failed']}", flush=True)
            finally:
                for executor, _, project in executors.values():
                    try:
                        executor.destroy(ENV)
                    finally:
                        project.close()
        import psycopg

        with psycopg.connect(cluster.url()) as connection:
            pg_version = connection.execute("SHOW server_version").fetchone()[0].split()[0]
    finally:
        cluster.remove()
    lines, targets = markdown(rows, args.repeat, args.rate, pg_version)
    publish(lines, "state_store", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
