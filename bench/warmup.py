"""Warm-up benchmark: client latency during the minute after a swap, warm-up off vs on.

The example's frontend renders uncached pages slowly (RENDER_DELAY_MS) and cached ones
fast. Under steady load through the frontend load balancer (every page in turn), rotate
production's frontends with warm-up off, then with warm-up on, and compare the p50/p95/p99
latency seen by clients in the window after each rotation starts with the steady state
just before it.

Each case (warm-up off, on) runs `--repeat` times, interleaved; the table shows the median
with the range, and the verdict is on the median. A run with no request in its steady or
swap window measured nothing: "not measured", never met.

Targets (issue 4): with warm-up on, p95 during the swap stays within 1.2x the steady p95;
no failed request. The exit code is 0 only when both were met.

    .venv/bin/python bench/warmup.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from phoenixctl.example import init_example
from phoenixctl.engine import Executor, Project
from phoenixctl.load import LoadProcess

sys.path.insert(0, str(Path(__file__).parent))
from common import exit_code, failed_requests_target, heading, judge, publish, scratch, spread, verdict  # noqa: E402


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


TARGET_RATIO = 1.2  # p95 during the swap / steady p95, warm-up on


def percentiles(stats, span) -> tuple[float, float, float, int]:
    return (*(stats.percentile(p, *span) * 1000 for p in (50, 95, 99)), stats.count(*span))


def measure_run(stats, run: dict) -> dict:
    """One run's latencies (ms) in its steady and swap windows, and the p95 ratio: None when
    either window holds no request (or the steady p95 is 0), i.e. nothing was measured."""
    s50, s95, s99, steady_count = percentiles(stats, run["steady"])
    w50, w95, w99, swap_count = percentiles(stats, run["swap"])
    measured = steady_count > 0 and swap_count > 0 and s95 > 0
    return {
        "steady": (s50, s95, s99) if steady_count else (None, None, None),
        "swap": (w50, w95, w99) if swap_count else (None, None, None),
        "ratio": w95 / s95 if measured else None,
        "count": swap_count,
    }


def times(ratio) -> str:
    """A ratio's median (min–max) followed by "x"; "not measured" as it is."""
    return ratio.format() + ("x" if ratio.median is not None else "")


def report(runs: list[dict], stats, args) -> tuple[list[str], list[bool | None]]:
    """The RESULTS.md section and the verdict on each named target (None: not measured)."""
    lines = heading("Warm-up (`bench/warmup.py`)") + [
        f"Load: {args.rate:g} requests/s over 16 keep-alive connections through production's frontend balancer, "
        f"every one of {args.pages + 1} pages in turn (uncached render 80 ms); rotation of the 3 frontends with "
        f"`max_surge: 100%`; steady state = the {args.steady:g}s before the swap, swap = the {args.window:g}s from its start. "
        f"All runs in one process tree, one after the other: {args.repeat} run(s) per case, interleaved; "
        "median (min–max), percentiles as medians.",
        "",
        "| warm-up | rotation (s) | steady p50 / p95 / p99 (ms) | swap p50 / p95 / p99 (ms) | p95 swap / steady | requests in swap window | failed (whole run) |",
        "|---|---|---|---|---|---|---|",
    ]
    ratios = {}
    for warm in (False, True):
        mine = [r for r in runs if r["warm"] == warm]
        if not mine:
            continue
        measured = [measure_run(stats, r) for r in mine]
        ratios[warm] = spread(m["ratio"] for m in measured)
        steady = " / ".join(spread(m["steady"][i] for m in measured).format(1, show_range=False) for i in range(3))
        swap = " / ".join(spread(m["swap"][i] for m in measured).format(1, show_range=False) for i in range(3))
        count = spread(m["count"] for m in measured).format(0)
        lines.append(
            f"| {'on' if warm else 'off'} | {spread(r['rotation_s'] for r in mine).format(1)} | {steady} | {swap} | "
            f"{ratios[warm].format()} | {count} | {stats.failed} |"
        )
    warm_on = ratios.get(True)
    fast_swap = judge(warm_on, lambda ratio: ratio <= TARGET_RATIO) if warm_on else None
    no_failures = failed_requests_target(stats.sent, stats.failed)
    off = f"; with warm-up off: {times(ratios[False])}" if False in ratios else ""
    lines += [
        "",
        f"Targets: with warm-up on, p95 during the swap within {TARGET_RATIO:g}x steady (median) -> "
        f"**{times(warm_on) if warm_on else 'not run'}** ({verdict(fast_swap)}){off}; "
        f"zero failed requests -> **{stats.failed}** ({verdict(no_failures)}).",
        "",
    ]
    return lines, [fast_swap, no_failures]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pages", type=int, default=400, help="frontend pages (each uncached render is slow)")
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second through the frontend balancer")
    parser.add_argument("--steady", type=float, default=20.0, help="seconds of steady state measured before each swap")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured from the start of each swap")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (the median is reported)")
    parser.add_argument("--write", type=Path, help="update this RESULTS.md section")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    with scratch("phoenix-bench-warmup-") as tmp:
        spec_path = make_project(Path(tmp), args.pages)
        project = Project(spec_path)
        executor = Executor(project)
        runs = []
        try:
            executor.up("production")  # warm-up on: the first servers start warm
            lb = next(lb["address"] for lb in executor.status("production")["load_balancers"] if lb["role"] == "frontend")
            urls = [f"http://{lb}/"] + [f"http://{lb}/page/{n}" for n in range(args.pages)]
            # each run: its steady state, then its window (or the rotation, up to its 120 s warm-up timeout)
            total = args.repeat * 2 * (args.steady + max(args.window, 150)) + 60
            with LoadProcess(urls, concurrency=16, rate=args.rate, max_seconds=total) as load:
                load.wait_for_requests(int(args.rate))
                for attempt in range(args.repeat):
                    for warm in (False, True):
                        runs.append(measure(spec_path, warm, args.steady, args.window))
                        print(f"run {attempt + 1} warm-up {'on' if warm else 'off'}: rotation {runs[-1]['rotation_s']:.1f}s", flush=True)
            stats = load.stats
        finally:
            executor.destroy("production")
            project.close()
    lines, targets = report(runs, stats, args)
    publish(lines, "warmup", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
