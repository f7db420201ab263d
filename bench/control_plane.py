"""Control-plane benchmark (issue 15): how fast the `phoenix` command starts, and how the
work of planning and rotating grows with the fleet.

One run, side by side:
- wall times of `phoenix --help`, `validate`, `status ENV --json` and `plan ENV --json` on
  the example (its ci environment up, real processes behind real HAProxy), each beside
  `python -c pass`, interleaved, median of `--repeat`;
- with the simulated provider (nothing runs: Phoenix's own work only), one environment of
  100, 1,000 and 10,000 servers and 200 environments of 50: `phoenix plan --json` of one
  environment as a user runs it, planning every environment in one process, and a rotation
  of every server. Each size runs in a fresh worker process: its CPU-seconds per replaced
  server (Phoenix's own, measured around the rotation) and its peak memory (the worker's
  peak resident set, startup included).

The package's bytecode is compiled first, as pip leaves an installed package (this machine
sets PYTHONDONTWRITEBYTECODE, so an editable install would otherwise compile every module
of Phoenix at every command). A worker runs as the `phoenix` script does: garbage
collection deferred until the project is open (`phoenixctl.heap`).

Targets: `--help` ≤ 0.15 s and `status --json` ≤ 0.3 s (medians); `plan` of one
environment of 10,000 servers ≤ 1 s and of 200 environments × 50 ≤ 2 s; CPU per replaced
server ≤ 5 ms, and CPU per server at 10,000 ÷ at 100 ≤ 1.3; peak memory with 10,000
servers ≤ 300 MB. The exit code is 0 only when every one was met.

    .venv/bin/python bench/control_plane.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import compile_phoenix, exit_code, heading, judge, publish, scratch, simulated_spec, spread, verdict  # noqa: E402

PHOENIX = str(Path(sys.executable).parent / "phoenix")
SIZES = ((1, 100), (1, 1_000), (1, 10_000), (200, 50))  # (environments, servers in each)
TARGET_HELP_S = 0.15
TARGET_STATUS_S = 0.3
TARGET_PLAN_S = {(1, 10_000): 1.0, (200, 50): 2.0}
TARGET_CPU_PER_SERVER_S = 0.005
TARGET_CPU_RATIO = 1.3
TARGET_PEAK_MB = 300.0


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, subprocess.CompletedProcess]:
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    return time.perf_counter() - started, done


def cli_start(repeat: int) -> dict[str, list[float]]:
    """The example's commands, interleaved with `python -c pass`, `repeat` times each."""
    from phoenixctl.engine import Executor, Project
    from phoenixctl.example import init_example

    with scratch("phoenix-bench-control-") as tmp:
        init_example(tmp)
        spec = str(tmp / "phoenix.yaml")
        commands = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "phoenix --help": [PHOENIX, "--help"],
            "phoenix validate": [PHOENIX, "validate", "-f", spec],
            "phoenix status ci --json": [PHOENIX, "status", "ci", "--json", "-f", spec],
            "phoenix plan ci --json": [PHOENIX, "plan", "ci", "--json", "-f", spec],
        }
        project = Project(spec)
        try:
            Executor(project).up("ci")
            times: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(repeat):
                for name, command in commands.items():
                    seconds, done = timed(command, cwd=tmp)
                    if done.returncode != 0:
                        raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.strip()}")
                    times[name].append(seconds)
        finally:
            Executor(project).destroy("ci")
            project.close()
    return times


def worker(directory: Path, envs: int, servers: int) -> None:
    """In a fresh process: up, plan every environment, rotate every one (every server
    replaced); prints its figures as one JSON line."""
    from phoenixctl import heap

    heap.defer_collection()  # as the `phoenix` script does, before the engine loads
    from phoenixctl.engine import Executor, Project

    spec_path = simulated_spec(envs, servers, directory)
    project = Project(spec_path)
    try:
        executor = Executor(project)
        names = list(project.spec.environments)
        for name in names:
            executor.up(name)
        started = time.perf_counter()
        for name in names:
            executor.reconcile_plan(name)
        plan_all = time.perf_counter() - started
    finally:
        project.close()
    project = Project(spec_path)
    try:  # every environment rotated, one after the other, as `watch` would over a day
        cpu = time.process_time()
        started = time.perf_counter()
        replaced = sum(len(Executor(project).rotate(name).retired) for name in names)
        rotate_wall = time.perf_counter() - started
        rotate_cpu = time.process_time() - cpu
    finally:
        project.close()
    print(json.dumps({
        "plan_all": plan_all, "rotate_wall": rotate_wall, "rotate_cpu": rotate_cpu,
        "replaced": replaced, "first_env": names[0],
    }))


def scale(envs: int, servers: int) -> dict:
    """One size in a worker process (its peak memory is its own), then `phoenix plan` of
    one environment from outside, as a user runs it."""
    with scratch("phoenix-bench-scale-") as tmp:
        process = subprocess.Popen(
            [sys.executable, __file__, "--worker", str(tmp), str(envs), str(servers)], stdout=subprocess.PIPE, text=True
        )
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        if process.returncode != 0:
            raise SystemExit(f"worker for {envs} x {servers} failed ({process.returncode})")
        figures = json.loads(output.strip().splitlines()[-1])
        figures["peak_mb"] = usage.ru_maxrss / 1024  # kilobytes on Linux
        seconds, done = timed([PHOENIX, "plan", figures["first_env"], "--json", "-f", str(tmp / "phoenix.yaml")])
        if done.returncode not in (0, 1):  # 1: the plan has work to do
            raise SystemExit(f"phoenix plan failed ({done.returncode}): {done.stderr.strip()}")
        figures["plan_cli"] = seconds
    figures.update(envs=envs, servers=servers)
    figures["cpu_per_server"] = figures["rotate_cpu"] / figures["replaced"] if figures["replaced"] else None
    return figures


