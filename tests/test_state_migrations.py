"""The store's schema under Alembic, and moving state between stores (issue 18).

A store made by the previous release (its DDL frozen here, as that release's StateStore
wrote it) is upgraded on first use and by `phoenix state upgrade`, its rows kept; a store
newer than this Phoenix is refused with one line (exit 2) and left unwritten, on SQLite and
PostgreSQL; `phoenix state copy` goes SQLite -> PostgreSQL -> SQLite with every row; the
URL's password is never shown."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, select

from conftest import PHOENIX
from phoenixctl.errors import PhoenixError
from phoenixctl.example import init_example
from phoenixctl.state import ImageRow, LoadBalancerRow, ReleaseRow, ServerRow, StateStore, WarmupRow
from phoenixctl.state_copy import LOCAL_META, copy_state
from phoenixctl.state_location import StateLocation, parse_location, redacted
from phoenixctl.state_schema import HEAD, REVISIONS, StoreTooNew, scripts
from phoenixctl.state_tables import PROJECT_TABLES

# The tables as Phoenix 0.1.0 (before migrations) made them: sqlite_master's own text.
PREVIOUS_RELEASE_DDL = [
    "CREATE TABLE images ( id VARCHAR NOT NULL, name VARCHAR NOT NULL, provider VARCHAR NOT NULL, location TEXT NOT NULL, created_at DATETIME NOT NULL, bake_seconds FLOAT NOT NULL, PRIMARY KEY (id) )",
    "CREATE TABLE servers ( id VARCHAR NOT NULL, env VARCHAR NOT NULL, role VARCHAR NOT NULL, image_id VARCHAR NOT NULL, fingerprint VARCHAR NOT NULL, address VARCHAR NOT NULL, port INTEGER NOT NULL, state VARCHAR NOT NULL, in_service BOOLEAN NOT NULL, launched_at DATETIME NOT NULL, retired_at DATETIME, standby_until DATETIME, operation_id VARCHAR, handle TEXT NOT NULL, serving_since DATETIME, PRIMARY KEY (id) )",
    "CREATE INDEX ix_servers_env ON servers (env)",
    "CREATE INDEX ix_servers_env_role_state ON servers (env, role, state)",
    "CREATE TABLE load_balancers ( env VARCHAR NOT NULL, role VARCHAR NOT NULL, address VARCHAR NOT NULL, port INTEGER NOT NULL, handle TEXT NOT NULL, created_at DATETIME NOT NULL, PRIMARY KEY (env, role) )",
    "CREATE TABLE operations ( id VARCHAR NOT NULL, env VARCHAR NOT NULL, kind VARCHAR NOT NULL, status VARCHAR NOT NULL, started_at DATETIME NOT NULL, ended_at DATETIME, summary TEXT NOT NULL, image_ids TEXT, PRIMARY KEY (id) )",
    "CREATE INDEX ix_operations_env ON operations (env)",
    "CREATE TABLE releases ( id INTEGER NOT NULL, env VARCHAR NOT NULL, operation_id VARCHAR NOT NULL, created_at DATETIME NOT NULL, kind VARCHAR NOT NULL, reason TEXT NOT NULL, spec_text TEXT NOT NULL, image_ids TEXT NOT NULL, fingerprints TEXT NOT NULL, baked_at DATETIME, live_at DATETIME, PRIMARY KEY (id) )",
    "CREATE INDEX ix_releases_env ON releases (env)",
    "CREATE TABLE secret_hashes ( env VARCHAR NOT NULL, name VARCHAR NOT NULL, digest VARCHAR NOT NULL, source TEXT, PRIMARY KEY (env, name) )",
    "CREATE TABLE meta ( name VARCHAR NOT NULL, value TEXT NOT NULL, PRIMARY KEY (name) )",
    "CREATE TABLE phases ( id INTEGER NOT NULL, operation_id VARCHAR NOT NULL, phase VARCHAR NOT NULL, server_id VARCHAR, started_at DATETIME NOT NULL, seconds FLOAT NOT NULL, ok BOOLEAN NOT NULL, PRIMARY KEY (id), FOREIGN KEY(operation_id) REFERENCES operations (id) )",
    "CREATE INDEX ix_phases_operation_id ON phases (operation_id)",
    "CREATE TABLE warmups ( id INTEGER NOT NULL, operation_id VARCHAR NOT NULL, server_id VARCHAR NOT NULL, planned INTEGER NOT NULL, fetched INTEGER NOT NULL, succeeded INTEGER NOT NULL, bytes INTEGER NOT NULL, seconds FLOAT NOT NULL, passed BOOLEAN NOT NULL, summary TEXT NOT NULL, PRIMARY KEY (id), FOREIGN KEY(operation_id) REFERENCES operations (id) )",
    "CREATE INDEX ix_warmups_operation_id ON warmups (operation_id)",
]
PREVIOUS_RELEASE_ROWS = [
    "INSERT INTO servers VALUES ('web-1', 'ci', 'frontend', 'img-1', 'fp', '127.0.0.2', 8080, 'in_service', 1, '2026-01-01 00:00:00', NULL, NULL, 'op-1', '{}', NULL)",
    "INSERT INTO operations VALUES ('op-1', 'ci', 'up', 'succeeded', '2026-01-01 00:00:00', '2026-01-01 00:01:00', '1 launched', '{\"web\": \"img-1\"}')",
    "INSERT INTO phases VALUES (1, 'op-1', 'launch', 'web-1', '2026-01-01 00:00:00', 1.5, 1)",
    "INSERT INTO releases VALUES (1, 'ci', 'op-1', '2026-01-01 00:01:00', 'up', '', 'project: website', '{\"web\": \"img-1\"}', '{\"frontend\": \"fp\"}', NULL, NULL)",
    "INSERT INTO load_balancers VALUES ('ci', 'frontend', '127.0.0.3', 8080, '{}', '2026-01-01 00:00:00')",
    "INSERT INTO secret_hashes VALUES ('ci', 'tls_key', 'abc123', 'secrets/ci/tls.key')",
]


def run(spec: Path, *args: str, environ: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([PHOENIX, *args, "-f", str(spec)], capture_output=True, text=True, timeout=120, env=environ)


def previous_release_store(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with closing(sqlite3.connect(path)) as db, db:
        for statement in PREVIOUS_RELEASE_DDL + PREVIOUS_RELEASE_ROWS:
            db.execute(statement)


def shape(engine) -> dict:
    """Tables, columns, primary keys and indexes, as a database reports them."""
    found = inspect(engine)
    return {
        table: (
            [(column["name"], column["nullable"], str(column["default"])) for column in found.get_columns(table)],
            found.get_pk_constraint(table)["constrained_columns"],
            sorted((index["name"], tuple(index["column_names"])) for index in found.get_indexes(table)),
        )
        for table in sorted(found.get_table_names())
    }


def test_the_shipped_revisions_are_the_ones_phoenix_knows():
    assert [script.revision for script in reversed(list(scripts().walk_revisions()))] == list(REVISIONS)
    assert scripts().get_current_head() == HEAD


def test_a_store_of_the_previous_release_is_upgraded_with_its_rows(tmp_path: Path):
    init_example(tmp_path / "website")
    spec = tmp_path / "website" / "phoenix.yaml"
    previous_release_store(spec.parent / ".phoenix" / "state.db")
    upgraded = run(spec, "state", "upgrade")
    assert upgraded.returncode == 0, upgraded.stderr
    assert f"upgraded from schema revision (none) to {HEAD}" in upgraded.stdout
    store = StateStore(spec.parent / ".phoenix" / "state.db")
    try:
        [server] = store.servers("ci")
        assert (server.id, server.in_service, server.launched_at) == ("web-1", True, datetime(2026, 1, 1))
        assert [p.phase for p in store.phases("op-1")] == ["launch"]
        assert [r.operation_id for r in store.releases("ci")] == ["op-1"]
        assert store.load_balancer("ci", "frontend").port == 8080
        assert store.recorded_secrets("ci") == {"tls_key": ("abc123", "secrets/ci/tls.key")}
        upgraded_shape = shape(store.engine)
    finally:
        store.close()
    fresh = StateStore(tmp_path / "fresh" / "state.db")  # made at the head directly
    try:
        assert upgraded_shape == shape(fresh.engine)
    finally:
        fresh.close()
    history = run(spec, "history", "ci", "--json")
    assert [op["id"] for op in json.loads(history.stdout)] == ["op-1"], history.stderr


def test_a_newer_store_is_refused_and_left_unwritten(tmp_path: Path, pg_cluster):
    init_example(tmp_path / "website")
    spec = tmp_path / "website" / "phoenix.yaml"
    path = spec.parent / ".phoenix" / "state.db"
    StateStore(path).close()
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE phoenix_schema_version SET version_num = '0099'")
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.parent.glob("state.db*")}
    refused = run(spec, "status", "ci")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"phoenix: error: state store {path} is at schema revision 0099, newer than this Phoenix knows (up to {HEAD}): "
        "upgrade Phoenix; the store was not written"
    ]
    assert {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in path.parent.glob("state.db*")} == before
    url = pg_cluster.fresh_database()  # the same on PostgreSQL
    StateStore(parse_location(url, "test"), "website").close()
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("UPDATE phoenix_schema_version SET version_num = '0099'")
    with pytest.raises(StoreTooNew, match="newer than this Phoenix knows"):
        StateStore(parse_location(url, "test"), "website")


def populate(store: StateStore) -> None:
    store.save_image(ImageRow("img-1", "web", "local", "/images/img-1", bake_seconds=2.5))
    for n, env in enumerate(("ci", "production")):
        op_id = f"op-{n}"
        store.start_operation(op_id, env, "up")
        store.add_server(ServerRow(f"web-{n}", env, "frontend", "img-1", "fp", "127.0.0.2", 8080 + n, state="in_service", in_service=True, operation_id=op_id))
        store.record_phases(op_id, [{"phase": "launch", "server_id": f"web-{n}", "seconds": 1.0 + n, "ok": True, "started_at": datetime(2026, 1, 1)}])
        store.record_warmup(WarmupRow(operation_id=op_id, server_id=f"web-{n}", planned=3, fetched=3, succeeded=3, bytes=10, seconds=0.5, passed=True))
        store.add_release(ReleaseRow(env=env, operation_id=op_id, kind="up", spec_text="project: website", image_ids="{}", fingerprints="{}"))
        store.save_load_balancer(LoadBalancerRow(env, "frontend", "127.0.0.3", 8080, '{"pid": 1}'))
        store.save_secret_hashes(env, {"tls_key": f"digest-{n}"}, {"tls_key": "secrets/tls.key"})
        store.finish_operation(op_id, "succeeded", "1 launched")


def rows(store: StateStore) -> dict:
    """Every row of the store's project, table by table, without the keys the database draws."""
    found = {}
    with store.transaction() as connection:
        for table in PROJECT_TABLES:
            kept = [column for column in table.columns if column.name not in ("project",) and not (column.name == "id" and column.autoincrement is True)]
            result = connection.execute(select(*kept).where(table.c.project == store.project).order_by(*kept))
            found[table.name] = [tuple(row) for row in result if not (table.name == "meta" and row[0] in LOCAL_META)]
    return found


