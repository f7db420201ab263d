"""Backups of an environment's persistent layer: taken consistently, kept content-addressed
with a manifest of checksums in the backup location (`engine/backup_store.py`), verified,
and put back.

A consistent copy without stopping the writers: first a snapshot of every persistent
directory by hard links (names to inodes, in milliseconds; a writer that replaces a file by
renaming a new one over it, as the example's editor does, leaves the linked inode as it was),
SQLite databases copied through SQLite's own backup API (a transaction-consistent copy while
the database is in use); then each snapshotted file is hashed and copied into the store at
leisure, its size and modification time compared before and after, so a file written in
place during the copy is read again (and the backup fails, naming it, when it never holds
still). On clouds the persistent layer is the team's own managed store: `backup.command` is
run and its output recorded with the backup."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
from pathlib import Path

from ..boot.config import persistent_dir
from ..errors import PhoenixError
from .backup_store import BackupCatalogue, BackupInfo, files_checksum, now_utc, sha256_file
from .part import Part

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")
READS = 3  # a file written in place during the copy is read again this many times at most
OUTPUT_KEPT = 4096  # of the hook's output, the bytes recorded


class Backups(Part):
    """Take, list, verify and restore an environment's backups."""

    def catalogue(self, env: str, spec=None) -> BackupCatalogue:
        spec = spec or self.spec
        backup = spec.environments[env].backup
        root = Path(backup.to) if backup.to else self.project.workdir / "backups"
        if not root.is_absolute():
            root = self.project.dir / root
        return BackupCatalogue(root, spec.project, env)

    def persistent_dirs(self, env: str, spec=None) -> dict[str, Path]:
        """The environment's persistent directories by name (those its roles mount)."""
        spec = spec or self.spec
        names = sorted({name for role in spec.environments[env].roles for name in spec.roles[role].persistent})
        return {name: persistent_dir(self.project.workdir, env, name) for name in names}

    def take(self, env: str, op_id: str) -> BackupInfo:
        """A consistent copy of every persistent directory, recorded in the catalogue; then
        the backups beyond `keep` removed."""
        settings = self.spec.environments[env].backup
        catalogue = self.catalogue(env)
        backup_id = f"bk-{now_utc():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
        if not self.persistent_dirs(env) and not settings.command:
            raise PhoenixError(
                f"environment {env} has nothing to back up: none of its roles names a persistent directory and "
                f"environments.{env}.backup.command is not set"
            )
        created_at = now_utc()
        command = self._run_hook(env, backup_id, settings) if settings.command else None
        staging = self.project.workdir / "backup-staging" / backup_id
        try:
            files = self._snapshot(env, staging)
            for relative, entry in files.items():
                catalogue.store_object(staging / relative, entry["sha256"])
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        latest = next(iter(self.store.releases(env, limit=1)), None)
        release = None
        if latest is not None:
            release = {
                "operation_id": latest.operation_id, "kind": latest.kind, "spec_text": latest.spec_text,
                "image_ids": json.loads(latest.image_ids), "fingerprints": json.loads(latest.fingerprints),
            }
        info = BackupInfo(
            id=backup_id, env=env, created_at=created_at, files=files, size=sum(e["size"] for e in files.values()),
            checksum=files_checksum(files), release=release,
            balancers={lb.role: f"{lb.address}:{lb.port}" for lb in self.store.load_balancers(env)}, command=command,
            snapshot="hard-link snapshot, SQLite backup API for databases, SHA-256 per file (by operation " + op_id + ")",
        )
        catalogue.write(info)
        for removed in catalogue.prune(settings.keep):
            self.reporter.info(f"backup {removed} removed (backup.keep: {settings.keep})")
        return info

    def _snapshot(self, env: str, staging: Path) -> dict[str, dict]:
        """Hard links (or a SQLite backup) of every file of every persistent directory under
        `staging`, then each hashed: path -> sha256, size, mode."""
        staging.mkdir(parents=True, mode=0o700)
        linked: list[tuple[str, Path]] = []
        for name, directory in self.persistent_dirs(env).items():
            if not directory.is_dir():
                continue
            for folder, _, names in os.walk(directory):
                for filename in names:
                    source = Path(folder) / filename
                    if source.is_symlink() or not source.is_file() or filename.endswith((".tmp", "-wal", "-shm", "-journal")):
                        continue  # a link points elsewhere; a half-written temp file or a database's journal is no data
                    relative = f"{name}/{source.relative_to(directory).as_posix()}"
                    target = staging / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    if filename.endswith(SQLITE_SUFFIXES) and _is_sqlite(source):
                        _sqlite_copy(source, target)
                    else:
                        try:
                            os.link(source, target)
                        except FileNotFoundError:
                            continue  # replaced between the listing and the link: its successor is in the next backup
                        except OSError:  # another file system, or links refused: a copy, checked below
                            shutil.copy2(source, target)
                    linked.append((relative, target))
        return {relative: _settled_entry(relative, target) for relative, target in linked}

    def _run_hook(self, env: str, backup_id: str, settings) -> dict:
        environment = {**os.environ, "PHOENIX_ENV": env, "PHOENIX_BACKUP_ID": backup_id}
        try:
            result = subprocess.run(
                settings.command, shell=True, cwd=self.project.dir, env=environment, capture_output=True, timeout=settings.timeout,
            )
        except subprocess.TimeoutExpired:
            raise PhoenixError(f"backup {backup_id}: backup.command did not finish within {settings.timeout:g}s") from None
        output = (result.stdout + result.stderr)[-OUTPUT_KEPT:].decode(errors="replace")
        if result.returncode != 0:
            last = output.strip().splitlines()[-1:] or ["no output"]
            raise PhoenixError(f"backup {backup_id}: backup.command exited {result.returncode}: {last[0]}")
        self.reporter.info(f"backup.command: {output.strip().splitlines()[-1] if output.strip() else 'done'}")
        return {"command": settings.command, "exit": result.returncode, "output": output}

    def latest_good(self, env: str, spec=None) -> tuple[BackupInfo, list[str]]:
        """The newest backup whose every file still reads to its checksum, and why each newer
        one was skipped."""
        catalogue = self.catalogue(env, spec)
        skipped = []
        for info in catalogue.list():
            problems = catalogue.problems(info)
            if not problems:
                return info, skipped
            skipped.append(f"backup {info.id} skipped: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        raise PhoenixError(
            f"no good backup of {env} in {catalogue.dir}" + (f" ({'; '.join(skipped)})" if skipped else " (`phoenix backup " + env + "` takes one)")
        )

    def restore_into(self, info: BackupInfo, source_env: str, target_env: str, spec=None) -> int:
        """Put a backup of `source_env` into `target_env`'s persistent directories (the same
        environment, or a scratch copy of it); returns the bytes written."""
        spec = spec or self.spec
        targets = {name: persistent_dir(self.project.workdir, target_env, name) for name in self.persistent_dirs(source_env, spec)}
        return self.catalogue(source_env, spec).restore(info, targets)


def _is_sqlite(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(16) == b"SQLite format 3\x00"


def _sqlite_copy(source: Path, target: Path) -> None:
    """A transaction-consistent copy of a database in use (SQLite's online backup)."""
    live, copy = sqlite3.connect(f"file:{source}?mode=ro", uri=True), sqlite3.connect(target)
    try:
        live.backup(copy)
    finally:
        copy.close()
        live.close()


def _settled_entry(relative: str, path: Path) -> dict:
    """The digest of a file that held still while it was read (size and time the same
    before and after); a file written in place during the copy is read again."""
    for _ in range(READS):
        before = path.stat()
        digest = sha256_file(path)
        after = path.stat()
        if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
            return {"sha256": digest, "size": after.st_size, "mode": after.st_mode & 0o777}
    raise PhoenixError(f"{relative} kept changing while it was copied (written in place {READS} times): no consistent copy")
