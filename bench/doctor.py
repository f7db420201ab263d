"""How long making an image and launching a server take: the floor of how fast a change can
reach users. Runs `phoenix doctor --probe` on the local provider (this machine) and on the
AWS provider against a moto server on 127.0.0.1 (the API's own cost only: moto runs no
instance and copies no disk), `--repeat` times each, and reports medians.

It names no target: it exits 0 when every probe ran, non-zero when one failed.

    python bench/doctor.py --repeat 5 --write bench/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import heading, publish

PHOENIX = str(Path(sys.executable).parent / "phoenix")


def probe(directory: Path, env: dict) -> dict[str, float]:
    result = subprocess.run([PHOENIX, "doctor", "--probe", "--json"], cwd=directory, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"doctor failed in {directory}: {result.stderr.strip()}")
    return {row["capability"]: row["seconds"] for row in json.loads(result.stdout)["capabilities"] if "seconds" in row}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--write", type=Path, help="update this RESULTS.md")
    args = parser.parse_args()

    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    from phoenixctl.example import init_example

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    scratch = Path(tempfile.mkdtemp(prefix="phoenix-bench-doctor-"))
    os.chmod(scratch, 0o711)  # servers that run as an unprivileged uid pass through it
    rows = []
    try:
        for example, extra in (("website", {}), ("website-aws", {"AWS_ENDPOINT_URL": f"http://{host}:{port}"})):
            init_example(scratch / example, example)
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("PHOENIX_")}, **extra}
            runs = [probe(scratch / example, env) for _ in range(args.repeat)]
            for name in runs[0]:
                values = [run[name] for run in runs]
                rows.append((example, name, statistics.median(values), min(values), max(values)))
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    lines = heading("Making an image and launching a server (`bench/doctor.py`)") + [
        "",
        f"`phoenix doctor --probe`, {args.repeat} runs each; seconds.",
        "",
        "| example (provider) | probe | median | min | max |",
        "|---|---|---:|---:|---:|",
        *[f"| {example} | {name} | {median:.3f} | {low:.3f} | {high:.3f} |" for example, name, median, low, high in rows],
        "",
        "Local: the image is the example's own (its files copied, its `py_compile` step run, in a",
        "scratch store); a server is a process on its own loopback address, timed until it listens. AWS here is moto on loopback: the numbers are the",
        "API round trips Phoenix makes, not EC2's (launching an instance and `create_image` on AWS are not",
        "measured here; run `phoenix doctor --probe` against the account to measure them).",
        "",
    ]
    publish(lines, "doctor", args.write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
