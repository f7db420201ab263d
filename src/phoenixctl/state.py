"""The state store: images, servers, load balancers, operations and their phase timings.

Through SQLAlchemy Core, on SQLite (WAL) at `.phoenix/state.db` by default, or on a
PostgreSQL database that many runners and projects share (`state_location.py`); every row
is keyed by project (`state_tables.py`). Every change is its own short transaction, written
before and after the step it records, so another command (or a later recovery, from any
runner) always sees what exists. Rows come back as small dataclasses (`ServerRow`, ...), and
the statements run often are built once. The schema is Alembic's to change
(`state_schema.py`); a store that cannot be reached ends the command with one line
(`StateUnavailable`)."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Iterator

from sqlalchemy import Table, bindparam, delete, event, insert, select, update
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from .errors import PhoenixError
from .state_location import StateLocation, StateUnavailable, unavailable
from .state_prepared import Prepared
from .state_schema import ensure_schema
from .state_tables import (  # noqa: F401 - the rows are the store's public names
    ImageRow, LoadBalancerRow, OperationRow, PhaseRow, ReleaseRow, SecretHashRow, ServerRow, WarmupRow, images, load_balancers,
    meta, metadata, operations, phases, releases, secret_hashes, servers, utcnow, warmups,
)

__all__ = [
    "ImageRow", "LoadBalancerRow", "OperationRow", "PhaseRow", "ReleaseRow", "SecretHashRow", "ServerRow", "WarmupRow",
    "StateStore", "StateUnavailable", "metadata", "utcnow",
]


def values(row, project: str) -> dict:
    """A row's fields as column values of `project` (an autoincrement id left to the database)."""
    found = {f.name: getattr(row, f.name) for f in fields(row) if not (f.name == "id" and getattr(row, "id") is None)}
    found["project"] = project
    return found


def selecting(kind, table: Table):
    """SELECT of `table`'s columns in `kind`'s field order, so a result row maps positionally,
    of one project's rows (the `project` parameter)."""
    return select(*(table.c[f.name] for f in fields(kind))).where(table.c.project == bindparam("project"))


def as_rows(kind, result) -> list:
    """Result rows (selected with `selecting(kind, ...)`) as `kind` dataclasses."""
    names = [f.name for f in fields(kind)]
    return [kind(**dict(zip(names, row))) for row in result]


SERVER_COLUMNS = selecting(ServerRow, servers)
SERVER_BY_ID = SERVER_COLUMNS.where(servers.c.id == bindparam("server_id"))


