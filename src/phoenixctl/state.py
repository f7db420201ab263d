"""The state store: images, servers, load balancers, operations and their phase timings.

SQLite (WAL) through SQLAlchemy at `.phoenix/state.db`; every change is its own short
transaction, written before and after the step it records, so another command (or a later
recovery) always sees what exists."""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from sqlalchemy import Boolean, Float, ForeignKey, Integer, String, Text, create_engine, delete, event, insert, inspect, select, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker

from .errors import PhoenixError


def utcnow() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


class Base(DeclarativeBase):
    pass


class ImageRow(Base):
    __tablename__ = "images"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String)
    provider: Mapped[str] = mapped_column(String)
    location: Mapped[str] = mapped_column(Text)  # provider-specific: a directory, an AMI id
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    bake_seconds: Mapped[float] = mapped_column(Float, default=0.0)


class ServerRow(Base):
    __tablename__ = "servers"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    env: Mapped[str] = mapped_column(String, index=True)
    role: Mapped[str] = mapped_column(String)
    image_id: Mapped[str] = mapped_column(String)
    fingerprint: Mapped[str] = mapped_column(String)
    address: Mapped[str] = mapped_column(String)
    port: Mapped[int] = mapped_column(Integer)
    # launching -> booting -> checking -> ready -> in_service -> draining -> stopping -> destroyed
    # (or failed -> destroyed)
    state: Mapped[str] = mapped_column(String, default="launching")
    in_service: Mapped[bool] = mapped_column(Boolean, default=False)
    launched_at: Mapped[datetime] = mapped_column(default=utcnow)
    retired_at: Mapped[datetime | None] = mapped_column(nullable=True)
    standby_until: Mapped[datetime | None] = mapped_column(nullable=True)  # blue-green: kept until then
    operation_id: Mapped[str | None] = mapped_column(String, nullable=True)
    handle: Mapped[str] = mapped_column(Text, default="{}")  # provider data: pid, root, log...
    serving_since: Mapped[datetime | None] = mapped_column(nullable=True)  # last put into service (launch or in-place update)

    @property
    def handle_data(self) -> dict:
        return json.loads(self.handle)


class LoadBalancerRow(Base):
    __tablename__ = "load_balancers"
    env: Mapped[str] = mapped_column(String, primary_key=True)
    role: Mapped[str] = mapped_column(String, primary_key=True)
    address: Mapped[str] = mapped_column(String)
    port: Mapped[int] = mapped_column(Integer)
    handle: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    @property
    def handle_data(self) -> dict:
        return json.loads(self.handle)


class OperationRow(Base):
    __tablename__ = "operations"
    id: Mapped[str] = mapped_column(String, primary_key=True)
    env: Mapped[str] = mapped_column(String, index=True)
    kind: Mapped[str] = mapped_column(String)
    status: Mapped[str] = mapped_column(String, default="running")  # running, succeeded, failed
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    summary: Mapped[str] = mapped_column(Text, default="")
    image_ids: Mapped[str | None] = mapped_column(Text, nullable=True)  # json: the build a deploy carried (failed ones too)


class PhaseRow(Base):
    __tablename__ = "phases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"), index=True)
    phase: Mapped[str] = mapped_column(String)  # bake, launch, boot, health, swap, drain, destroy
    server_id: Mapped[str | None] = mapped_column(String, nullable=True)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    seconds: Mapped[float] = mapped_column(Float)
    ok: Mapped[bool] = mapped_column(Boolean, default=True)


class WarmupRow(Base):
    """What warming one new server did: pages, failures, bytes, time."""

    __tablename__ = "warmups"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    operation_id: Mapped[str] = mapped_column(ForeignKey("operations.id"), index=True)
    server_id: Mapped[str] = mapped_column(String)
    planned: Mapped[int] = mapped_column(Integer)
    fetched: Mapped[int] = mapped_column(Integer)
    succeeded: Mapped[int] = mapped_column(Integer)
    bytes: Mapped[int] = mapped_column(Integer)
    seconds: Mapped[float] = mapped_column(Float)
    passed: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[str] = mapped_column(Text, default="")


