"""The pages as HTML: jinja2 templates (in `templates/`) with autoescape on for every one,
so whatever comes from the store or the servers is escaped; the charts' SVG (escaped where
it is drawn, `charts.py`) is the only markup passed through as safe.

`live=True` renders a page of the dashboard (links between pages, the script that follows
an operation as it runs); `live=False` the self-contained report (no script, no link out)."""

from __future__ import annotations

from functools import lru_cache

from . import charts


@lru_cache(maxsize=1)
def _templates():
    from jinja2 import Environment, PackageLoader, StrictUndefined
    from markupsafe import Markup

    env = Environment(
        loader=PackageLoader("phoenixctl.web", "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["duration"] = charts.duration
    env.globals["svg"] = lambda drawn: Markup(drawn)  # the charts escape their own text
    env.globals["charts"] = charts
    return env


def render_overview(overview: dict, live: bool = True, version: str = "") -> str:
    return _templates().get_template("overview.html").render(
        page=overview, live=live, version=version, events="/events", title=f"{overview['project']}: environments",
    )


def render_environment(page: dict, project: str, live: bool = True, version: str = "") -> str:
    from urllib.parse import quote

    return _templates().get_template("environment.html").render(
        page=page, live=live, project=project, version=version, events=f"/events?env={quote(page['environment'])}",
        title=f"{project}: {page['environment']}",
    )
