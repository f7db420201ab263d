"""The state store: images, servers, load balancers, operations and their phase timings.

SQLite (WAL) through SQLAlchemy Core at `.phoenix/state.db`; every change is its own short
transaction, written before and after the step it records, so another command (or a later
recovery) always sees what exists. Rows come back as small dataclasses (`ServerRow`, ...):
the tables are plain `Table`s (what Alembic will migrate), no ORM, so a row costs a tuple
and the statements run often are built once. Statements are SQLAlchemy's, not SQLite's: the
same code is meant to run on PostgreSQL (where one connection per thread from the pool
would replace the one shared connection SQLite wants)."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlalchemy import (
    Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, bindparam, create_engine, delete,
    event, insert, inspect, select, update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from .errors import PhoenixError


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


@dataclass
class ImageRow:
    id: str
    name: str
    provider: str
    location: str  # provider-specific: a directory, an AMI id
    created_at: datetime = field(default_factory=utcnow)
    bake_seconds: float = 0.0


@dataclass
class ServerRow:
    id: str
    env: str
    role: str
    image_id: str
    fingerprint: str
    address: str
    port: int
    # launching -> booting -> checking -> ready -> in_service -> draining -> stopping -> destroyed
    # (or failed -> destroyed)
    state: str = "launching"
    in_service: bool = False
    launched_at: datetime = field(default_factory=utcnow)
    retired_at: datetime | None = None
    standby_until: datetime | None = None  # blue-green: kept until then
    operation_id: str | None = None
    handle: str = "{}"  # provider data: pid, root, log...
    serving_since: datetime | None = None  # last put into service (launch or in-place update)

    @property
    def handle_data(self) -> dict:
        """The provider's data, parsed once per row (planning 10,000 servers asked 30,000
        times); a copy each time, since a driver may change what it is given."""
        parsed = self.__dict__.get("_parsed_handle")
        if parsed is None or parsed[0] is not self.handle:
            parsed = self.__dict__["_parsed_handle"] = (self.handle, json.loads(self.handle))
        return dict(parsed[1])


@dataclass
class LoadBalancerRow:
    env: str
    role: str
    address: str
    port: int
    handle: str = "{}"
    created_at: datetime = field(default_factory=utcnow)

    @property
    def handle_data(self) -> dict:
        return json.loads(self.handle)


@dataclass
class OperationRow:
    id: str
    env: str
    kind: str
    status: str = "running"  # running, succeeded, failed
    started_at: datetime = field(default_factory=utcnow)
    ended_at: datetime | None = None
    summary: str = ""
    image_ids: str | None = None  # json: the build a deploy carried (failed ones too)


@dataclass(kw_only=True)
class PhaseRow:
    id: int | None = None
    operation_id: str
    phase: str  # bake, launch, boot, health, swap, drain, destroy
    server_id: str | None = None
    started_at: datetime = field(default_factory=utcnow)
    seconds: float
    ok: bool = True


@dataclass(kw_only=True)
class WarmupRow:
    """What warming one new server did: pages, failures, bytes, time."""

    id: int | None = None
    operation_id: str
    server_id: str
    planned: int
    fetched: int
    succeeded: int
    bytes: int
    seconds: float
    passed: bool
    summary: str = ""


@dataclass(kw_only=True)
class ReleaseRow:
    """What an environment served from when: the spec (references only, no secret), the
    image ids and each role's fingerprint. A rollback redeploys the previous one."""

    id: int | None = None
    env: str
    operation_id: str
    created_at: datetime = field(default_factory=utcnow)
    kind: str  # up, deploy, rotate, promote, rollback
    reason: str = ""
    spec_text: str
    image_ids: str  # json: image name -> id
    fingerprints: str  # json: role -> fingerprint
    baked_at: datetime | None = None  # when its build's last image was baked
    live_at: datetime | None = None  # when the environment's last server began serving it


@dataclass
class SecretHashRow:
    """A keyed hash (HMAC) of a secret value: never the value. Lets planning refuse a value
    that another environment already uses, and stands in for a command secret's value in
    read-only commands, which never run it (while the command is the one recorded)."""

    env: str
    name: str
    digest: str
    source: str | None = None  # what it was read from (a reference)