class StateStore:
    """The record of one project. On SQLite: one connection, one transaction at a time
    (SQLite has one writer anyway; threads of one command take turns instead of waiting in
    SQLite's busy loop); other processes' connections read beside it (WAL). On PostgreSQL:
    each transaction takes a connection from a small bounded pool (checked before use)."""

    def __init__(self, location: Path | StateLocation, project: str = "", upgrade: bool = True):
        self.location = location if isinstance(location, StateLocation) else StateLocation(path=location)
        self.project = project  # the key of this project's rows ("" in a SQLite file: the file is the project's)
        self.path = self.location.path
        self._lock = threading.RLock()
        self._connection: Connection | None = None
        self._updates: dict[tuple[str, ...], Prepared] = {}  # update_server's statements, one per set of fields
        self.engine = self.location.engine()
        try:
            if self.location.shared:
                self.schema = ensure_schema(self.location, self.engine)
            else:
                self._open_file()
        except DBAPIError as exc:
            self.close()
            raise unavailable(self.location, exc) from None
        except BaseException:
            self.close()
            raise

    def _open_file(self) -> None:
        path = self.path
        path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        # Phoenix's own state, readable by nobody else (servers included): 0600 files; the
        # folder lists nothing (0711): servers pass through it to their own folders only.
        os.chmod(path.parent, 0o711)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_connection, _record):  # WAL: readers never block the writer
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        # Two first commands at once (two environments deployed side by side) must not both
        # create or migrate the schema, nor switch the file to WAL while the other reads it.
        with os.fdopen(os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_WRONLY, 0o600), "w") as schema_lock:
            fcntl.flock(schema_lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            self._connection = self.engine.connect()
            self.schema = ensure_schema(self.location, self.engine)
        for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if companion.exists():
                os.chmod(companion, 0o600)

    def claim(self, project_dir: Path) -> None:
        """Bind a SQLite store to its project directory, or refuse a store that belongs to
        another one (a project copied with its `.phoenix/`: its paths, processes and sockets
        are the original's, and acting on them from here would reach into that project). A
        shared store is every checkout's: nothing to claim."""
        if self.location.shared:
            return
        here = str(project_dir.resolve())
        with self.transaction() as connection:
            recorded = connection.execute(select(meta.c.value).where(meta.c.project == self.project, meta.c.name == "project_dir")).scalar()
            if recorded is None:
                connection.execute(insert(meta).values(project=self.project, name="project_dir", value=here))
                return
            if recorded != here:
                raise PhoenixError(
                    f"{self.path} belongs to the project at {recorded}, not {here}: a copied .phoenix/ is refused "
                    "(remove it from the copy to start afresh, or run phoenix from the original)"
                )

    def shared_value(self, name: str, make) -> str:
        """A value every runner of the project agrees on (the secrets key on a shared store):
        the one recorded, or `make()` recorded by whichever runner gets there first."""
        query = select(meta.c.value).where(meta.c.project == self.project, meta.c.name == name)
        with self.transaction() as connection:
            found = connection.execute(query).scalar()
        if found is not None:
            return found
        try:
            with self.transaction() as connection:
                connection.execute(insert(meta).values(project=self.project, name=name, value=make()))
        except IntegrityError:
            pass  # another runner made it first: its value is the project's
        with self.transaction() as connection:
            return connection.execute(query).scalar()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One short transaction: committed, or rolled back on error. A store that cannot be
        reached (or fails under the statement) ends the command with one line."""
        try:
            if self._connection is None:  # PostgreSQL: a pooled connection per transaction
                with self.engine.begin() as connection:
                    yield connection
                return
            with self._lock:
                try:
                    yield self._connection
                except BaseException:
                    self._connection.rollback()
                    raise
                self._connection.commit()
        except DBAPIError as exc:
            if isinstance(exc, IntegrityError):
                raise
            raise unavailable(self.location, exc) from None

    def _all(self, kind, query, params: dict | None = None) -> list:
        with self.transaction() as connection:
            return as_rows(kind, connection.execute(query, {"project": self.project, **(params or {})}))

    def _one(self, kind, query, params: dict | None = None):
        found = self._all(kind, query, params)
        return found[0] if found else None

    def _write(self, statement, params=None) -> None:
        with self.transaction() as connection:
            connection.execute(statement, params)

    def _mine(self, table: Table):
        return table.c.project == self.project

    def close(self) -> None:
        with self._lock:
            if self._connection is not None:
                self._connection.close()
        self.engine.dispose()

    def environment_lock(self, workdir: Path, env: str, operation: str, timeout: float = 0.0):
        """The environment's lock: a file lock beside a SQLite store; PostgreSQL's advisory
        lock on a shared one (so it holds across machines)."""
        if self.location.shared:
            from .pg_lock import PostgresLock

            return PostgresLock(self, env, operation, timeout)
        from .lock import EnvironmentLock

        return EnvironmentLock(workdir, env, operation, timeout)

    # --- images -------------------------------------------------------------------------
    def image(self, image_id: str) -> ImageRow | None:
        return self._one(ImageRow, selecting(ImageRow, images).where(images.c.id == image_id))

    def save_image(self, row: ImageRow) -> None:
        with self.transaction() as connection:
            connection.execute(delete(images).where(self._mine(images), images.c.id == row.id))
            connection.execute(insert(images).values(values(row, self.project)))

    def images(self) -> list[ImageRow]:
        return self._all(ImageRow, selecting(ImageRow, images).order_by(images.c.created_at, images.c.id))

    def forget_image(self, image_id: str) -> None:
        self._write(delete(images).where(self._mine(images), images.c.id == image_id))

    # --- servers ------------------------------------------------------------------------
    def add_server(self, row: ServerRow) -> bool:
        """Record a new server; False (nothing written) when its id is taken already."""
        try:
            self._write(insert(servers), values(row, self.project))
        except IntegrityError:
            return False
        return True

    def update_server(self, server_id: str, **changes) -> None:
        """One UPDATE by primary key: the executor journals every state change of a server."""
        if "handle" in changes:
            changes["handle"] = json.dumps(changes["handle"])
        names = tuple(sorted(changes))
        prepared = self._updates.get(names)
        if prepared is None:  # compiled once per set of fields (state_prepared.py: why)
            assignments = {name: bindparam(f"new_{name}", type_=servers.c[name].type) for name in names}
            statement = update(servers).where(servers.c.project == bindparam("of_project"), servers.c.id == bindparam("server_id"))
            prepared = self._updates[names] = Prepared(statement.values(assignments), self.engine.dialect)
        with self.transaction() as connection:
            prepared.run(connection, {"of_project": self.project, "server_id": server_id, **{f"new_{name}": value for name, value in changes.items()}})

    def server(self, server_id: str) -> ServerRow | None:
        return self._one(ServerRow, SERVER_BY_ID, {"server_id": server_id})

    def servers(self, env: str, role: str | None = None, include_destroyed: bool = False) -> list[ServerRow]:
        query = SERVER_COLUMNS.where(servers.c.env == env)
        if role:
            query = query.where(servers.c.role == role)
        if not include_destroyed:
            query = query.where(servers.c.state != "destroyed")
        with self.transaction() as connection:
            found = connection.execute(query.order_by(servers.c.launched_at, servers.c.id), {"project": self.project}).all()
            return [ServerRow(*row) for row in found]

    def secret_hashes(self) -> dict[tuple[str, str], str]:
        return {(row.env, row.name): row.digest for row in self._all(SecretHashRow, selecting(SecretHashRow, secret_hashes))}

    def recorded_secrets(self, env: str) -> dict[str, tuple[str, str | None]]:
        """name -> (keyed hash, source) of `env`'s secrets, as the last deploy resolved them."""
        query = selecting(SecretHashRow, secret_hashes).where(secret_hashes.c.env == env)
        return {row.name: (row.digest, row.source) for row in self._all(SecretHashRow, query)}

    def save_secret_hashes(self, env: str, digests: dict[str, str], sources: dict[str, str] | None = None) -> None:
        sources = sources or {}
        with self.transaction() as connection:
            connection.execute(delete(secret_hashes).where(self._mine(secret_hashes), secret_hashes.c.env == env))
            if digests:
                rows = [values(SecretHashRow(env, name, digest, sources.get(name)), self.project) for name, digest in digests.items()]
                connection.execute(insert(secret_hashes), rows)

    # --- load balancers -----------------------------------------------------------------
    def load_balancers(self, env: str) -> list[LoadBalancerRow]:
        query = selecting(LoadBalancerRow, load_balancers).where(load_balancers.c.env == env).order_by(load_balancers.c.role)
        return self._all(LoadBalancerRow, query)

    def load_balancer(self, env: str, role: str) -> LoadBalancerRow | None:
        query = selecting(LoadBalancerRow, load_balancers).where(load_balancers.c.env == env, load_balancers.c.role == role)
        return self._one(LoadBalancerRow, query)

    def save_load_balancer(self, row: LoadBalancerRow) -> None:
        with self.transaction() as connection:
            connection.execute(delete(load_balancers).where(self._mine(load_balancers), load_balancers.c.env == row.env, load_balancers.c.role == row.role))
            connection.execute(insert(load_balancers).values(values(row, self.project)))

    def delete_load_balancer(self, env: str, role: str) -> None:
        self._write(delete(load_balancers).where(self._mine(load_balancers), load_balancers.c.env == env, load_balancers.c.role == role))

    # --- operations and phases ----------------------------------------------------------
    def start_operation(self, op_id: str, env: str, kind: str) -> None:
        self._write(insert(operations).values(values(OperationRow(op_id, env, kind), self.project)))

    def _operation(self, op_id: str):
        return update(operations).where(self._mine(operations), operations.c.id == op_id)

    def finish_operation(self, op_id: str, status: str, summary: str) -> None:
        self._write(self._operation(op_id).values(status=status, summary=summary, ended_at=utcnow()))

    def record_phases(self, op_id: str, timings: list[dict]) -> None:
        """Phase timings of an operation, in one transaction."""
        if timings:
            self._write(insert(phases), [{"project": self.project, "operation_id": op_id, **timing} for timing in timings])

    def add_release(self, row: ReleaseRow) -> None:
        self._write(insert(releases).values(values(row, self.project)))

    def releases(self, env: str, limit: int = 50) -> list[ReleaseRow]:
        query = selecting(ReleaseRow, releases).where(releases.c.env == env).order_by(releases.c.id.desc()).limit(limit)
        return self._all(ReleaseRow, query)

    def release_of_operation(self, op_id: str) -> ReleaseRow | None:
        """The release an operation recorded (a `phoenix history` id), whichever environment."""
        query = selecting(ReleaseRow, releases).where(releases.c.operation_id == op_id).order_by(releases.c.id.desc()).limit(1)
        return self._one(ReleaseRow, query)

    def set_operation_images(self, op_id: str, image_ids: dict[str, str]) -> None:
        self._write(self._operation(op_id).values(image_ids=json.dumps(image_ids, sort_keys=True)))

    def set_operation_status(self, op_id: str, status: str, note: str = "") -> None:
        summary = operations.c.summary + f"; {note}" if note else operations.c.summary
        self._write(self._operation(op_id).values(status=status, summary=summary))

    def paused_operation(self, env: str) -> OperationRow | None:
        query = selecting(OperationRow, operations).where(operations.c.env == env, operations.c.status == "paused")
        return self._one(OperationRow, query.order_by(operations.c.started_at.desc()).limit(1))

    def record_warmup(self, row: WarmupRow) -> None:
        self._write(insert(warmups).values(values(row, self.project)))

    def warmups(self, op_id: str) -> list[WarmupRow]:
        return self._all(WarmupRow, selecting(WarmupRow, warmups).where(warmups.c.operation_id == op_id).order_by(warmups.c.id))

    def operations(self, env: str, limit: int = 50, status: str | None = None) -> list[OperationRow]:
        """The newest first; `status` only those in it (`running`: unfinished, however old)."""
        query = selecting(OperationRow, operations).where(operations.c.env == env)
        if status is not None:
            query = query.where(operations.c.status == status)
        return self._all(OperationRow, query.order_by(operations.c.started_at.desc()).limit(limit))

    def latest_operation(self, env: str, kind: str | None = None, status: str | None = None) -> OperationRow | None:
        """The newest operation of `env` (of that kind, with that status): one row, however long the history."""
        query = selecting(OperationRow, operations).where(operations.c.env == env)
        if kind is not None:
            query = query.where(operations.c.kind == kind)
        if status is not None:
            query = query.where(operations.c.status == status)
        return self._one(OperationRow, query.order_by(operations.c.started_at.desc()).limit(1))

    def phases(self, op_id: str) -> list[PhaseRow]:
        return self._all(PhaseRow, selecting(PhaseRow, phases).where(phases.c.operation_id == op_id).order_by(phases.c.id))
