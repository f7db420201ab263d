"""A throwaway PostgreSQL cluster for the tests: made with Debian's `initdb` in a temporary
folder owned by the `postgres` user (initdb and pg_ctl refuse to run as root), listening on
a Unix socket in that folder only, removed at the end. Each test asks it for a database of
its own (`fresh_database`)."""

from __future__ import annotations

import glob
import itertools
import os
import shutil
import subprocess
import tempfile
from pathlib import Path


def postgres_bin() -> Path:
    """Where initdb and pg_ctl are: on PATH, or Debian's /usr/lib/postgresql/<version>/bin."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not versions:
        raise RuntimeError("PostgreSQL is not installed (make setup installs Debian's postgresql package)")
    return Path(versions[-1]).parent


class Cluster:
    def __init__(self) -> None:
        self.bin = postgres_bin()
        self.dir = Path(tempfile.mkdtemp(prefix="phoenix-pg-"))
        self.data = self.dir / "data"
        self.as_owner: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self._names = itertools.count()
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "phoenix", "--no-sync", "-E", "UTF8")
        self.start()

    def _run(self, *argv: str) -> None:
        result = subprocess.run([*self.as_owner, *argv], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {result.stderr.strip()[-2000:]}")

    def start(self) -> None:
        options = f"-k {self.dir} -c listen_addresses='' -c fsync=off -c synchronous_commit=off -c max_connections=200"
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "server.log"), "-o", options, "-w", "-t", "60", "start")

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")

    def start_if_stopped(self) -> None:
        running = subprocess.run([*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True, timeout=60)
        if running.returncode != 0:
            self.start()

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://phoenix@/{database}?host={self.dir}"

    def fresh_database(self) -> str:
        """A new, empty database; its URL (libpq's form, on the Unix socket)."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def remove(self) -> None:
        try:
            self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)
