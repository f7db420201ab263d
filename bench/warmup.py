"""Warm-up benchmark: client latency during the minute after a swap, warm-up off vs on.

The example's frontend renders uncached pages slowly (RENDER_DELAY_MS) and cached ones
fast. Under steady load through the frontend load balancer (every page in turn), rotate
production's frontends with warm-up off, then with warm-up on, and compare the p50/p95/p99
latency seen by clients in the window after each rotation starts with the steady state
just before it.

Target (issue 4): with warm-up on, p95 during the swap stays within 1.2x the steady p95.

    .venv/bin/python bench/warmup.py --write bench/RESULTS.md
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


def make_project(directory: Path, pages: int) -> Path:
    init_example(directory)
    spec_path = directory / "phoenix.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    frontend = spec["roles"]["frontend"]
    frontend["env"]["PAGES"] = str(pages)
    frontend["warmup"].update(max_pages=pages + 10, concurrency=8, timeout="120s")
    spec["environments"]["production"]["roles"]["frontend"]["env"]["RENDER_DELAY_MS"] = "80"
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec_path


def set_warmup(spec_path: Path, enabled: bool) -> None:
    spec = yaml.safe_load(spec_path.read_text())
    spec["environments"]["production"]["roles"]["frontend"]["warmup"] = {**spec["roles"]["frontend"]["warmup"], "enabled": enabled}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))


def measure(spec_path: Path, warm: bool, steady: float, window: float) -> dict:
    set_warmup(spec_path, warm)
    project = Project(spec_path)
    try:
        executor = Executor(project)
        steady_start = time.monotonic()
        time.sleep(steady)  # steady state: load runs in its own process meanwhile
        swap_start = time.monotonic()
        result = executor.rotate("production", role="frontend")
        rotation = time.monotonic() - swap_start
        remaining = swap_start + window - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        return {
            "warm": warm,
            "steady": (steady_start, swap_start),
            "swap": (swap_start, swap_start + window),
            "rotation_s": rotation,
            "replaced": len(result.retired),
        }
    finally:
        project.close()


def percentiles(stats, span) -> tuple[float, float, float, int]:
    return (*(stats.percentile(p, *span) * 1000 for p in (50, 95, 99)), stats.count(*span))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=400, help="frontend pages (each uncached render is slow)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second through the frontend balancer")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of steady state measured before each swap")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured from the start of each swap")
    parser.add_argument("--write", type=Path, help="update this RESULTS.md section")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="phoenix-bench-warmup-") as tmp:
        spec_path = make_project(Path(tmp), args.pages)
        project = Project(spec_path)
        executor = Executor(project)
        runs = []
        try:
            executor.up("production")  # warm-up on: the first servers start warm
            lb = next(lb["address"] for lb in executor.status("production")["load_balancers"] if lb["role"] == "frontend")
            urls = [f"http://{lb}/"] + [f"http://{lb}/page/{n}" for n in range(args.pages)]
            total = args.steady * 2 + args.window * 2 + 120
            with LoadProcess(urls, concurrency=16, rate=args.rate, max_seconds=total) as load:
                load.wait_for_requests(int(args.rate))
                for warm in (False, True):
                    runs.append(measure(spec_path, warm, args.steady, args.window))
                    print(f"warm-up {'on' if warm else 'off'}: rotation {runs[-1]['rotation_s']:.1f}s", flush=True)
            stats = load.stats
        finally:
            executor.destroy("production")
            project.close()
    lines = heading("Warm-up (`bench/warmup.py`)") + [
        f"Load: {args.rate:g} requests/s over 16 keep-alive connections through production's frontend balancer, "
        f"every one of {args.pages + 1} pages in turn (uncached render 80 ms); rotation of the 3 frontends with "
        f"`max_surge: 100%`; steady state = the {args.steady:g}s before the swap, swap = the {args.window:g}s from its start. "
        "Both runs in one process tree, one after the other.",
        "",
        "| warm-up | rotation (s) | steady p50 / p95 / p99 (ms) | swap p50 / p95 / p99 (ms) | p95 swap / steady | requests in swap window | failed (whole run) |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    for run in runs:
        s50, s95, s99, _ = percentiles(stats, run["steady"])
        w50, w95, w99, count = percentiles(stats, run["swap"])
        ratios[run["warm"]] = w95 / s95 if s95 else float("inf")
        lines.append(
            f"| {'on' if run['warm'] else 'off'} | {run['rotation_s']:.1f} | {s50:.1f} / {s95:.1f} / {s99:.1f} | "
            f"{w50:.1f} / {w95:.1f} / {w99:.1f} | {ratios[run['warm']]:.2f} | {count} | {stats.failed} |"
        )
    lines += [
        "",
        f"Target: with warm-up on, p95 during the swap within 1.2x steady -> **{ratios[True]:.2f}x** "
        f"({'met' if ratios[True] <= 1.2 else 'NOT met'}); with warm-up off: {ratios[False]:.2f}x. "
        f"Failed requests: {stats.failed}.",
        "",
    ]
    publish(lines, "warmup", args.write)
    return 0 if stats.failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
