"""The state store's rows (small dataclasses) and tables (SQLAlchemy Core), at the schema's head.

Every table is keyed by project, so many projects share one PostgreSQL database; a SQLite
file belongs to one project directory and keys its rows by the empty name. What changes
here changes through a migration in `migrations/versions/` (tests/test_state_migrations.py
checks that the migrations arrive at exactly these tables)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import (
    Boolean, Column, DateTime, Float, ForeignKeyConstraint, Index, Integer, MetaData, String, Table, Text,
)


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


def keyed(name: str, *columns, **kwargs) -> Table:
    """A table whose rows belong to one project (the first column of its primary key; a row
    written without one is the SQLite file's own, as tools and tests that write SQL do)."""
    return Table(name, metadata, Column("project", String, primary_key=True, server_default=""), *columns, **kwargs)


images = keyed(
    "images",
    Column("id", String, primary_key=True), Column("name", String, nullable=False), Column("provider", String, nullable=False),
    Column("location", Text, nullable=False), Column("created_at", DateTime, nullable=False), Column("bake_seconds", Float, nullable=False),
)
servers = keyed(
    "servers",
    Column("id", String, primary_key=True), Column("env", String, nullable=False), Column("role", String, nullable=False),
    Column("image_id", String, nullable=False), Column("fingerprint", String, nullable=False), Column("address", String, nullable=False),
    Column("port", Integer, nullable=False), Column("state", String, nullable=False), Column("in_service", Boolean, nullable=False),
    Column("launched_at", DateTime, nullable=False), Column("retired_at", DateTime), Column("standby_until", DateTime),
    Column("operation_id", String), Column("handle", Text, nullable=False), Column("serving_since", DateTime),
    Index("ix_servers_project_env_role_state", "project", "env", "role", "state"),  # a role's servers, the destroyed left out
)
load_balancers = keyed(
    "load_balancers",
    Column("env", String, primary_key=True), Column("role", String, primary_key=True), Column("address", String, nullable=False),
    Column("port", Integer, nullable=False), Column("handle", Text, nullable=False), Column("created_at", DateTime, nullable=False),
)
operations = keyed(
    "operations",
    Column("id", String, primary_key=True), Column("env", String, nullable=False), Column("kind", String, nullable=False),
    Column("status", String, nullable=False), Column("started_at", DateTime, nullable=False), Column("ended_at", DateTime),
    Column("summary", Text, nullable=False), Column("image_ids", Text),
    Index("ix_operations_project_env_started", "project", "env", "started_at"),  # the newest first, from the index
)


def of_operation(name: str, *columns: Column) -> Table:
    """A table of measurements, each row of one operation (ids drawn by the database)."""
    return Table(
        name, metadata, Column("id", Integer, primary_key=True, autoincrement=True), Column("project", String, nullable=False, server_default=""),
        Column("operation_id", String, nullable=False), *columns,
        ForeignKeyConstraint(["project", "operation_id"], ["operations.project", "operations.id"]),
        Index(f"ix_{name}_project_operation", "project", "operation_id"),
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
    Column("id", Integer, primary_key=True, autoincrement=True), Column("project", String, nullable=False, server_default=""), Column("env", String, nullable=False),
    Column("operation_id", String, nullable=False), Column("created_at", DateTime, nullable=False), Column("kind", String, nullable=False),
    Column("reason", Text, nullable=False), Column("spec_text", Text, nullable=False), Column("image_ids", Text, nullable=False),
    Column("fingerprints", Text, nullable=False), Column("baked_at", DateTime), Column("live_at", DateTime),
    Index("ix_releases_project_env", "project", "env"),
)
secret_hashes = keyed(
    "secret_hashes",
    Column("env", String, primary_key=True), Column("name", String, primary_key=True), Column("digest", String, nullable=False),
    Column("source", Text),
)
meta = keyed("meta", Column("name", String, primary_key=True), Column("value", Text, nullable=False))
# Who holds an environment's lock on a shared store (the lock itself is PostgreSQL's advisory
# lock): a row left behind names a holder that died holding it.
lock_holders = keyed(
    "lock_holders",
    Column("env", String, primary_key=True), Column("host", String, nullable=False), Column("pid", Integer, nullable=False),
    Column("operation", String, nullable=False), Column("since", String, nullable=False),
)
# What `phoenix state copy` moves, parents first (a phase names its operation).
PROJECT_TABLES = (images, servers, load_balancers, operations, phases, warmups, releases, secret_hashes, meta)
