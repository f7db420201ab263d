"""`phoenix state copy --to URL`: a project's whole state (images, servers, balancers,
operations, phases, warm-ups, releases, secret hashes) from one store to another, SQLite to
PostgreSQL or back, in one transaction on the target; a target that already holds anything
of the project is refused, never overwritten.

Rows are keyed anew for the target (a SQLite file's own empty key, a shared store's project
name); ids the database draws (phases, warm-ups, releases) are drawn again, in the same
order. The secrets key goes along (into the shared store, or beside the SQLite file), so
fingerprints, and so the plan, are the same from either store."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import func, insert, select

from .errors import PhoenixError
from .state import StateStore
from .state_location import StateLocation
from .state_tables import PROJECT_TABLES, meta

# Records of the store's own place, not of the project: the target makes its own.
LOCAL_META = ("project_dir", "secret_key")


def copy_state(source: StateStore, target_location: StateLocation, project: str, secret_key: bytes) -> dict[str, int]:
    """Copy `source`'s rows into the store at `target_location`: rows copied per table."""
    if target_location.display == source.location.display:
        raise PhoenixError(f"state copy: {target_location.display} is where the state lives already")
    target = StateStore(target_location, project if target_location.shared else "")
    try:
        with target.transaction() as connection:
            for table in PROJECT_TABLES:
                held = connection.execute(select(func.count()).select_from(table).where(table.c.project == target.project)).scalar()
                if held:
                    raise PhoenixError(
                        f"state copy: {target_location.display} already holds {held} {table.name} row(s) of project "
                        f"{project}: refusing to overwrite them (copy into an empty store)"
                    )
        copied = {}
        with source.transaction() as reading, target.transaction() as writing:
            for table in PROJECT_TABLES:
                drawn = "id" in table.c and table.c.id.autoincrement is True
                order = [table.c.id] if "id" in table.c else list(table.primary_key.columns)
                rows = [dict(row) for row in reading.execute(select(table).where(table.c.project == source.project).order_by(*order)).mappings()]
                if table is meta:
                    rows = [row for row in rows if row["name"] not in LOCAL_META]
                for row in rows:
                    row["project"] = target.project
                    if drawn:
                        del row["id"]
                if rows:
                    writing.execute(insert(table), rows)
                copied[table.name] = len(rows)
            if target_location.shared:
                writing.execute(insert(meta).values(project=target.project, name="secret_key", value=secret_key.hex()))
        if not target_location.shared:
            _write_key_beside(target_location.path, secret_key)
        return copied
    finally:
        target.close()


def _write_key_beside(path: Path, key: bytes) -> None:
    """The key a SQLite store's project reads (`.phoenix/secret.key`), unless one is there."""
    key_path = path.parent / "secret.key"
    if key_path.exists():
        if key_path.read_bytes() != key:
            raise PhoenixError(f"state copy: {key_path} holds another secrets key: the rows were copied, but fingerprints will differ")
        return
    descriptor = os.open(key_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    with os.fdopen(descriptor, "wb") as out:
        out.write(key)
