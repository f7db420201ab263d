"""The state store: a file written by an older Phoenix opens and gains the new columns; first
commands side by side make it once."""

import sqlite3
import subprocess
import sys
from contextlib import closing
from datetime import datetime
from pathlib import Path

from phoenixctl.state import ServerRow, StateStore


def test_an_older_store_gains_new_columns_and_keeps_its_rows(tmp_path: Path):
    path = tmp_path / "state.db"
    with sqlite3.connect(path) as db:  # the servers table as the first release wrote it
        db.execute(
            "CREATE TABLE servers (id VARCHAR PRIMARY KEY, env VARCHAR, role VARCHAR, image_id VARCHAR, fingerprint VARCHAR,"
            " address VARCHAR, port INTEGER, state VARCHAR, in_service BOOLEAN, launched_at DATETIME, retired_at DATETIME,"
            " operation_id VARCHAR, handle TEXT)"
        )
        db.execute(
            "INSERT INTO servers VALUES ('web-1', 'ci', 'web', 'img', 'fp', '127.0.0.2', 80, 'in_service', 1,"
            " '2026-01-01 00:00:00', NULL, NULL, '{}')"
        )
    store = StateStore(path)
    try:
        [row] = store.servers("ci")
        assert row.id == "web-1" and row.in_service and row.standby_until is None
        until = datetime(2026, 1, 2, 3, 4, 5)
        store.update_server("web-1", state="standby", standby_until=until)  # the new column is usable
        assert store.server("web-1").standby_until == until and store.server("web-1").state == "standby"
        with closing(sqlite3.connect(path)) as db:  # written into the file's added column
            assert db.execute("SELECT standby_until FROM servers WHERE id = 'web-1'").fetchone()[0].startswith("2026-01-02 03:04:05")
        store.add_server(ServerRow(id="web-2", env="ci", role="web", image_id="img", fingerprint="fp", address="", port=80))
        assert [r.id for r in store.servers("ci")] == ["web-1", "web-2"]
    finally:
        store.close()


def test_first_commands_side_by_side_create_one_store(tmp_path: Path):
    """Two environments deployed at once from a fresh checkout open the store together: the
    schema is made once, never twice ("table already exists", "database is locked")."""
    opener = "import sys; from pathlib import Path; from phoenixctl.state import StateStore; StateStore(Path(sys.argv[1])).close()"
    for round_ in range(5):
        path = tmp_path / str(round_) / ".phoenix" / "state.db"
        openers = [subprocess.Popen([sys.executable, "-c", opener, str(path)], stderr=subprocess.PIPE, text=True) for _ in range(6)]
        for process in openers:
            _, stderr = process.communicate(timeout=120)
            assert process.returncode == 0, stderr[-2000:]


def test_first_commands_side_by_side_agree_on_one_secrets_key(tmp_path: Path):
    """The project's HMAC key is made by whichever first command gets there; the others read
    that one, whole (a race made `phoenix demo --branch-by-abstraction` fail on FileExistsError)."""
    reader = "import sys; from pathlib import Path; from phoenixctl.boot.secrets import project_key; print(project_key(Path(sys.argv[1])).hex())"
    for round_ in range(5):
        workdir = tmp_path / str(round_) / ".phoenix"
        readers = [subprocess.Popen([sys.executable, "-c", reader, str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                   for _ in range(6)]
        keys = set()
        for process in readers:
            out, err = process.communicate(timeout=120)
            assert process.returncode == 0, err[-2000:]
            keys.add(out.strip())
        assert len(keys) == 1 and len(keys.pop()) == 64
        assert [p.name for p in workdir.iterdir()] == ["secret.key"]  # no staging file left behind
