"""Strategies benchmark: rolling, blue-green and canary deploys of production, each
followed by a rollback, under steady load through the three load balancers.

For each: the deploy's wall time, the rollback's wall time, the rollback time as clients
saw it (from the rollback's start until the last answer by the new build), and failed
requests. The rollback runs as a user runs it, `phoenix rollback production` in a process
of its own, timed from just before that process is started: CLI start included (the
package's bytecode compiled first, as pip leaves an installed package). Each strategy runs `--repeat` times (interleaved); the table shows the median
with the range, and the verdict is on the median. A run in which no answer by the new
build was seen after the rollback started measured nothing: "not measured", never met.
Targets: zero failed requests in every case (issue 5); blue-green rollback within 1 s
as clients saw it, CLI start included (issue 15; issue 5 asked for 2 s). The exit code is 0 only when both were met.

    .venv/bin/python bench/strategies.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import yaml

from phoenixctl.example import init_example
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadProcess

sys.path.insert(0, str(Path(__file__).parent))
from common import compile_phoenix, exit_code, failed_requests_target, heading, judge, publish, scratch, spread, verdict  # noqa: E402

STRATEGIES = ("rolling", "blue-green", "canary")
PHOENIX = str(Path(sys.executable).parent / "phoenix")  # the command a user runs, beside this interpreter


def run(spec_path: Path, strategy: str, version: str) -> dict:
    (spec_path.parent / "VERSION").write_text(version + "\n")
    timings = {"strategy": strategy, "version": version}
    project = Project(spec_path)
    try:
        started = time.monotonic()
        Executor(project).deploy("production", strategy=strategy)
        timings["deploy"] = time.monotonic() - started
    finally:
        project.close()
    time.sleep(1.0)  # a second of the new build serving: steady load meanwhile
    # CLOCK_MONOTONIC is system-wide: the load process's answer times compare with this start
    timings["rollback_start"] = time.monotonic()
    rolled_back = subprocess.run([PHOENIX, "rollback", "production", "-f", str(spec_path)], capture_output=True, text=True, timeout=300)
    timings["rollback"] = time.monotonic() - timings["rollback_start"]
    if rolled_back.returncode != 0:
        raise SystemExit(f"phoenix rollback failed ({rolled_back.returncode}): {rolled_back.stderr.strip()}")
    time.sleep(1.0)
    return timings


HOW = {
    "rolling": "redeploy of the previous release",
    "blue-green": "switch back to the kept group",
    "canary": "redeploy of the previous release (no canary)",
}
TARGET_ROLLBACK_S = 1.0  # blue-green, as clients saw it, from before the CLI process starts (issue 15)


def rollback_seen(stats, run_: dict) -> float | None:
    """Seconds from the rollback's start to the last answer by the build it rolled back;
    None when no such answer was seen after the rollback started (nothing measured)."""
    last = stats.last_answer_from(run_["version"], run_["rollback_start"])
    return None if last is None else last - run_["rollback_start"]


def report(runs: list[dict], stats, rate: float, canary_time: str, repeat: int) -> tuple[list[str], list[bool | None]]:
    """The RESULTS.md section and the verdict on each named target (None: not measured)."""
    lines = heading("Strategies (`bench/strategies.py`)") + [
        f"Load: {rate:g} requests/s over 16 keep-alive connections through the frontend, backend and edit balancers "
        f"of production (3 + 2 + 1 servers), from a second process; each strategy deploys a new VERSION, then `rollback`; "
        f"canary_time {canary_time}; {repeat} run(s) per strategy, interleaved: median (min–max).",
        "",
        "| strategy | deploy (s) | `phoenix rollback` process (s) | rollback seen by clients (s) | how it rolled back |",
        "|---|---|---|---|---|",
    ]
    summary = {}
    for strategy in STRATEGIES:
        mine = [r for r in runs if r["strategy"] == strategy]
        if not mine:
            continue
        summary[strategy] = {
            "deploy": spread(r["deploy"] for r in mine),
            "rollback": spread(r["rollback"] for r in mine),
            "seen": spread(rollback_seen(stats, r) for r in mine),
        }
        s = summary[strategy]
        lines.append(f"| {strategy} | {s['deploy'].format()} | {s['rollback'].format()} | {s['seen'].format()} | {HOW[strategy]} |")
    no_failures = failed_requests_target(stats.sent, stats.failed)
    blue_green = summary.get("blue-green")
    fast_rollback = judge(blue_green["seen"], lambda s: s <= TARGET_ROLLBACK_S) if blue_green else None
    seen_text = f"**{blue_green['seen'].format()}** s seen by clients, {blue_green['rollback'].format()} s for the whole command" if blue_green else "**not run**"
    lines += [
        "",
        f"Requests: {stats.sent} sent, {stats.failed} failed {dict(stats.errors) or ''}.  ",
        f"Targets: zero failed requests -> **{stats.failed}** ({verdict(no_failures)}); "
        f"blue-green rollback within {TARGET_ROLLBACK_S:g} s of `phoenix rollback` starting (median) -> {seen_text} ({verdict(fast_rollback)}).",
        "",
    ]
    return lines, [no_failures, fast_rollback]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--canary-time", default="5s")
    parser.add_argument("--repeat", type=int, default=3, help="runs per strategy (the median is reported)")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    compile_phoenix()  # the rollback's own process starts as an installed `phoenix` does
    with scratch("phoenix-bench-strategies-") as tmp:
        init_example(Path(tmp))
        spec_path = Path(tmp) / "phoenix.yaml"
        spec = yaml.safe_load(spec_path.read_text())
        spec["environments"]["production"]["rollout"].update(canary_time=args.canary_time)
        spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        project = Project(spec_path)
        executor = Executor(project)
        runs = []
        try:
            executor.up("production")
            lbs = {lb["role"]: lb["address"] for lb in executor.status("production")["load_balancers"]}
            urls = [f"http://{lbs['frontend']}/page/{n}" for n in range(30)]
            urls += [f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]
            with LoadProcess(urls, concurrency=16, rate=args.rate, max_seconds=300 * args.repeat) as load:
                load.wait_for_requests(int(args.rate))
                for attempt in range(args.repeat):
                    for index, strategy in enumerate(STRATEGIES):
                        # a version of its own per run: the answers of one run's new build are told apart
                        runs.append(run(spec_path, strategy, f"2.{index}.{attempt}"))
                        print(
                            f"run {attempt + 1} {strategy}: deploy {runs[-1]['deploy']:.2f}s, rollback {runs[-1]['rollback']:.2f}s",
                            flush=True,
                        )
            stats = load.stats
        finally:
            executor.destroy("production")
            project.close()
    lines, targets = report(runs, stats, args.rate, args.canary_time, args.repeat)
    publish(lines, "strategies", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
