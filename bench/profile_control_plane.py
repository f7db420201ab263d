"""Profile the control plane at scale, with drivers where nothing runs (`provider: simulated`,
or the in-memory `fake` of code from before it): how Phoenix's own work grows with the
fleet. Tests nothing; measures and profiles.

For each size, in a child process of its own (so peak memory is that size's): a project with
one environment of N servers (or 200 environments of 50), `up`, then the image changes (so
every server is outdated), `plan` (the reconcile report), then `rotate`. Reported: wall time
of plan and rotate, Phoenix's CPU per replaced server (`time.process_time`, every thread),
and the child's peak RSS.

    python bench/profile_control_plane.py                       # this checkout's src
    python bench/profile_control_plane.py --src old=/work/wt-linear-old/src --src new=src
    python bench/profile_control_plane.py --sizes 1000 --profile   # cProfile, every thread

`--src LABEL=PATH` runs the children with PATH first on PYTHONPATH, so two versions of the
code are measured side by side in one run. Only `phoenixctl` is imported."""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

ENVS_OF_50 = "200x50"
SIZES = ["100", "1000", "5000", "10000", ENVS_OF_50]
ROLLOUT = {"max_surge": "10%", "max_unavailable": 0}  # ten batches at every size


def provider() -> str:
    """`simulated` where the code has it; code from before it had the in-memory `fake` in src."""
    from importlib.util import find_spec

    return "simulated" if find_spec("phoenixctl.drivers.simulated") else "fake"


def spec(envs: dict[str, int], start: str) -> str:
    import yaml  # phoenixctl's own dependency

    return yaml.safe_dump({
        "project": "scale",
        "provider": provider(),
        "images": {"app": {"start": start}},
        "roles": {"web": {"image": "app", "port": 8080}},
        "environments": {env: {"roles": {"web": count}, "rollout": ROLLOUT} for env, count in envs.items()},
        "defaults": {"deadlines": {"boot": "60s", "health": "60s", "swap": "60s", "drain": "60s", "stop": "60s"}},
    })


class ThreadProfiles:
    """cProfile in every thread (cProfile alone sees only the thread that enabled it), timed
    by each thread's own CPU clock: a thread waiting for a lock or the GIL costs nothing."""

    def __init__(self):
        self.profiles: list[cProfile.Profile] = []
        self.lock = threading.Lock()

    def _start_in_thread(self, *_):
        profile = cProfile.Profile(time.thread_time)
        with self.lock:
            self.profiles.append(profile)
        profile.enable()  # replaces this hook for the rest of the thread

    def __enter__(self):
        threading.setprofile(self._start_in_thread)
        self.main = cProfile.Profile(time.thread_time)
        self.main.enable()
        return self

    def __exit__(self, *_):
        self.main.disable()
        threading.setprofile(None)

    def report(self, top: int = 30) -> str:
        out = io.StringIO()
        stats = pstats.Stats(self.main, stream=out)
        for profile in self.profiles:
            stats.add(profile)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        return out.getvalue()


def quiet_fake(workdir: Path) -> None:
    """The in-memory world without its per-event count of every balancer's serving members
    (the invariant tests' bookkeeping, O(fleet) per event): Phoenix's work is measured, not
    the test double's. Code from before that switch existed gets the same by a stand-in."""
    from phoenixctl.drivers.fake import FakeWorld

    world = FakeWorld.of(workdir)
    if hasattr(world, "record_serving"):
        world.record_serving = False
    else:
        FakeWorld.serving = lambda self, key: ()


def distinct_server_ids() -> None:
    """Code from before 289a8e1 drew a server id from 24 random bits and never checked it:
    at a few thousand servers two met and the launch failed on the store's primary key. It
    gets distinct ids from a counter instead (same format, same cost), so it can be measured."""
    from phoenixctl.engine import lifecycle
    from phoenixctl.state import StateStore

    if StateStore.add_server.__annotations__.get("return") in ("bool", bool):
        return  # draws again when an id is taken
    counter = itertools.count(int.from_bytes(os.urandom(2), "big") << 8)
    lifecycle.secrets = types.SimpleNamespace(token_hex=lambda n: f"{next(counter) % (1 << (8 * n)):0{2 * n}x}")