def test_state_copy_round_trip_sqlite_postgresql_sqlite(tmp_path: Path, pg_cluster):
    url = pg_cluster.fresh_database()
    source = StateStore(tmp_path / "a" / "state.db")
    source.claim(tmp_path)
    populate(source)
    key = bytes(range(32))
    try:
        copied = copy_state(source, parse_location(url, "test"), "website", key)
        assert copied["servers"] == 2 and copied["phases"] == 2 and copied["releases"] == 2
        shared = StateStore(parse_location(url, "test"), "website")
        try:
            assert rows(shared) == rows(source)
            assert shared.shared_value("secret_key", lambda: "not this one") == key.hex()  # the fingerprints' key went along
            with pytest.raises(PhoenixError, match="already holds 1 images row"):
                copy_state(source, parse_location(url, "test"), "website", key)  # never over a record
            back = StateLocation(path=tmp_path / "b" / "state.db")
            copy_state(shared, back, "website", key)
            returned = StateStore(back.path)
            try:
                assert rows(returned) == rows(source)
                assert (back.path.parent / "secret.key").read_bytes() == key
            finally:
                returned.close()
        finally:
            shared.close()
    finally:
        source.close()


def test_the_password_is_never_shown_and_never_in_the_spec(tmp_path: Path, pg_cluster):
    assert redacted("postgresql://ci:s3cret@db.internal:5432/phoenix?sslmode=require&password=x") == "postgresql://ci@db.internal:5432/phoenix?sslmode=require"
    assert redacted("postgresql:///phoenix?host=/run/postgresql&password=x") == "postgresql:///phoenix?host=/run/postgresql"
    init_example(tmp_path / "website")
    spec = tmp_path / "website" / "phoenix.yaml"
    url = pg_cluster.fresh_database()
    with_password = url.replace("phoenix@", "phoenix:hunter2-secret@", 1)  # the cluster trusts the socket: the password is unused
    environ = {**os.environ, "PHOENIX_STATE_URL": with_password}
    for args in (("status", "ci"), ("status", "ci", "--json"), ("state", "upgrade")):
        shown = run(spec, *args, environ=environ)
        assert shown.returncode == 0, shown.stderr
        assert "hunter2" not in shown.stdout + shown.stderr and url in shown.stdout, shown.stdout
    copied = run(spec, "state", "copy", "--to", with_password.replace("/t", "/nosuchdb", 1))
    assert copied.returncode == 1 and "hunter2" not in copied.stdout + copied.stderr
    assert copied.stderr.strip().count("\n") == 0 and "unavailable" in copied.stderr, copied.stderr
    spec.write_text(spec.read_text().replace("provider: local ", f"state: {{url: '{with_password}'}}\nprovider: local ", 1))
    refused = run(spec, "status", "ci")
    assert refused.returncode == 2 and "hunter2" not in refused.stderr
    assert refused.stderr.startswith(f"phoenix: error: {spec}:4: state.url: a password here would be stored"), refused.stderr


