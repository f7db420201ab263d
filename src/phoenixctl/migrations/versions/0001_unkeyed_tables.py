"""The tables as Phoenix wrote them before migrations: one project per SQLite file, nothing
keyed by project. A store from then is brought up to this revision the way Phoenix used to
upgrade it (columns and indexes added since created where missing), then stamped.

Revision ID: 0001
"""

from alembic import op
from sqlalchemy import Boolean, Column, DateTime, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text, inspect

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

frozen = MetaData()
Table(
    "images", frozen,
    Column("id", String, primary_key=True), Column("name", String, nullable=False), Column("provider", String, nullable=False),
    Column("location", Text, nullable=False), Column("created_at", DateTime, nullable=False), Column("bake_seconds", Float, nullable=False),
)
Table(
    "servers", frozen,
    Column("id", String, primary_key=True), Column("env", String, nullable=False, index=True), Column("role", String, nullable=False),
    Column("image_id", String, nullable=False), Column("fingerprint", String, nullable=False), Column("address", String, nullable=False),
    Column("port", Integer, nullable=False), Column("state", String, nullable=False), Column("in_service", Boolean, nullable=False),
    Column("launched_at", DateTime, nullable=False), Column("retired_at", DateTime), Column("standby_until", DateTime),
    Column("operation_id", String), Column("handle", Text, nullable=False), Column("serving_since", DateTime),
    Index("ix_servers_env_role_state", "env", "role", "state"),
)
Table(
    "load_balancers", frozen,
    Column("env", String, primary_key=True), Column("role", String, primary_key=True), Column("address", String, nullable=False),
    Column("port", Integer, nullable=False), Column("handle", Text, nullable=False), Column("created_at", DateTime, nullable=False),
)
Table(
    "operations", frozen,
    Column("id", String, primary_key=True), Column("env", String, nullable=False, index=True), Column("kind", String, nullable=False),
    Column("status", String, nullable=False), Column("started_at", DateTime, nullable=False), Column("ended_at", DateTime),
    Column("summary", Text, nullable=False), Column("image_ids", Text),
)
Table(
    "phases", frozen, Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String, ForeignKey("operations.id"), nullable=False, index=True),
    Column("phase", String, nullable=False), Column("server_id", String), Column("started_at", DateTime, nullable=False),
    Column("seconds", Float, nullable=False), Column("ok", Boolean, nullable=False),
)
Table(
    "warmups", frozen, Column("id", Integer, primary_key=True, autoincrement=True),
    Column("operation_id", String, ForeignKey("operations.id"), nullable=False, index=True),
    Column("server_id", String, nullable=False), Column("planned", Integer, nullable=False), Column("fetched", Integer, nullable=False),
    Column("succeeded", Integer, nullable=False), Column("bytes", Integer, nullable=False), Column("seconds", Float, nullable=False),
    Column("passed", Boolean, nullable=False), Column("summary", Text, nullable=False),
)
Table(
    "releases", frozen,
    Column("id", Integer, primary_key=True, autoincrement=True), Column("env", String, nullable=False, index=True),
    Column("operation_id", String, nullable=False), Column("created_at", DateTime, nullable=False), Column("kind", String, nullable=False),
    Column("reason", Text, nullable=False), Column("spec_text", Text, nullable=False), Column("image_ids", Text, nullable=False),
    Column("fingerprints", Text, nullable=False), Column("baked_at", DateTime), Column("live_at", DateTime),
)
Table(
    "secret_hashes", frozen,
    Column("env", String, primary_key=True), Column("name", String, primary_key=True), Column("digest", String, nullable=False),
    Column("source", Text),
)
Table("meta", frozen, Column("name", String, primary_key=True), Column("value", Text, nullable=False))


def upgrade() -> None:
    bind = op.get_bind()
    frozen.create_all(bind, checkfirst=True)
    existing = inspect(bind)
    for table in frozen.sorted_tables:  # additive only: the columns added before migrations
        present = {column["name"] for column in existing.get_columns(table.name)}
        for column in table.columns:
            if column.name not in present:
                op.add_column(table.name, Column(column.name, column.type))
        for index in table.indexes:
            index.create(bind, checkfirst=True)


def downgrade() -> None:
    raise NotImplementedError("the first revision is not undone")
