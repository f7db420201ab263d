"""Every table keyed by project, so many projects share one PostgreSQL database; the lock
holders table for locks held on a shared store. A SQLite file belongs to one project
directory: its rows are kept, under the empty project name (the file's own).

Each table is made anew beside the old one, filled from it, and takes its name (SQLite
cannot change a primary key in place); the whole revision runs in one transaction.

Revision ID: 0002
Revises: 0001
"""

from alembic import op
from sqlalchemy import Boolean, Column, DateTime, Float, ForeignKeyConstraint, Index, Integer, MetaData, String, Table, Text

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SUFFIX = "_0002"
frozen = MetaData()


def keyed(name: str, *columns) -> Table:
    return Table(name + SUFFIX, frozen, Column("project", String, primary_key=True, server_default=""), *columns)


def of_operation(name: str, *columns) -> Table:
    return Table(
        name + SUFFIX, frozen, Column("id", Integer, primary_key=True, autoincrement=True), Column("project", String, nullable=False, server_default=""),
        Column("operation_id", String, nullable=False), *columns,
        ForeignKeyConstraint(["project", "operation_id"], ["operations_0002.project", "operations_0002.id"]),
        Index(f"ix_{name}_project_operation", "project", "operation_id"),
    )


REBUILT = [
    keyed(
        "images",
        Column("id", String, primary_key=True), Column("name", String, nullable=False), Column("provider", String, nullable=False),
        Column("location", Text, nullable=False), Column("created_at", DateTime, nullable=False), Column("bake_seconds", Float, nullable=False),
    ),
    keyed(
        "servers",
        Column("id", String, primary_key=True), Column("env", String, nullable=False), Column("role", String, nullable=False),
        Column("image_id", String, nullable=False), Column("fingerprint", String, nullable=False), Column("address", String, nullable=False),
        Column("port", Integer, nullable=False), Column("state", String, nullable=False), Column("in_service", Boolean, nullable=False),
        Column("launched_at", DateTime, nullable=False), Column("retired_at", DateTime), Column("standby_until", DateTime),
        Column("operation_id", String), Column("handle", Text, nullable=False), Column("serving_since", DateTime),
        Index("ix_servers_project_env_role_state", "project", "env", "role", "state"),
    ),
    keyed(
        "load_balancers",
        Column("env", String, primary_key=True), Column("role", String, primary_key=True), Column("address", String, nullable=False),
        Column("port", Integer, nullable=False), Column("handle", Text, nullable=False), Column("created_at", DateTime, nullable=False),
    ),
    keyed(
        "operations",
        Column("id", String, primary_key=True), Column("env", String, nullable=False), Column("kind", String, nullable=False),
        Column("status", String, nullable=False), Column("started_at", DateTime, nullable=False), Column("ended_at", DateTime),
        Column("summary", Text, nullable=False), Column("image_ids", Text),
        Index("ix_operations_project_env", "project", "env"),
    ),
    of_operation(
        "phases", Column("phase", String, nullable=False), Column("server_id", String), Column("started_at", DateTime, nullable=False),
        Column("seconds", Float, nullable=False), Column("ok", Boolean, nullable=False),
    ),
    of_operation(
        "warmups", Column("server_id", String, nullable=False), Column("planned", Integer, nullable=False), Column("fetched", Integer, nullable=False),
        Column("succeeded", Integer, nullable=False), Column("bytes", Integer, nullable=False), Column("seconds", Float, nullable=False),
        Column("passed", Boolean, nullable=False), Column("summary", Text, nullable=False),
    ),
    Table(
        "releases" + SUFFIX, frozen,
        Column("id", Integer, primary_key=True, autoincrement=True), Column("project", String, nullable=False, server_default=""), Column("env", String, nullable=False),
        Column("operation_id", String, nullable=False), Column("created_at", DateTime, nullable=False), Column("kind", String, nullable=False),
        Column("reason", Text, nullable=False), Column("spec_text", Text, nullable=False), Column("image_ids", Text, nullable=False),
        Column("fingerprints", Text, nullable=False), Column("baked_at", DateTime), Column("live_at", DateTime),
        Index("ix_releases_project_env", "project", "env"),
    ),
    keyed(
        "secret_hashes",
        Column("env", String, primary_key=True), Column("name", String, primary_key=True), Column("digest", String, nullable=False),
        Column("source", Text),
    ),
    keyed("meta", Column("name", String, primary_key=True), Column("value", Text, nullable=False)),
]


def upgrade() -> None:
    bind = op.get_bind()
    frozen.create_all(bind)
    for table in REBUILT:
        old = table.name.removesuffix(SUFFIX)
        kept = ", ".join(f'"{column.name}"' for column in table.columns if column.name != "project")
        bind.exec_driver_sql(f'INSERT INTO {table.name} (project, {kept}) SELECT \'\', {kept} FROM {old}')
    for table in reversed(REBUILT):  # the measurements before the operations they name
        op.drop_table(table.name.removesuffix(SUFFIX))
    for table in REBUILT:
        op.rename_table(table.name, table.name.removesuffix(SUFFIX))
    op.create_table(
        "lock_holders",
        Column("project", String, primary_key=True, server_default=""), Column("env", String, primary_key=True), Column("host", String, nullable=False),
        Column("pid", Integer, nullable=False), Column("operation", String, nullable=False), Column("since", String, nullable=False),
    )


def downgrade() -> None:
    raise NotImplementedError("a store keyed by project is not unkeyed")
