"""The store's schema, brought to this Phoenix's revision with Alembic (no alembic.ini: the
revisions ship in `phoenixctl/migrations/versions/` and run from here).

A store from an older Phoenix is upgraded on first use, under a lock (SQLite: a file lock
beside the file; PostgreSQL: a transaction-level advisory lock), in one transaction, so two
first commands at once migrate it once. A store written by a newer Phoenix is refused with
one line before anything is written to it. A new store is made at the head directly.
The version table is `phoenix_schema_version`: a database shared with an application that
keeps its own Alembic history is left alone."""

from __future__ import annotations

import hashlib
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import Column, MetaData, PrimaryKeyConstraint, String, Table, create_engine, event, inspect, text

from .errors import SpecError
from .state_location import StateLocation

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "phoenix_schema_version"
# The revisions shipped, oldest first (tests/test_state_migrations.py checks them against
# `migrations/versions/`): most commands compare the store's with the last one and never
# load Alembic, which costs a command more than the rest of opening the store.
REVISIONS = ("0001", "0002", "0003")
HEAD = REVISIONS[-1]
# One advisory lock key for the schema of a whole database (its tables are every project's).
SCHEMA_LOCK_KEY = int.from_bytes(hashlib.sha256(b"phoenix schema").digest()[:8], "big", signed=True)


class StoreTooNew(SpecError):
    """A store written by a newer Phoenix: refused (exit 2), never written."""


def scripts():
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def _context(connection, upgrade_fn=None):
    from alembic.runtime.migration import MigrationContext

    opts = {"version_table": VERSION_TABLE, "script": scripts()}
    if upgrade_fn is not None:
        opts["fn"] = upgrade_fn
    return MigrationContext.configure(connection, opts=opts)


def revision_of(connection) -> str | None:
    """The store's revision, read as Alembic writes it (None: a store made before migrations, or none)."""
    if not inspect(connection).has_table(VERSION_TABLE):
        return None
    return connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar()


def refuse_unknown(location: StateLocation, current: str | None) -> None:
    if current is not None and current not in REVISIONS:
        raise StoreTooNew(
            f"state store {location.display} is at schema revision {current}, newer than this Phoenix knows "
            f"(up to {HEAD}): upgrade Phoenix; the store was not written"
        )


def ensure_schema(location: StateLocation, engine) -> tuple[str | None, str]:
    """Bring the store to the head (or refuse a newer one): (revision before, revision now).
    A SQLite store's caller holds its file lock (`state.db.lock`) around this."""
    with engine.connect() as connection:  # most commands: one read, no lock
        current = revision_of(connection)
    refuse_unknown(location, current)
    if current == HEAD:
        return current, current
    with _migrating(location, engine) as connection:
        current = revision_of(connection)  # another command may have migrated it meanwhile
        refuse_unknown(location, current)
        target = HEAD
        if current == target:
            return current, current
        if current is None and not inspect(connection).has_table("servers"):
            from .state_tables import metadata

            metadata.create_all(connection)  # a new store: made at the head, stamped as Alembic does
            version = _version_table()
            version.create(connection)
            connection.execute(version.insert().values(version_num=target))
        else:
            from alembic.operations import Operations

            context = _context(connection, lambda rev, ctx: scripts()._upgrade_revs(target, rev))
            with Operations.context(context):
                context.run_migrations()
        return current, target


def _version_table():
    """Alembic's version table, as Alembic makes it (a new store is stamped without loading it)."""
    return Table(VERSION_TABLE, MetaData(), Column("version_num", String(32), nullable=False), PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"))


@contextmanager
def _migrating(location: StateLocation, engine) -> Iterator[object]:
    """One transaction for the whole migration, DDL included: PostgreSQL's are transactional;
    SQLite's are when the driver's own transaction handling is set aside (BEGIN IMMEDIATE)."""
    if location.shared:
        with engine.begin() as connection:
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK_KEY})")
            yield connection
        return
    migrator = create_engine(f"sqlite:///{location.path}", connect_args={"timeout": 30})

    @event.listens_for(migrator, "connect")
    def _manual(dbapi_connection, _record):
        dbapi_connection.isolation_level = None

    @event.listens_for(migrator, "begin")
    def _begin(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    try:
        with migrator.begin() as connection:
            yield connection
    finally:
        migrator.dispose()