metadata = MetaData()
images = Table(
    "images", metadata,
    Column("id", String, primary_key=True), Column("name", String, nullable=False), Column("provider", String, nullable=False),
    Column("location", Text, nullable=False), Column("created_at", DateTime, nullable=False), Column("bake_seconds", Float, nullable=False),
)
servers = Table(
    "servers", metadata,
    Column("id", String, primary_key=True), Column("env", String, nullable=False, index=True), Column("role", String, nullable=False),
    Column("image_id", String, nullable=False), Column("fingerprint", String, nullable=False), Column("address", String, nullable=False),
    Column("port", Integer, nullable=False), Column("state", String, nullable=False), Column("in_service", Boolean, nullable=False),
    Column("launched_at", DateTime, nullable=False), Column("retired_at", DateTime), Column("standby_until", DateTime),
    Column("operation_id", String), Column("handle", Text, nullable=False), Column("serving_since", DateTime),
    Index("ix_servers_env_role_state", "env", "role", "state"),  # a role's servers, the destroyed left out
)
load_balancers = Table(
    "load_balancers", metadata,
    Column("env", String, primary_key=True), Column("role", String, primary_key=True), Column("address", String, nullable=False),
    Column("port", Integer, nullable=False), Column("handle", Text, nullable=False), Column("created_at", DateTime, nullable=False),
)
operations = Table(
    "operations", metadata,
    Column("id", String, primary_key=True), Column("env", String, nullable=False, index=True), Column("kind", String, nullable=False),
    Column("status", String, nullable=False), Column("started_at", DateTime, nullable=False), Column("ended_at", DateTime),
    Column("summary", Text, nullable=False), Column("image_ids", Text),
)


def of_operation(name: str, *columns: Column) -> Table:
    """A table of measurements, each row of one operation."""
    return Table(
        name, metadata, Column("id", Integer, primary_key=True, autoincrement=True),
        Column("operation_id", String, ForeignKey("operations.id"), nullable=False, index=True), *columns,
    )


phases = of_operation(
    "phases", Column("phase", String, nullable=False), Column("server_id", String), Column("started_at", DateTime, nullable=False),
    Column("seconds", Float, nullable=False), Column("ok", Boolean, nullable=False),
)
warmups = of_operation(
    "warmups", Column("server_id", String, nullable=False), Column("planned", Integer, nullable=False), Column("fetched", Integer, nullable=False), Column("succeeded", Integer, nullable=False),
    Column("bytes", Integer, nullable=False), Column("seconds", Float, nullable=False), Column("passed", Boolean, nullable=False),
    Column("summary", Text, nullable=False),
)
releases = Table(
    "releases", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True), Column("env", String, nullable=False, index=True),
    Column("operation_id", String, nullable=False), Column("created_at", DateTime, nullable=False), Column("kind", String, nullable=False),
    Column("reason", Text, nullable=False), Column("spec_text", Text, nullable=False), Column("image_ids", Text, nullable=False),
    Column("fingerprints", Text, nullable=False), Column("baked_at", DateTime), Column("live_at", DateTime),
)
secret_hashes = Table(
    "secret_hashes", metadata,
    Column("env", String, primary_key=True), Column("name", String, primary_key=True), Column("digest", String, nullable=False),
    Column("source", Text),
)
meta = Table("meta", metadata, Column("name", String, primary_key=True), Column("value", Text, nullable=False))


def values(row) -> dict:
    """A row's fields as column values (an autoincrement id left to the database)."""
    return {f.name: getattr(row, f.name) for f in fields(row) if not (f.name == "id" and getattr(row, "id") is None)}


def selecting(kind, table: Table):
    """SELECT of `table`'s columns in `kind`'s field order, so a result row maps positionally."""
    return select(*(table.c[f.name] for f in fields(kind)))


def as_rows(kind, result) -> list:
    """Result rows (selected with `selecting(kind, ...)`) as `kind` dataclasses."""
    names = [f.name for f in fields(kind)]
    return [kind(**dict(zip(names, row))) for row in result]


SERVER_COLUMNS = selecting(ServerRow, servers)
SERVER_BY_ID = SERVER_COLUMNS.where(servers.c.id == bindparam("server_id"))