def report(times: dict[str, list[float]], sizes: list[dict], repeat: int) -> tuple[list[str], list[bool | None]]:
    start = {name: spread(values) for name, values in times.items()}
    lines = heading("Control plane (`bench/control_plane.py`)") + [
        f"CLI start: each command {repeat} times, interleaved with `python -c pass`, median (min–max); "
        "status and plan read the example's ci environment, up on the local provider.",
        "",
        "| command | seconds | ÷ `python -c pass` |",
        "|---|---|---|",
    ]
    base = start["python -c pass"].median
    for name, value in start.items():
        lines.append(f"| `{name}` | {value.format(3)} | {value.median / base:.1f} |")
    lines += [
        "",
        "Scale, simulated provider (nothing runs; Phoenix's own work). Plan (CLI): `phoenix plan ENV --json` of one "
        "environment, process start included; plan (all, in process): every environment planned by one process; "
        "rotate: every server of every environment replaced (the environments one after the other), CPU-seconds of the process around the rotations.",
        "",
        "| fleet | plan (CLI) s | plan (all, in process) s | rotate wall s | rotate CPU s | CPU per replaced server ms | peak memory MB |",
        "|---|---|---|---|---|---|---|",
    ]
    by_size = {(f["envs"], f["servers"]): f for f in sizes}
    for f in sizes:
        fleet = f"{f['envs']} × {f['servers']:,}" if f["envs"] > 1 else f"1 × {f['servers']:,}"
        lines.append(
            f"| {fleet} | {f['plan_cli']:.2f} | {f['plan_all']:.2f} | {f['rotate_wall']:.2f} | {f['rotate_cpu']:.2f} "
            f"| {f['cpu_per_server'] * 1000:.2f} | {f['peak_mb']:.0f} |"
        )
    big, small, many = by_size.get((1, 10_000)), by_size.get((1, 100)), by_size.get((200, 50))
    help_met = judge(start["phoenix --help"], lambda s: s <= TARGET_HELP_S)
    status_met = judge(start["phoenix status ci --json"], lambda s: s <= TARGET_STATUS_S)
    plan_big = judge(big and big["plan_cli"], lambda s: s <= TARGET_PLAN_S[(1, 10_000)])
    plan_many = judge(many and many["plan_all"], lambda s: s <= TARGET_PLAN_S[(200, 50)])
    cpu_met = judge(None if any(f["cpu_per_server"] is None for f in sizes) else max(f["cpu_per_server"] for f in sizes), lambda s: s <= TARGET_CPU_PER_SERVER_S)
    ratio = big["cpu_per_server"] / small["cpu_per_server"] if big and small else None
    ratio_met = judge(ratio, lambda r: r <= TARGET_CPU_RATIO)
    peak_met = judge(big and big["peak_mb"], lambda m: m <= TARGET_PEAK_MB)
    def shown(value: float | None, unit: str = "s", digits: int = 2) -> str:
        return "not measured" if value is None else f"{value:.{digits}f}{unit}"

    worst_cpu = max((f["cpu_per_server"] for f in sizes if f["cpu_per_server"] is not None), default=None)
    targets = [
        f"`--help` ≤ {TARGET_HELP_S} s -> **{start['phoenix --help'].format(3, show_range=False)}** ({verdict(help_met)})",
        f"`status ci --json` ≤ {TARGET_STATUS_S} s -> **{start['phoenix status ci --json'].format(3, show_range=False)}** ({verdict(status_met)})",
        f"`plan` of one environment of 10,000 ≤ 1 s -> **{shown(big and big['plan_cli'])}** ({verdict(plan_big)})",
        f"plan of 200 environments × 50 ≤ 2 s -> **{shown(many and many['plan_all'])}** ({verdict(plan_many)})",
        f"CPU per replaced server ≤ 5 ms at every size -> **{shown(worst_cpu and worst_cpu * 1000, ' ms')}** at worst ({verdict(cpu_met)})",
        f"CPU per server at 10,000 ÷ at 100 ≤ {TARGET_CPU_RATIO} -> **{shown(ratio, '')}** ({verdict(ratio_met)})",
        f"peak memory with 10,000 servers ≤ {TARGET_PEAK_MB:.0f} MB -> **{shown(big and big['peak_mb'], ' MB', 0)}** ({verdict(peak_met)})",
    ]
    lines += ["", "Targets: " + "; ".join(targets) + ".", ""]
    return lines, [help_met, status_met, plan_big, plan_many, cpu_met, ratio_met, peak_met]


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        worker(Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=10, help="runs of each CLI command (the median is reported)")
    parser.add_argument("--sizes", default="all", help="'all', or a comma list of ENVSxSERVERS, e.g. 1x100,1x1000")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    sizes = SIZES if args.sizes == "all" else tuple(tuple(int(n) for n in s.split("x")) for s in args.sizes.split(","))
    compile_phoenix()
    times = cli_start(args.repeat)
    figures = []
    for envs, servers in sizes:
        figures.append(scale(envs, servers))
        f = figures[-1]
        print(f"{envs} x {servers}: plan {f['plan_cli']:.2f}s, rotate {f['rotate_wall']:.2f}s, {f['cpu_per_server'] * 1000:.2f} ms CPU/server, {f['peak_mb']:.0f} MB", flush=True)
    lines, targets = report(times, figures, args.repeat)
    publish(lines, "control-plane", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
