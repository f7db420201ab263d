"""What a code change costs in bakes, with the dependencies in a layer of their own.

Two measurements, in one run:

1. An application with about 50 MB of dependencies in a first layer (a virtual environment
   installed with pip from wheels, repacked from the distributions this interpreter has, so
   the run needs no network and is the same every time) and its code in a second. Each
   repeat makes a full bake (`--no-cache`: both layers built) and then a bake after a
   one-line code change (the dependency layer a cache hit). Target: the bake after a code
   change takes at most 1 s. The bakes are timed through the Executor (what `phoenix bake`
   runs, without the command's own start-up, shown apart).
2. The example website (`ci`: three servers): `phoenix deploy ci` after a one-line change of
   its server's code, `--repeat` times. Target: at most 5 % of the deploy's time is the bake
   (its `bake` phase in the operation's history).

    python bench/bake.py --repeat 3 --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from common import exit_code, heading, judge, publish, scratch, spread, verdict

PHOENIX = str(Path(sys.executable).parent / "phoenix")
DEPENDENCIES = ["botocore", "cryptography", "aiohttp"]  # about 50 MB once installed
BAKE_TARGET_S, DEPLOY_SHARE_TARGET = 1.0, 0.05

SPEC = """project: bakebench
images:
  app:
    runtime: python3
    layers:
      - name: deps
        files: [requirements.txt, wheels]
        steps:
          - $PHOENIX_RUNTIME -m venv --without-pip venv
          - $PHOENIX_RUNTIME -m pip --python venv/bin/python install -q --no-index --find-links wheels -r requirements.txt
      - name: code
        files: [app]
        steps:
          - python -m py_compile app/server.py
    start: python app/server.py
roles:
  web: {image: app, port: 8080}
environments:
  ci:
    roles: {web: 1}
"""


def change_a_line(path: Path, number: int) -> None:
    path.write_text(path.read_text() + f"# change {number}\n")


def measure_bakes(directory: Path, repeat: int) -> dict:
    from phoenixctl.engine import Executor, Project
    from phoenixctl.wheels import ship_wheels

    (directory / "app").mkdir(parents=True)
    (directory / "app" / "server.py").write_text("import botocore, cryptography, aiohttp\nprint('ready')\n")
    (directory / "requirements.txt").write_text("\n".join(DEPENDENCIES) + "\n")
    wheels = ship_wheels(directory / "requirements.txt", directory / "wheels")
    (directory / "phoenix.yaml").write_text(SPEC)
    full, changed, deps_sizes, hits = [], [], [], []
    project = Project(directory / "phoenix.yaml")
    try:
        executor = Executor(project)
        for attempt in range(repeat):
            started = time.monotonic()
            [(_, result)] = executor.bake_layers(no_cache=True)
            full.append(time.monotonic() - started)
            deps_sizes.append(result.layers[0].size)
            change_a_line(directory / "app" / "server.py", attempt)
            started = time.monotonic()
            [(_, result)] = executor.bake_layers()
            changed.append(time.monotonic() - started)
            hits.append([layer.cached for layer in result.layers] == [True, False])
    finally:
        project.close()
    change_a_line(directory / "app" / "server.py", repeat)
    started = time.monotonic()
    command = subprocess.run([PHOENIX, "bake", "-f", str(directory / "phoenix.yaml")], capture_output=True, text=True, timeout=600)
    cli = time.monotonic() - started if command.returncode == 0 else None
    return {
        "full": spread(full), "changed": spread(changed), "deps_mb": max(deps_sizes) / 1e6, "hits": all(hits),
        "wheels_mb": sum(w.stat().st_size for w in wheels) / 1e6, "cli": cli, "cli_output": command.stdout.strip(),
    }


def measure_deploys(directory: Path, repeat: int) -> dict:
    from phoenixctl.engine import Executor, Project
    from phoenixctl.example import init_example

    init_example(directory)
    spec = directory / "phoenix.yaml"
    project = Project(spec)
    totals, bakes = [], []
    try:
        executor = Executor(project)
        executor.up("ci")
        for attempt in range(repeat):
            change_a_line(directory / "app" / "server.py", attempt)
            result = executor.deploy("ci")
            bake = sum(row.seconds for row in project.store.phases(result.id) if row.phase == "bake")
            totals.append(result.seconds)
            bakes.append(bake)
        executor.destroy("ci")
    finally:
        project.close()
    return {"total": spread(totals), "bake": spread(bakes), "share": spread([b / t for b, t in zip(bakes, totals)])}


def report(bakes: dict, deploys: dict, repeat: int) -> tuple[list[str], list[bool | None]]:
    bake_met = judge(bakes["changed"], lambda s: s <= BAKE_TARGET_S) if bakes["hits"] else False
    share_met = judge(deploys["share"], lambda share: share <= DEPLOY_SHARE_TARGET)
    cli = f"{bakes['cli']:.2f} s" if bakes["cli"] is not None else "not measured"
    lines = heading("Bakes after a code change, with the dependencies in their own layer (`bench/bake.py`)") + [
        "",
        f"{repeat} repeats; seconds, median (min–max).",
        "",
        f"Dependencies: {', '.join(DEPENDENCIES)} and what they need, {bakes['wheels_mb']:.1f} MB of wheels "
        f"(repacked from this interpreter's installed distributions: no network), {bakes['deps_mb']:.1f} MB once "
        "installed into the image's virtual environment (the first layer); the code (one file) is the second layer.",
        "",
        "| bake | seconds |",
        "|---|---:|",
        f"| full (`--no-cache`: both layers built) | {bakes['full'].format()} |",
        f"| after a one-line code change (deps layer a cache hit: {'yes' if bakes['hits'] else 'NO'}) | {bakes['changed'].format()} |",
        "",
        f"Target: a bake after a code change ≤ {BAKE_TARGET_S:g} s: **{bakes['changed'].format()} s** ({verdict(bake_met)}). "
        f"The whole `phoenix bake` command after a code change, its own start-up included: {cli}.",
        "",
        "The example website, `phoenix deploy ci` (three servers) after a one-line change of `app/server.py`:",
        "",
        "| deploy | bake | bake's share |",
        "|---:|---:|---:|",
        f"| {deploys['total'].format()} | {deploys['bake'].format(3)} | {deploys['share'].format(3, 100)} % |",
        "",
        f"Target: baking ≤ {DEPLOY_SHARE_TARGET:.0%} of a deploy: **{deploys['share'].format(1, 100, show_range=False)} %** ({verdict(share_met)}).",
        "",
    ]
    return lines, [bake_met, share_met]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--write", type=Path, help="update this RESULTS.md")
    args = parser.parse_args()
    with scratch("phoenix-bench-bake-") as directory:
        bakes = measure_bakes(directory / "app", args.repeat)
        deploys = measure_deploys(directory / "website", args.repeat)
    lines, targets = report(bakes, deploys, args.repeat)
    publish(lines, "bake", args.write)
    return exit_code(targets)


if __name__ == "__main__":
    sys.exit(main())
