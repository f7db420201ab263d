"""Strategies benchmark: rolling, blue-green and canary deploys of production, each
followed by a rollback, under steady load through the three load balancers.

For each: the deploy's wall time, the rollback's wall time, the rollback time as clients
saw it (from the rollback's start until the last answer by the new build), and failed
requests. Targets (issue 5): zero failed requests in every case; blue-green rollback
under 2 seconds.

    .venv/bin/python bench/strategies.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import yaml

from phoenixctl.example import init_example
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadProcess

sys.path.insert(0, str(Path(__file__).parent))
from common import heading, publish  # noqa: E402

STRATEGIES = ("rolling", "blue-green", "canary")


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
    project = Project(spec_path)
    try:
        timings["rollback_start"] = time.monotonic()
        Executor(project).rollback("production")
        timings["rollback"] = time.monotonic() - timings["rollback_start"]
    finally:
        project.close()
    time.sleep(1.0)
    return timings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rate", type=float, default=150.0)
    parser.add_argument("--canary-time", default="5s")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-strategies-") as tmp:
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
            with LoadProcess(urls, concurrency=16, rate=args.rate, max_seconds=600) as load:
                load.wait_for_requests(int(args.rate))
                for index, strategy in enumerate(STRATEGIES):
                    runs.append(run(spec_path, strategy, f"2.{index}.0"))
                    print(f"{strategy}: deploy {runs[-1]['deploy']:.2f}s, rollback {runs[-1]['rollback']:.2f}s", flush=True)
            stats = load.stats
        finally:
            executor.destroy("production")
            project.close()
    lines = heading("Strategies (`bench/strategies.py`)") + [
        f"Load: {args.rate:g} requests/s over 16 keep-alive connections through the frontend, backend and edit balancers "
        f"of production (3 + 2 + 1 servers), from a second process; each strategy deploys a new VERSION, then `rollback`; "
        f"canary_time {args.canary_time}.",
        "",
        "| strategy | deploy (s) | rollback command (s) | rollback seen by clients (s) | how it rolled back |",
        "|---|---|---|---|---|",
    ]
    how = {"rolling": "redeploy of the previous release", "blue-green": "switch back to the kept group", "canary": "redeploy of the previous release (no canary)"}
    seen = {}
    for run_ in runs:
        last = stats.last_answer_from(run_["version"], run_["rollback_start"])
        seen[run_["strategy"]] = (last - run_["rollback_start"]) if last else 0.0
        lines.append(
            f"| {run_['strategy']} | {run_['deploy']:.2f} | {run_['rollback']:.2f} | {seen[run_['strategy']]:.2f} | {how[run_['strategy']]} |"
        )
    lines += [
        "",
        f"Requests: {stats.sent} sent, {stats.failed} failed {dict(stats.errors) or ''}.  ",
        f"Targets: zero failed requests -> **{stats.failed}** ({'met' if stats.failed == 0 else 'NOT met'}); "
        f"blue-green rollback under 2 s -> **{seen['blue-green']:.2f} s** seen by clients, "
        f"{runs[1]['rollback']:.2f} s for the whole command ({'met' if seen['blue-green'] < 2 else 'NOT met'}).",
        "",
    ]
    publish(lines, "strategies", args.write)
    return 0 if stats.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
