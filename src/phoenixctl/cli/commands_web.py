"""The commands that show the fleet in a browser: `dashboard` (a live, read-only web
application) and `report --html` (one environment's page as a self-contained file).

Only click loads at import; aiohttp, jinja2 and the engine load in the commands' bodies
(`phoenix --help` loads none of them, tests/test_imports.py)."""

from __future__ import annotations

import os
import tempfile
from datetime import timedelta
from pathlib import Path

import click

from .common import env_argument, executor_for, spec_option


@click.command()
@click.option("--listen", default="127.0.0.1:8765", show_default=True, help="HOST:PORT to listen on (beyond loopback: needs a token)")
@click.option("--token", default=None, help="Every request must present it (Authorization: Bearer, or ?token= in a browser)")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None, help="The token, from the file's first line")
@click.option(
    "--refresh", default="10s", show_default=True,
    help="Open pages are drawn again at least this often (a dead server, ages); changes in the store show within a second",
)
@spec_option
def dashboard(listen: str, token: str | None, token_file: Path | None, refresh: str, spec_file: Path | None) -> None:
    """A live, read-only web dashboard of every environment: servers, ages against max_age,
    drift, releases, time to live and each operation's phases per server (JSON under /api/)."""
    from ..web.access import is_loopback, parse_listen, read_token

    try:
        host, port = parse_listen(listen)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--listen") from None
    every = parse_period(refresh, "--refresh")
    try:
        token = read_token(token, token_file)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if token is None and not is_loopback(host):
        raise click.UsageError(
            f"--listen {listen} is beyond loopback: give --token or --token-file (every request must then present it)"
        )
    import asyncio

    from ..web.app import DashboardApp, serve
    from ..web.views import Dashboard
    from .console import err

    def ready(url: str) -> None:
        shown = url + ("?token=…" if token else "")
        print(f"phoenix dashboard: serving {url} (read-only; Ctrl-C stops it)", flush=True)
        err.print(f"open {shown} in a browser", markup=False)

    with executor_for(spec_file, "dashboard", quiet=True) as executor:
        dashboard_app = DashboardApp(Dashboard(executor, refresh=every.total_seconds()), token)
        asyncio.run(serve(dashboard_app.application(), host, port, ready))


def parse_period(value: str | None, option: str) -> timedelta | None:
    from ..spec.values import parse_duration

    if value is None:
        return None
    try:
        return timedelta(seconds=parse_duration(value))
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint=option) from None


@click.command()
@env_argument
@click.option("--html", "html_file", type=click.Path(path_type=Path, dir_okay=False), required=True, help="The file to write")
@click.option("--since", default=None, help="Only the operations and releases of this period (e.g. 7d, 12h)")
@spec_option
def report(env: str, html_file: Path, since: str | None, spec_file: Path | None) -> None:
    """The environment's dashboard page as one self-contained HTML file (inline SVG charts and
    CSS, no script, nothing fetched): for CI artifacts."""
    period = parse_period(since, "--since")
    folder = html_file.parent if str(html_file.parent) else Path(".")
    if not folder.is_dir():
        raise click.BadParameter(f"{folder} is not a folder", param_hint="--html")
    from ..web.pages import render_environment
    from ..web.views import Dashboard
    from .console import err

    with executor_for(spec_file, "report", quiet=True, env=env) as executor:
        page = Dashboard(executor).environment(env, period)
        text = render_environment(page, executor.project.spec.project, live=False)
    # written aside, then renamed: never a half-written report under the name asked for
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{html_file.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(temporary, 0o644)
        os.replace(temporary, html_file)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    err.print(f"{env}: report written to {html_file} ({len(text.encode())} bytes)", markup=False)


COMMANDS = (dashboard, report)