class ReleaseRow(Base):
    """What an environment served from when: the spec (references only, no secret), the
    image ids and each role's fingerprint. A rollback redeploys the previous one."""

    __tablename__ = "releases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    env: Mapped[str] = mapped_column(String, index=True)
    operation_id: Mapped[str] = mapped_column(String)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    kind: Mapped[str] = mapped_column(String)  # up, deploy, rotate, promote, rollback
    reason: Mapped[str] = mapped_column(Text, default="")
    spec_text: Mapped[str] = mapped_column(Text)
    image_ids: Mapped[str] = mapped_column(Text)  # json: image name -> id
    fingerprints: Mapped[str] = mapped_column(Text)  # json: role -> fingerprint
    baked_at: Mapped[datetime | None] = mapped_column(nullable=True)  # when its build's last image was baked
    live_at: Mapped[datetime | None] = mapped_column(nullable=True)  # when the environment's last server began serving it


class SecretHashRow(Base):
    """A keyed hash (HMAC) of a secret value: never the value. Lets planning refuse a value
    that another environment already uses, and stands in for a command secret's value in
    read-only commands, which never run it (while the command is the one recorded)."""

    __tablename__ = "secret_hashes"
    env: Mapped[str] = mapped_column(String, primary_key=True)
    name: Mapped[str] = mapped_column(String, primary_key=True)
    digest: Mapped[str] = mapped_column(String)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)  # what it was read from (a reference)


