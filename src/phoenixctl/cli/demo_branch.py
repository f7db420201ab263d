"""`phoenix demo --branch-by-abstraction`: how a team adopts phoenix servers beside the ones it
has. The example's `ci` (phoenix) and `ci-legacy` (in-place, updated by its deploy script)
come up side by side; one build is then deployed to both at once under steady load through
all six balancers, and the two are compared: each one's time to live, phase by phase."""

from __future__ import annotations

from pathlib import Path

from ..errors import PhoenixError

ENVS = ("ci", "ci-legacy")


def run(spec_file: Path, rate: float) -> int:
    """Returns the failed requests; raises when a deploy failed."""
    from rich.text import Text

    from ..engine.parallel import run_parallel
    from ..load import LoadGenerator
    from .commands_env import print_many
    from .common import executor_for
    from .console import out
    from .render import phase_table

    with executor_for(spec_file, "up ci ci-legacy") as executor:
        executor.bake()  # once, before the two side by side (two bakes of one image would race)
        for env, result in zip(ENVS, run_parallel([lambda e=e: executor.up(e) for e in ENVS])):
            out.print(f"up {env}: {result.summary()} in {result.seconds:.1f}s")
        urls = []
        for env in ENVS:
            lbs = {lb.role: lb.address for lb in executor.reports.status(env).load_balancers}
            urls += [f"http://{lbs['frontend']}/", f"http://{lbs['frontend']}/page/1", f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]
    version = spec_file.parent / "VERSION"
    version.write_text("2.0.0\n")
    out.print(f"build 2.0.0 (VERSION changed); load: {rate:g} requests/s through the six balancers of {' and '.join(ENVS)}")
    with LoadGenerator(urls, concurrency=8, rate=rate, max_seconds=600) as load:
        load.wait_for_requests(int(rate))
        with executor_for(spec_file, "deploy ci ci-legacy") as executor:
            outcomes = executor.deploy_many(list(ENVS))
            reports = {env: executor.reports.history(env, limit=1) for env in ENVS}
            compared = executor.compare(*ENVS)
        load.wait_for_requests(load.stats.sent + int(rate / 2))
    stats = load.stats
    try:
        print_many(outcomes, False)
    finally:
        for env in ENVS:
            out.print(phase_table(reports[env], f"{env}: deploy phases (per phase: the slowest server, ×servers)"))
        build = compared["builds"][0]
        ttl = build["time_to_live_s"]
        shown = ", ".join(f"{env} {ttl[env]:.2f}s" if ttl.get(env) is not None else f"{env} -" for env in ENVS)
        ratio = f"; ci/ci-legacy {build['ratio']:.2f}" if build["ratio"] is not None else ""
        out.print(f"time to live of build 2.0.0 (bake to the last server serving it): {shown}{ratio}")
        verdict = ("no request failed", "green") if not stats.failed else (f"{stats.failed} failed {dict(stats.errors)}", "red")
        out.print(Text.assemble(f"requests: {stats.sent} sent, {stats.ok} ok, {stats.failed} failed — ", verdict))
    return stats.failed


def tear_down(spec_file: Path) -> None:
    from .common import executor_for

    with executor_for(spec_file, "destroy", quiet=True) as executor:
        for env in ENVS:
            try:
                executor.destroy(env)
            except PhoenixError:
                pass  # the other one still goes
