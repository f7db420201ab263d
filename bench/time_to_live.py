"""Time to live benchmark (issue 17): a phoenix environment beside an in-place one.

Two environments of the example with the same sizes (3 frontend, 2 backend, 1 edit) and the
same rollout limits (production's: max_surge 100%, max_unavailable 0): `production`
(phoenix: new servers from the image, swapped in, the old ones drained and destroyed) and
`production-legacy` (mode: in-place: each server updated where it stands by the built-in
update, or with --script by the example's deploy.sh). Under steady load through all six
balancers, from a second process, five successive builds (a new VERSION each) are each
baked once and deployed to both side by side (`phoenix deploy production
production-legacy`). For each build, the time to live in each environment: from the end of
its bake to the moment the environment's last server began serving it (what `phoenix
compare` reads from the releases). Reported: the median time to live in each mode, the
median ratio phoenix / in-place, and phase by phase where the time goes in each mode (per
phase, the median over builds of its wall-clock span in the deploy).

Targets (issue 17): the median ratio phoenix / in-place is at most 1.0 (the seed team
measured 2.5), with zero failed requests in both. The exit code is 0 only when both were met.

    .venv/bin/python bench/time_to_live.py --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import yaml

from phoenixctl.boot.secrets import create_tls_pair
from phoenixctl.engine import PHASES, Executor, Project
from phoenixctl.example import init_example
from phoenixctl.load import LoadProcess

sys.path.insert(0, str(Path(__file__).parent))
from common import exit_code, failed_requests_target, heading, judge, publish, scratch, spread, verdict  # noqa: E402

PHOENIX, IN_PLACE = "production", "production-legacy"
TARGET_RATIO = 1.0


def make_project(directory: Path, script: bool) -> Path:
    """The example with an in-place twin of production: same roles, counts, rollout, layers."""
    init_example(directory)
    spec_path = directory / "phoenix.yaml"
    spec = yaml.safe_load(spec_path.read_text())
    production = spec["environments"]["production"]
    legacy = {**production, "mode": "in-place", "secrets": {
        "tls_cert": {"file": f"secrets/{IN_PLACE}/tls.crt"}, "tls_key": {"file": f"secrets/{IN_PLACE}/tls.key"},
    }}
    legacy.pop("watch", None)
    if script:
        legacy["in_place"] = {"command": "sh deploy.sh"}
    spec["environments"] = {PHOENIX: production, IN_PLACE: legacy}
    spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
    create_tls_pair(directory / "secrets" / IN_PLACE, f"{IN_PLACE}.website.test")
    return spec_path


def load_urls(executor: Executor) -> list[str]:
    urls = []
    for env in (PHOENIX, IN_PLACE):
        lbs = {lb["role"]: lb["address"] for lb in executor.status(env)["load_balancers"]}
        urls += [f"http://{lbs['frontend']}/page/{n}" for n in range(10)]
        urls += [f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]
    return urls


def one_build(executor: Executor, spec_path: Path, version: str) -> dict:
    """Bake the build once (timed), then deploy it to both side by side."""
    (spec_path.parent / "VERSION").write_text(version + "\n")
    started = time.monotonic()
    executor.bake()
    baked = time.monotonic() - started
    outcomes = dict(executor.deploy_many([PHOENIX, IN_PLACE]))
    failed = {env: str(o) for env, o in outcomes.items() if isinstance(o, BaseException)}
    if failed:
        raise SystemExit(f"build {version}: deploy failed: {failed}")
    return {"version": version, "bake": baked, "ops": {env: outcomes[env].id for env in outcomes}}


def phase_spans(executor: Executor, env: str, op_ids: set[str]) -> dict[str, dict[str, list[float]]]:
    """Per phase, over the given deploys: its wall-clock span, and its time summed over servers."""
    spans: dict[str, dict[str, list[float]]] = {}
    for op in executor.reports.history(env, limit=50):
        if op.id in op_ids:
            spans.setdefault("deploy (whole operation)", {"span": [], "sum": []})["span"].append(op.seconds)
            for name, timing in op.phases.items():
                entry = spans.setdefault(name, {"span": [], "sum": []})
                entry["span"].append(timing.span_s)
                entry["sum"].append(timing.total_s)
    return spans


def report(builds: list[dict], compared: dict, spans: dict, stats, rate: float, script: bool) -> tuple[list[str], list[bool | None]]:
    rows = [b for b in compared["builds"] if b["time_to_live_s"].get(PHOENIX) is not None or b["time_to_live_s"].get(IN_PLACE) is not None]
    rows = rows[: len(builds)]
    phoenix_ttl = spread(b["time_to_live_s"].get(PHOENIX) for b in rows)
    in_place_ttl = spread(b["time_to_live_s"].get(IN_PLACE) for b in rows)
    ratios = spread(b["ratio"] for b in rows)
    how = "the example's deploy.sh (`in_place.command`)" if script else "the built-in update (changed files copied, the image's steps run again, boot configuration, restart)"
    title = "Time to live: phoenix against in-place" + (", the team's deploy script" if script else "")
    lines = heading(f"{title} (`bench/time_to_live.py`)") + [
        f"Two environments, 3 frontend + 2 backend + 1 edit each, production's rollout limits (max_surge 100%, max_unavailable 0): "
        f"`{PHOENIX}` (phoenix) and `{IN_PLACE}` (in-place, {how}). {len(builds)} successive builds, each baked once and deployed to both "
        f"side by side; load {rate:g} requests/s over 16 keep-alive connections through all six balancers, from a second process. "
        "Time to live: from the end of the build's bake to its environment's last server serving it. Median (min–max) over builds.",
        "",
        "| build | bake (s, shared) | phoenix time to live (s) | in-place time to live (s) | ratio phoenix / in-place |",
        "|---|---|---|---|---|",
    ]
    for build, row in zip(builds, reversed(rows)):
        ttl = row["time_to_live_s"]
        lines.append(
            f"| {build['version']} | {build['bake']:.2f} | {ttl.get(PHOENIX) or 0:.2f} | {ttl.get(IN_PLACE) or 0:.2f} | "
            f"{row['ratio'] if row['ratio'] is not None else '-'} |"
        )
    lines += [
        f"| **median** | {spread(b['bake'] for b in builds).format()} | {phoenix_ttl.format()} | {in_place_ttl.format()} | **{ratios.format()}** |",
        "",
        "Where the time goes, phase by phase: per phase, the median over builds of its wall-clock span in the deploy "
        "(first start to last end; phases of servers side by side overlap) and of its time summed over the servers (s):",
        "",
        "| phase | phoenix: span | phoenix: sum over servers | in-place: span | in-place: sum over servers |",
        "|---|---|---|---|---|",
    ]
    names = ["deploy (whole operation)"] + [p for p in PHASES if p in spans[PHOENIX] or p in spans[IN_PLACE]]
    for name in names:
        cells = [
            spread(spans[env][name][kind]).format() if name in spans[env] and (kind == "span" or name in PHASES) else "-"
            for env in (PHOENIX, IN_PLACE) for kind in ("span", "sum")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    no_failures = failed_requests_target(stats.sent, stats.failed)
    fast_enough = judge(ratios, lambda r: r <= TARGET_RATIO)
    lines += [
        "",
        f"Requests: {stats.sent} sent, {stats.failed} failed {dict(stats.errors) or ''}.  ",
        f"Targets: median time to live phoenix / in-place at most {TARGET_RATIO:g} (the seed team's was 2.5) -> **{ratios.format(show_range=False)}** "
        f"({verdict(fast_enough)}); zero failed requests in both -> **{stats.failed}** ({verdict(no_failures)}).",
        "",
    ]
    return lines, [fast_enough, no_failures]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="successive builds (the median is reported)")
    parser.add_argument("--rate", type=float, default=150.0, help="requests per second through the six balancers")
    parser.add_argument("--script", action="store_true", help="update the in-place servers with the example's deploy.sh")
    parser.add_argument("--write", type=Path, help="update this RESULTS.md section")
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    with scratch("phoenix-bench-ttl-") as tmp:
        spec_path = make_project(Path(tmp), args.script)
        project = Project(spec_path)
        executor = Executor(project, lock_timeout=60)
        try:
            for env in (PHOENIX, IN_PLACE):
                executor.up(env)
            with LoadProcess(load_urls(executor), concurrency=16, rate=args.rate, max_seconds=300 * args.repeat) as load:
                load.wait_for_requests(int(args.rate))
                builds = []
                for number in range(args.repeat):
                    builds.append(one_build(executor, spec_path, f"2.0.{number}"))
                    print(f"build {builds[-1]['version']}: bake {builds[-1]['bake']:.2f}s, deployed to both", flush=True)
                load.wait_for_requests(load.answered + int(args.rate / 2))
            stats = load.stats
            compared = executor.compare(PHOENIX, IN_PLACE)
            spans = {env: phase_spans(executor, env, {b["ops"][env] for b in builds}) for env in (PHOENIX, IN_PLACE)}
        finally:
            for env in (PHOENIX, IN_PLACE):
                executor.destroy(env)
            project.close()
    lines, targets = report(builds, compared, spans, stats, args.rate, args.script)
    publish(lines, "time_to_live_script" if args.script else "time_to_live", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