class MetaRow(Base):
    """Facts about the store itself: the project directory it belongs to."""

    __tablename__ = "meta"
    name: Mapped[str] = mapped_column(String, primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class StateStore:
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

        Base.metadata.create_all(self.engine)
        self._add_missing_columns()
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        for companion in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
            if companion.exists():
                os.chmod(companion, 0o600)

    def claim(self, project_dir: Path) -> None:
        """Bind the store to its project directory, or refuse a store that belongs to another
        one (a project copied with its `.phoenix/`: its paths, processes and sockets are the
        original's, and acting on them from here would reach into that project)."""
        here = str(project_dir.resolve())
        with self.session() as s:
            row = s.get(MetaRow, "project_dir")
            if row is None:
                s.add(MetaRow(name="project_dir", value=here))
                return
            if row.value != here:
                raise PhoenixError(
                    f"{self.path} belongs to the project at {row.value}, not {here}: a copied .phoenix/ is refused "
                    "(remove it from the copy to start afresh, or run phoenix from the original)"
                )

    def _add_missing_columns(self) -> None:
        """A store written by an older Phoenix gains the columns added since (all nullable or
        defaulted): additive changes only, so an upgrade never loses the record."""
        existing = inspect(self.engine)
        with self.engine.begin() as connection:
            for table in Base.metadata.sorted_tables:
                present = {column["name"] for column in existing.get_columns(table.name)}
                for column in table.columns:
                    if column.name not in present:
                        kind = column.type.compile(dialect=self.engine.dialect)
                        connection.exec_driver_sql(f'ALTER TABLE {table.name} ADD COLUMN "{column.name}" {kind}')

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._sessions.begin() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()

    # --- images -------------------------------------------------------------------------
    def image(self, image_id: str) -> ImageRow | None:
        with self.session() as s:
            return s.get(ImageRow, image_id)

    def save_image(self, row: ImageRow) -> None:
        with self.session() as s:
            s.merge(row)

    def images(self) -> list[ImageRow]:
        with self.session() as s:
            return list(s.scalars(select(ImageRow).order_by(ImageRow.created_at, ImageRow.id)))

    def forget_image(self, image_id: str) -> None:
        with self.engine.begin() as connection:
            connection.execute(delete(ImageRow).where(ImageRow.id == image_id))

    # --- servers ------------------------------------------------------------------------
    def add_server(self, row: ServerRow) -> None:
        with self.session() as s:
            s.add(row)

    def update_server(self, server_id: str, **fields) -> None:
        """One UPDATE by primary key: the executor journals every state change of a server."""
        if "handle" in fields:
            fields["handle"] = json.dumps(fields["handle"])
        with self.engine.begin() as connection:
            connection.execute(update(ServerRow).where(ServerRow.id == server_id).values(**fields))

    def server(self, server_id: str) -> ServerRow | None:
        with self.session() as s:
            return s.get(ServerRow, server_id)

    def servers(self, env: str, role: str | None = None, include_destroyed: bool = False) -> list[ServerRow]:
        query = select(ServerRow).where(ServerRow.env == env)
        if role:
            query = query.where(ServerRow.role == role)
        if not include_destroyed:
            query = query.where(ServerRow.state != "destroyed")
        with self.session() as s:
            return list(s.scalars(query.order_by(ServerRow.launched_at, ServerRow.id)))

    def secret_hashes(self) -> dict[tuple[str, str], str]:
        with self.session() as s:
            return {(row.env, row.name): row.digest for row in s.scalars(select(SecretHashRow))}

    def recorded_secrets(self, env: str) -> dict[str, tuple[str, str | None]]:
        """name -> (keyed hash, source) of `env`'s secrets, as the last deploy resolved them."""
        with self.session() as s:
            return {row.name: (row.digest, row.source) for row in s.scalars(select(SecretHashRow).where(SecretHashRow.env == env))}

    def save_secret_hashes(self, env: str, digests: dict[str, str], sources: dict[str, str] | None = None) -> None:
        sources = sources or {}
        with self.session() as s:
            for row in s.scalars(select(SecretHashRow).where(SecretHashRow.env == env)):
                if row.name not in digests:
                    s.delete(row)
            for name, digest in digests.items():
                s.merge(SecretHashRow(env=env, name=name, digest=digest, source=sources.get(name)))

    # --- load balancers -----------------------------------------------------------------
    def load_balancers(self, env: str) -> list[LoadBalancerRow]:
        with self.session() as s:
            return list(s.scalars(select(LoadBalancerRow).where(LoadBalancerRow.env == env).order_by(LoadBalancerRow.role)))

    def load_balancer(self, env: str, role: str) -> LoadBalancerRow | None:
        with self.session() as s:
            return s.get(LoadBalancerRow, (env, role))

    def save_load_balancer(self, row: LoadBalancerRow) -> None:
        with self.session() as s:
            s.merge(row)

    def delete_load_balancer(self, env: str, role: str) -> None:
        with self.session() as s:
            row = s.get(LoadBalancerRow, (env, role))
            if row:
                s.delete(row)

    # --- operations and phases ----------------------------------------------------------
    def start_operation(self, op_id: str, env: str, kind: str) -> None:
        with self.session() as s:
            s.add(OperationRow(id=op_id, env=env, kind=kind))

    def finish_operation(self, op_id: str, status: str, summary: str) -> None:
        with self.session() as s:
            row = s.get(OperationRow, op_id)
            row.status, row.summary, row.ended_at = status, summary, utcnow()

    def record_phases(self, op_id: str, phases: list[dict]) -> None:
        """Phase timings of an operation, in one transaction."""
        if phases:
            with self.engine.begin() as connection:
                connection.execute(insert(PhaseRow), [{"operation_id": op_id, **phase} for phase in phases])

    def add_release(self, row: ReleaseRow) -> None:
        with self.session() as s:
            s.add(row)

    def releases(self, env: str, limit: int = 50) -> list[ReleaseRow]:
        with self.session() as s:
            query = select(ReleaseRow).where(ReleaseRow.env == env).order_by(ReleaseRow.id.desc()).limit(limit)
            return list(s.scalars(query))

    def release_of_operation(self, op_id: str) -> ReleaseRow | None:
        """The release an operation recorded (a `phoenix history` id), whichever environment."""
        with self.session() as s:
            return s.scalars(select(ReleaseRow).where(ReleaseRow.operation_id == op_id).order_by(ReleaseRow.id.desc())).first()

    def set_operation_images(self, op_id: str, image_ids: dict[str, str]) -> None:
        with self.session() as s:
            s.get(OperationRow, op_id).image_ids = json.dumps(image_ids, sort_keys=True)

    def set_operation_status(self, op_id: str, status: str, note: str = "") -> None:
        with self.session() as s:
            row = s.get(OperationRow, op_id)
            row.status = status
            if note:
                row.summary = f"{row.summary}; {note}"

    def paused_operation(self, env: str) -> OperationRow | None:
        with self.session() as s:
            query = select(OperationRow).where(OperationRow.env == env, OperationRow.status == "paused")
            return s.scalars(query.order_by(OperationRow.started_at.desc())).first()

    def record_warmup(self, row: WarmupRow) -> None:
        with self.session() as s:
            s.add(row)

    def warmups(self, op_id: str) -> list[WarmupRow]:
        with self.session() as s:
            return list(s.scalars(select(WarmupRow).where(WarmupRow.operation_id == op_id).order_by(WarmupRow.id)))

    def operations(self, env: str, limit: int = 50) -> list[OperationRow]:
        with self.session() as s:
            query = select(OperationRow).where(OperationRow.env == env).order_by(OperationRow.started_at.desc()).limit(limit)
            return list(s.scalars(query))

    def phases(self, op_id: str) -> list[PhaseRow]:
        with self.session() as s:
            return list(s.scalars(select(PhaseRow).where(PhaseRow.operation_id == op_id).order_by(PhaseRow.id)))
