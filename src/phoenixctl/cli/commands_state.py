"""`phoenix state upgrade` (the store's schema to this Phoenix's revision) and `phoenix state
copy --to URL` (the project's whole state into another store, SQLite <-> PostgreSQL)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import json_option, spec_option


@click.group()
def state() -> None:
    """Where the project's state lives: upgrade its schema, copy it to another store."""


@state.command()
@spec_option
@json_option
def upgrade(spec_file: Path | None, as_json: bool) -> None:
    """Bring the state store's schema to this Phoenix's revision (done on first use too)."""
    from ..engine import Project
    from .console import out

    project = Project(spec_file)
    try:
        before, after = project.store.schema
        where = project.store.location.display
    finally:
        project.close()
    if as_json:
        out.print_json(json.dumps({"location": where, "from": before, "to": after}))
    elif before == after:
        out.print(f"state store {where} is at schema revision {after}: nothing to upgrade", markup=False, highlight=False)
    else:
        out.print(f"state store {where} upgraded from schema revision {before or '(none)'} to {after}", markup=False, highlight=False)


@state.command()
@click.option("--to", "target", required=True, help="The store to copy into: postgresql://user@host/db, or sqlite:////path/state.db")
@spec_option
@json_option
def copy(target: str, spec_file: Path | None, as_json: bool) -> None:
    """Copy the project's whole state into another (empty) store; this one is left as it is.
    Then point the project at it (state.url, or PHOENIX_STATE_URL)."""
    from ..engine import Project
    from ..errors import PhoenixError
    from ..state_copy import copy_state
    from ..state_location import parse_location
    from .console import out

    location = parse_location(target, "--to")
    project = Project(spec_file)
    try:
        if project.spec.provider.name == "local" and location.shared != project.state_location.shared:
            # The local provider's files live in .phoenix/ beside a SQLite store, in the
            # machine's shared folder beside a PostgreSQL one: the record cannot move alone.
            live = [env for env in project.spec.environments if project.store.servers(env) or project.store.load_balancers(env)]
            if live:
                raise PhoenixError(
                    f"state copy: the local provider's servers of {', '.join(live)} live in {project.workdir}, which the copied "
                    "record would not reach: destroy those environments first (phoenix destroy ENV), then copy"
                )
        copied = copy_state(project.store, location, project.spec.project, project.secrets.key)
    finally:
        project.close()
    if as_json:
        out.print_json(json.dumps({"to": location.display, "rows": copied}))
        return
    rows = ", ".join(f"{count} {name}" for name, count in copied.items() if count)
    out.print(f"copied the state of project {project.spec.project} to {location.display}: {rows or 'nothing recorded yet'}", markup=False, highlight=False)


COMMANDS = (state,)