class StateStore:
    """The record of one project. One connection, one transaction at a time (SQLite has one
    writer anyway; threads of one command take turns instead of waiting in SQLite's busy
    loop); other processes' connections read beside it (WAL)."""

    def __init__(self, path: Path):
        path.parent.mkdir(mode=0o711, parents=True, exist_ok=True)
        self.path = path
        # Phoenix's own state, readable by nobody else (servers included): 0600 files; the
        # folder lists nothing (0711): servers pass through it to their own folders only.
        os.chmod(path.parent, 0o711)
        if not path.exists():
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        self.engine = create_engine(f"sqlite:///{path}", connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(self.engine, "connect")
        def _pragmas(dbapi_connection, _record):  # WAL: readers never block the writer
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        # Two first commands at once (two environments deployed side by side) must not both
        # create the schema, nor switch the file to WAL while the other reads it.
        with os.fdopen(os.open(path.with_name(path.name + ".lock"), os.O_CREAT | os.O_WRONLY, 0o600), "w") as schema_lock:
            fcntl.flock(schema_lock, fcntl.LOCK_EX)  # released when the file closes, or the process dies
            metadata.create_all(self.engine)
            self._add_missing_columns()
        self._lock = threading.RLock()
        self._connection: Connection = self.engine.connect()
        self._updates: dict[tuple[str, ...], object] = {}  # update_server's statements, one per set of fields
        for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if companion.exists():
                os.chmod(companion, 0o600)

    def claim(self, project_dir: Path) -> None:
        """Bind the store to its project directory, or refuse a store that belongs to another
        one (a project copied with its `.phoenix/`: its paths, processes and sockets are the
        original's, and acting on them from here would reach into that project)."""
        here = str(project_dir.resolve())
        with self.transaction() as connection:
            recorded = connection.execute(select(meta.c.value).where(meta.c.name == "project_dir")).scalar()
            if recorded is None:
                connection.execute(insert(meta).values(name="project_dir", value=here))
                return
            if recorded != here:
                raise PhoenixError(
                    f"{self.path} belongs to the project at {recorded}, not {here}: a copied .phoenix/ is refused "
                    "(remove it from the copy to start afresh, or run phoenix from the original)"
                )

    def _add_missing_columns(self) -> None:
        """A store written by an older Phoenix gains the columns and indexes added since
        (columns all nullable or defaulted): additive changes only, so an upgrade never loses
        the record."""
        existing = inspect(self.engine)
        with self.engine.begin() as connection:
            for table in metadata.sorted_tables:
                present = {column["name"] for column in existing.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in present:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        connection.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')
                for index in table.indexes:
                    index.create(connection, checkfirst=True)

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One short transaction on the store's connection: committed, or rolled back on error."""
        with self._lock:
            try:
                yield self._connection
            except BaseException:
                self._connection.rollback()
                raise
            self._connection.commit()

    def _all(self, kind, query, params: dict | None = None) -> list:
        with self.transaction() as connection:
            return as_rows(kind, connection.execute(query, params))

    def _one(self, kind, query, params: dict | None = None):
        found = self._all(kind, query, params)
        return found[0] if found else None

    def close(self) -> None:
        with self._lock:
            self._connection.close()
        self.engine.dispose()

    # --- images -------------------------------------------------------------------------
    def image(self, image_id: str) -> ImageRow | None:
        return self._one(ImageRow, selecting(ImageRow, images).where(images.c.id == image_id))

    def save_image(self, row: ImageRow) -> None:
        with self.transaction() as connection:
            connection.execute(delete(images).where(images.c.id == row.id))
            connection.execute(insert(images).values(values(row)))

    def images(self) -> list[ImageRow]:
        return self._all(ImageRow, selecting(ImageRow, images).order_by(images.c.created_at, images.c.id))

    def forget_image(self, image_id: str) -> None:
        with self.transaction() as connection:
            connection.execute(delete(images).where(images.c.id == image_id))

    # --- servers ------------------------------------------------------------------------
    def add_server(self, row: ServerRow) -> bool:
        """Record a new server; False (nothing written) when its id is taken already."""
        try:
            with self.transaction() as connection:
                connection.execute(insert(servers), values(row))
        except IntegrityError:
            return False
        return True

    def update_server(self, server_id: str, **changes) -> None:
        """One UPDATE by primary key: the executor journals every state change of a server."""
        if "handle" in changes:
            changes["handle"] = json.dumps(changes["handle"])
        names = tuple(sorted(changes))
        statement = self._updates.get(names)
        if statement is None:  # built once per set of fields: building costs more than running
            assignments = {name: bindparam(f"new_{name}", type_=servers.c[name].type) for name in names}
            statement = self._updates[names] = update(servers).where(servers.c.id == bindparam("server_id")).values(assignments)
        with self.transaction() as connection:
            connection.execute(statement, {"server_id": server_id, **{f"new_{name}": value for name, value in changes.items()}})

    def server(self, server_id: str) -> ServerRow | None:
        return self._one(ServerRow, SERVER_BY_ID, {"server_id": server_id})

    def servers(self, env: str, role: str | None = None, include_destroyed: bool = False) -> list[ServerRow]:
        query = SERVER_COLUMNS.where(servers.c.env == env)
        if role:
            query = query.where(servers.c.role == role)
        if not include_destroyed:
            query = query.where(servers.c.state != "destroyed")
        with self.transaction() as connection:
            return [ServerRow(*row) for row in connection.execute(query.order_by(servers.c.launched_at, servers.c.id))]

    def secret_hashes(self) -> dict[tuple[str, str], str]:
        return {(row.env, row.name): row.digest for row in self._all(SecretHashRow, selecting(SecretHashRow, secret_hashes))}

    def recorded_secrets(self, env: str) -> dict[str, tuple[str, str | None]]:
        """name -> (keyed hash, source) of `env`'s secrets, as the last deploy resolved them."""
        query = selecting(SecretHashRow, secret_hashes).where(secret_hashes.c.env == env)
        return {row.name: (row.digest, row.source) for row in self._all(SecretHashRow, query)}

    def save_secret_hashes(self, env: str, digests: dict[str, str], sources: dict[str, str] | None = None) -> None:
        sources = sources or {}
        with self.transaction() as connection:
            connection.execute(delete(secret_hashes).where(secret_hashes.c.env == env))
            if digests:
                rows = [values(SecretHashRow(env, name, digest, sources.get(name))) for name, digest in digests.items()]
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
            connection.execute(delete(load_balancers).where(load_balancers.c.env == row.env, load_balancers.c.role == row.role))
            connection.execute(insert(load_balancers).values(values(row)))

    def delete_load_balancer(self, env: str, role: str) -> None:
        with self.transaction() as connection:
            connection.execute(delete(load_balancers).where(load_balancers.c.env == env, load_balancers.c.role == role))

    # --- operations and phases ----------------------------------------------------------
    def start_operation(self, op_id: str, env: str, kind: str) -> None:
        with self.transaction() as connection:
            connection.execute(insert(operations).values(values(OperationRow(op_id, env, kind))))

    def finish_operation(self, op_id: str, status: str, summary: str) -> None:
        with self.transaction() as connection:
            connection.execute(update(operations).where(operations.c.id == op_id).values(status=status, summary=summary, ended_at=utcnow()))

    def record_phases(self, op_id: str, timings: list[dict]) -> None:
        """Phase timings of an operation, in one transaction."""
        if timings:
            with self.transaction() as connection:
                connection.execute(insert(phases), [{"operation_id": op_id, **timing} for timing in timings])

    def add_release(self, row: ReleaseRow) -> None:
        with self.transaction() as connection:
            connection.execute(insert(releases).values(values(row)))

    def releases(self, env: str, limit: int = 50) -> list[ReleaseRow]:
        query = selecting(ReleaseRow, releases).where(releases.c.env == env).order_by(releases.c.id.desc()).limit(limit)
        return self._all(ReleaseRow, query)

    def release_of_operation(self, op_id: str) -> ReleaseRow | None:
        """The release an operation recorded (a `phoenix history` id), whichever environment."""
        query = selecting(ReleaseRow, releases).where(releases.c.operation_id == op_id).order_by(releases.c.id.desc()).limit(1)
        return self._one(ReleaseRow, query)

    def set_operation_images(self, op_id: str, image_ids: dict[str, str]) -> None:
        with self.transaction() as connection:
            connection.execute(update(operations).where(operations.c.id == op_id).values(image_ids=json.dumps(image_ids, sort_keys=True)))

    def set_operation_status(self, op_id: str, status: str, note: str = "") -> None:
        summary = operations.c.summary + f"; {note}" if note else operations.c.summary
        with self.transaction() as connection:
            connection.execute(update(operations).where(operations.c.id == op_id).values(status=status, summary=summary))

    def paused_operation(self, env: str) -> OperationRow | None:
        query = selecting(OperationRow, operations).where(operations.c.env == env, operations.c.status == "paused")
        return self._one(OperationRow, query.order_by(operations.c.started_at.desc()).limit(1))

    def record_warmup(self, row: WarmupRow) -> None:
        with self.transaction() as connection:
            connection.execute(insert(warmups).values(values(row)))

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