def test_first_commands_side_by_side_make_one_postgresql_schema(pg_cluster):
    """Runners starting at once on an empty database: the schema is made once (under an
    advisory lock, in one transaction), never twice ("relation already exists")."""
    url = pg_cluster.fresh_database()
    opener = (
        "import sys; from phoenixctl.state import StateStore; from phoenixctl.state_location import parse_location; "
        "StateStore(parse_location(sys.argv[1], 'test'), 'website').close()"
    )
    openers = [subprocess.Popen([sys.executable, "-c", opener, url], stderr=subprocess.PIPE, text=True) for _ in range(6)]
    for process in openers:
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 0, stderr[-2000:]
    with psycopg.connect(url) as connection:
        assert connection.execute("SELECT version_num FROM phoenix_schema_version").fetchall() == [(HEAD,)]


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_the_journal_of_a_server_reads_back_as_written(tmp_path: Path, pg_cluster, backend):
    """update_server runs a statement compiled once (state_prepared.py) instead of going
    through SQLAlchemy's execution: every kind of value the lifecycle journals (text, a
    boolean, the provider's handle, timezone-aware datetimes, None) reads back as written, on
    both stores, and sorts the same as a row inserted by the usual path."""
    location = StateLocation(path=tmp_path / "state.db") if backend == "sqlite" else parse_location(pg_cluster.fresh_database(), "test")
    store = StateStore(location, "" if backend == "sqlite" else "website")
    try:
        launched = datetime(2026, 12, 1, 4, 30, 15, 123456, tzinfo=timezone.utc)
        store.add_server(ServerRow("web-1", "ci", "web", "img-1", "fp", "", 8080, launched_at=launched))
        store.add_server(ServerRow("web-2", "ci", "web", "img-1", "fp", "", 8080, launched_at=launched + timedelta(microseconds=1)))
        store.update_server("web-1", address="127.0.0.9", handle={"pid": 42, "root": "/srv/x"}, state="booting")
        store.update_server("web-1", state="in_service", in_service=True, serving_since=launched + timedelta(seconds=3))
        row = store.server("web-1")
        assert (row.address, row.handle_data, row.state, row.in_service) == ("127.0.0.9", {"pid": 42, "root": "/srv/x"}, "in_service", True)
        assert row.serving_since.replace(tzinfo=timezone.utc) == launched + timedelta(seconds=3)
        store.update_server("web-1", state="destroyed", in_service=False, retired_at=launched + timedelta(minutes=1), standby_until=None)
        row = store.server("web-1")
        assert (row.state, row.in_service, row.standby_until) == ("destroyed", False, None)
        assert row.retired_at.replace(tzinfo=timezone.utc) == launched + timedelta(minutes=1)
        # a datetime journaled by update_server compares with one inserted the usual way
        store.update_server("web-2", launched_at=launched - timedelta(microseconds=1))
        assert [r.id for r in store.servers("ci", include_destroyed=True)] == ["web-2", "web-1"]
    finally:
        store.close()
