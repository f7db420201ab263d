"""`phoenix logs ENV`: the environment's servers' output as the project's aggregator keeps it
(across server generations: destroyed servers' lines too), in time order, each line with
its server, role and release; filtered, followed, or as JSON lines.

Server output is printed as it is, never interpreted (no markup, no highlighting): plain
writes to stdout. Only click is loaded at import (see `cli/__init__.py`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .common import env_argument, spec_option


@click.command()
@env_argument
@click.option("--role", help="Only this role's servers")
@click.option("--server", "server_id", help="Only this server (destroyed ones too)")
@click.option("--release", help="Only servers of this release (an operation id, as `phoenix history` lists)")
@click.option("--since", help="Only lines of the last DURATION (10m, 2h, 7d)")
@click.option("--grep", "text", help="Only lines holding TEXT")
@click.option("--follow", "-F", is_flag=True, help="Keep printing lines as they arrive (new servers' too) until interrupted")
@spec_option
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line (time, env, role, server, release, msg)")
def logs(
    env: str, role: str | None, server_id: str | None, release: str | None, since: str | None, text: str | None,
    follow: bool, spec_file: Path | None, as_json: bool,
) -> None:
    """Every server's output in ENV, from the project's log aggregator."""
    from datetime import datetime, timedelta, timezone

    from ..drivers.local.records import Filters, Records
    from ..errors import PhoenixError
    from ..spec import load_spec, parse_duration

    loaded = load_spec(spec_file)
    loaded.environment(env)
    spec = loaded.spec
    cutoff = None
    if since is not None:
        try:
            cutoff = datetime.now(timezone.utc) - timedelta(seconds=parse_duration(since))
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--since") from None
    ship_to = spec.logs(env).ship_to
    if ship_to:
        raise PhoenixError(f"the logs of {env} are shipped to {ship_to} (logs.ship_to): read them there")
    records = Records(loaded.project_dir / ".phoenix" / "logs")
    records.prune({name: spec.logs(name).keep for name in spec.environments})  # retention, per environment
    filters = Filters(role=role, server=server_id, release=release, since=cutoff, grep=text)
    write = (lambda r: json.dumps(r.as_json())) if as_json else (lambda r: r.line())
    try:
        for record in records.read(env, filters):
            sys.stdout.write(write(record) + "\n")
        sys.stdout.flush()
        if follow:
            for record in records.follow(env, filters):
                sys.stdout.write(write(record) + "\n")
                sys.stdout.flush()
    except BrokenPipeError:  # `phoenix logs ... | head`
        sys.stderr.close()


COMMANDS = (logs,)