def measure(size: str, profile: bool, fake_checks: bool) -> dict:
    """One size, in this process: up, change the image, plan, rotate."""
    from phoenixctl.engine import Executor, Project

    envs = {f"e{i:03d}": 50 for i in range(200)} if size == ENVS_OF_50 else {"prod": int(size)}
    servers = sum(envs.values())
    result: dict = {"size": size, "servers": servers}
    with tempfile.TemporaryDirectory() as directory:
        spec_path = Path(directory) / "phoenix.yaml"
        spec_path.write_text(spec(envs, "serve v1"))
        if not fake_checks and provider() == "fake":
            quiet_fake(spec_path.parent / ".phoenix")
        distinct_server_ids()
        started, cpu = time.perf_counter(), time.process_time()
        executor = Executor(Project(spec_path))
        for env in envs:
            executor.up(env)
        result["up_s"], result["up_cpu_ms_per_server"] = time.perf_counter() - started, (time.process_time() - cpu) * 1000 / servers
        print(json.dumps(result), flush=True)  # what a size given up on had measured so far
        executor.project.close()

        spec_path.write_text(spec(envs, "serve v2"))  # a new image: every server is outdated
        profiler = ThreadProfiles() if profile else None
        started, cpu = time.perf_counter(), time.process_time()
        executor = Executor(Project(spec_path))
        if profiler:
            profiler.__enter__()
        planned = [executor.reports.reconcile_plan(env) for env in envs]
        if profiler:
            profiler.__exit__()
        result["plan_s"], result["plan_cpu_s"] = time.perf_counter() - started, time.process_time() - cpu
        result["planned_replacements"] = sum(len(role.replace) for plan in planned for role in plan.roles)
        if profiler:
            result["plan_profile"] = profiler.report()
        print(json.dumps(result), flush=True)

        profiler = ThreadProfiles() if profile else None
        if profiler:
            profiler.__enter__()
        started, cpu = time.perf_counter(), time.process_time()
        replaced = sum(len(executor.rotate(env).retired) for env in envs)
        result["rotate_s"], rotate_cpu = time.perf_counter() - started, time.process_time() - cpu
        if profiler:
            profiler.__exit__()
            result["rotate_profile"] = profiler.report()
        result["replaced"] = replaced
        result["rotate_cpu_ms_per_server"] = rotate_cpu * 1000 / max(replaced, 1)
        executor.project.close()
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return result


def run_child(size: str, src: str | None, profile: bool, fake_checks: bool, timeout: float) -> dict:
    env = dict(os.environ)
    if src:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(src).resolve()), env.get("PYTHONPATH", "")]))
    command = [sys.executable, __file__, "--child", size] + (["--profile"] if profile else []) + (["--fake-checks"] if fake_checks else [])
    try:
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        output = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        partial = json.loads(output.splitlines()[-1]) if output.strip() else {"size": size}
        return {**partial, "error": f"over {timeout:g}s"}
    partial = json.loads(done.stdout.splitlines()[-1]) if done.stdout.strip() else {"size": size}
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "Error" in line.split(":", 1)[0]] or [f"exit {done.returncode}"]
        return {**partial, "error": errors[-1][:120].replace("|", "/")}
    return partial


def row(label: str, r: dict) -> str:
    """A size's line; what was not measured (the size was given up on) says why."""
    missing = r.get("error", "")

    def cell(key: str, digits: int) -> str:
        return f"{r[key]:.{digits}f}" if key in r else missing

    return (
        f"| {label} | {r['size']} | {cell('plan_s', 2)} | {cell('rotate_s', 2)} | {cell('rotate_cpu_ms_per_server', 2)} "
        f"| {cell('up_cpu_ms_per_server', 2)} | {cell('peak_rss_mb', 0)} |"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="*", default=SIZES, help=f"servers in one environment, or {ENVS_OF_50}")
    parser.add_argument("--src", action="append", default=[], metavar="LABEL=PATH", help="code to measure (repeatable)")
    parser.add_argument("--profile", action="store_true", help="print cProfile's top functions (every thread) per size")
    parser.add_argument("--fake-checks", action="store_true", help="keep the in-memory world's per-event serving counts")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds a size may take before it is given up")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.profile, args.fake_checks)))
        return 0
    sources = [tuple(s.split("=", 1)) for s in args.src] or [("this", str(Path(__file__).resolve().parent.parent / "src"))]
    print("| code | size | plan (s) | rotate (s) | rotate CPU per replaced server (ms) | up CPU per server (ms) | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|")
    for size in args.sizes:  # sizes outside, code inside: the versions measured side by side
        for label, src in sources:
            result = run_child(size, src, args.profile, args.fake_checks, args.timeout)
            print(row(label, result), flush=True)
            for key in ("plan_profile", "rotate_profile"):
                if key in result:
                    print(f"\n<details><summary>{label} {size}: {key}</summary>\n\n```\n{result[key]}```\n</details>\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
