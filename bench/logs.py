"""Log shipping benchmark: no access line lost, and what shipping costs the servers' throughput.

Two copies of `production` (3 frontend, 2 backend, 1 edit) in one project: `ship` ships its
servers' output to the project's aggregator (rsyslogd), `local` has `logs: {enabled: false}`
(output kept in each server's own log file only, as before shipping). For each, in turn
(interleaved, --repeats times): steady closed-loop load through its frontend balancer, every
request on a unique path (`/page/N?r=RUN-I`), during a full rotation of the environment and a
chaos kill (SIGKILL) of one of its frontend servers in the middle of it.

Targets (issue 21): every request that got a 2xx answer in `ship` has its access line in
`phoenix logs` (lost lines = 0); the load's throughput (2xx answers per second over the
rotation) with shipping on is within 10 % of shipping off (median of the runs).

    .venv/bin/python bench/logs.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import yaml

from phoenixctl.boot.secrets import create_tls_pair
from phoenixctl.drivers.local.aggregator import Aggregator
from phoenixctl.example import init_example
from phoenixctl.engine import Executor, Project

sys.path.insert(0, str(Path(__file__).parent))
from common import NOT_MEASURED, exit_code, heading, judge, publish, scratch, verdict  # noqa: E402

ENVS = {"ship": {}, "local": {"enabled": False}}
TOLERANCE = 0.10


def make_project(directory: Path) -> Path:
    init_example(directory)
    spec_path = directory / "phoenix.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    production = spec["environments"]["production"]
    spec["environments"] = {}
    for name, logs in ENVS.items():
        cert, key = create_tls_pair(directory / "secrets" / name, f"{name}.website.test")  # one pair per environment
        secrets = {"tls_cert": {"file": str(cert.relative_to(directory))}, "tls_key": {"file": str(key.relative_to(directory))}}
        spec["environments"][name] = {**production, "secrets": secrets, "logs": logs}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec_path


def _load(url: str, tag: str, concurrency: int, stop, answered, results) -> None:
    """In its own process (the executor's threads and GIL stay out of the way): GETs of unique
    paths from `concurrency` keep-alive connections, as fast as they are answered."""
    import asyncio

    import aiohttp

    ok: list[str] = []
    counts = {"sent": 0, "failed": 0}

    async def worker(index: int) -> None:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            n = 0
            while not stop.is_set():
                path = f"/page/{n % 30}?r={tag}-{index}-{n}"
                n += 1
                counts["sent"] += 1
                try:
                    async with session.get(url + path) as response:
                        await response.read()
                        if 200 <= response.status < 300:
                            ok.append(path)
                            answered.value += 1
                        else:
                            counts["failed"] += 1
                except (aiohttp.ClientError, asyncio.TimeoutError):
                    counts["failed"] += 1

    async def main() -> None:
        await asyncio.gather(*(worker(i) for i in range(concurrency)))

    started = time.monotonic()
    asyncio.run(main())
    results.put({"ok": ok, "seconds": time.monotonic() - started, **counts})


def chaos_kill(project: Project, env: str, old: set[str], after: float) -> list[str]:
    """SIGKILL one old frontend server `after` seconds into the rotation (as a machine failing)."""
    killed: list[str] = []

    def kill() -> None:
        time.sleep(after)
        for row in project.store.servers(env, "frontend"):
            if row.id in old and project.compute.is_alive(row.handle_data):
                project.compute.terminate(row.handle_data)
                killed.append(row.id)
                return

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return killed


def run_one(spec_path: Path, project: Project, executor: Executor, env: str, concurrency: int) -> dict:
    lb = next(b["address"] for b in executor.status(env)["load_balancers"] if b["role"] == "frontend")
    old = {s["id"] for s in executor.status(env)["servers"]}
    tag = uuid.uuid4().hex[:10]
    context = multiprocessing.get_context("spawn")
    stop, answered, results = context.Event(), context.Value("i", 0), context.Queue()
    load = context.Process(target=_load, args=(f"http://{lb}", tag, concurrency, stop, answered, results))
    load.start()
    try:
        deadline = time.monotonic() + 30
        while answered.value < 50 and time.monotonic() < deadline:
            time.sleep(0.05)
        killed = chaos_kill(project, env, old, after=1.0)
        started, before, cpu = time.monotonic(), answered.value, aggregator_cpu(project)
        result = executor.rotate(env)
        seconds, during = time.monotonic() - started, answered.value - before
        cpu = aggregator_cpu(project) - cpu if env == "ship" else None
    finally:
        stop.set()
        outcome = results.get(timeout=60)
        load.join(timeout=30)
    row = {
        "env": env, "tag": tag, "rotation_s": seconds, "throughput": during / seconds, "ok": outcome["ok"],
        "sent": outcome["sent"], "failed": outcome["failed"], "killed": killed, "retired": len(result.retired),
        "logs_kept": list(result.logs_kept), "aggregator_cpu": cpu,
    }
    if env == "ship":
        row["lost"] = lost_lines(spec_path, env, tag, set(outcome["ok"]))
    return row


def aggregator_cpu(project: Project) -> float:
    """CPU-seconds the project's rsyslogd used so far (0 when it is not running)."""
    pid = Aggregator(project.workdir / "logs").running_pid()
    try:
        times = psutil.Process(pid).cpu_times() if pid else None
    except psutil.Error:
        times = None
    return times.user + times.system if times else 0.0


def lost_lines(spec_path: Path, env: str, tag: str, ok: set[str], timeout: float = 60) -> list[str]:
    """The 2xx requests whose access line `phoenix logs` does not show (polled until none is
    missing or the time is up: shipping is asynchronous)."""
    deadline = time.monotonic() + timeout
    while True:
        shown = subprocess.run(
            [str(Path(sys.executable).parent / "phoenix"), "logs", env, "--grep", f"r={tag}-", "--json", "-f", str(spec_path)],
            capture_output=True, text=True, timeout=120,
        )
        logged = {json.loads(line)["msg"].split()[2] for line in shown.stdout.splitlines() if line.startswith("{")}
        missing = sorted(ok - logged)
        if not missing or time.monotonic() > deadline:
            return missing
        time.sleep(1)


def markdown(rows: list[dict], repeats: int, concurrency: int) -> tuple[list[str], list[bool | None]]:
    ship = [r for r in rows if r["env"] == "ship"]
    local = [r for r in rows if r["env"] == "local"]
    lines = heading("Log shipping (`bench/logs.py`)") + [
        f"Two copies of production (3 frontend, 2 backend, 1 edit) in one project, `ship` (shipping to the project's "
        f"rsyslogd) and `local` (`logs.enabled: false`), measured in turn, {repeats} run(s) each: closed-loop load of "
        f"{concurrency} keep-alive connections through the frontend balancer, each request on a unique path, during a full "
        "rotation and a SIGKILL of one old frontend server 1 s into it. Throughput: 2xx answers per second of rotation.",
        "",
        "| env | run | rotation (s) | throughput (2xx/s) | requests | 2xx | failed | killed | retired | lines lost | logs kept locally | rsyslogd CPU (s) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for index, r in enumerate(rows):
        lost = str(len(r["lost"])) if "lost" in r else "–"
        lines.append(
            f"| {r['env']} | {index // 2 + 1} | {r['rotation_s']:.1f} | {r['throughput']:.0f} | {r['sent']} | {len(r['ok'])} | "
            f"{r['failed']} | {', '.join(r['killed']) or 'none'} | {r['retired']} | {lost} | {len(r['logs_kept'])} | "
            f"{'–' if r['aggregator_cpu'] is None else format(r['aggregator_cpu'], '.2f')} |"
        )
    lost = sum(len(r["lost"]) for r in ship)
    lost_met = judge(None if not ship or not all(r["killed"] for r in ship) else lost, lambda n: n == 0)
    on = statistics.median(r["throughput"] for r in ship) if ship else None
    off = statistics.median(r["throughput"] for r in local) if local else None
    ratio = on / off if on and off else None
    ratio_met = judge(ratio, lambda x: x >= 1 - TOLERANCE)
    shown = lambda value, form: NOT_MEASURED if value is None else format(value, form)  # noqa: E731
    summary = (
        f"Targets: lines lost = 0 -> **{lost} lost** of {sum(len(r['ok']) for r in ship)} 2xx requests ({verdict(lost_met)}); "
        f"throughput with shipping within {TOLERANCE:.0%} of without -> **{shown(ratio, '.2f')}x** "
        f"({shown(on, '.0f')} vs {shown(off, '.0f')} 2xx/s, medians) ({verdict(ratio_met)})."
    )
    lines += ["", summary, ""]
    return lines, [lost_met, ratio_met]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of RESULTS.md")
    args = parser.parse_args()
    rows: list[dict] = []
    with scratch("phoenix-bench-logs-") as directory:
        spec_path = make_project(directory / "website")
        project = Project(spec_path)
        executor = Executor(project, lock_timeout=60)
        try:
            for env in ENVS:
                executor.up(env)
            for _ in range(args.repeats):
                for env in ENVS:
                    rows.append(run_one(spec_path, project, executor, env, args.concurrency))
                    print(f"{env}: {rows[-1]['throughput']:.0f} 2xx/s, lost {len(rows[-1].get('lost', []))}", file=sys.stderr)
        finally:
            for env in ENVS:
                executor.destroy(env)
            project.close()
    lines, targets = markdown(rows, args.repeats, args.concurrency)
    publish(lines, "logs", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
