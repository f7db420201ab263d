"""Where an environment's backups live: a catalogue of manifests beside content-addressed
objects, in the backup location (`<to>/<project>/<env>/`), owing nothing to the state store.

    manifests/<id>.json   one per backup: when, which files (path -> sha256, size, mode),
                          their total size and count, the manifest's own checksum, the
                          release the environment served (its spec text, image ids,
                          fingerprints), its balancers' addresses, the hook's output
    objects/ab/abcdef...  each file's content once, by its SHA-256 (a backup costs only the
                          files that changed since the one before)

The catalogue is the record of the backups *and* what survives the loss of everything else:
`rebuild` reads the release to rebuild and the addresses to bring the balancers back at from
the newest manifest whose every object still hashes to its name."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from ..errors import PhoenixError, SpecError

CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def files_checksum(files: dict[str, dict]) -> str:
    """The checksum of a backup: of its file list (path, content digest, mode), canonically."""
    return hashlib.sha256(json.dumps(files, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class BackupInfo:
    """One backup, as its manifest says."""

    id: str
    env: str
    created_at: datetime  # naive UTC, like the state store's times
    files: dict[str, dict]  # "content/a.txt" -> {"sha256", "size", "mode"}
    size: int
    checksum: str
    release: dict | None = None  # operation_id, kind, spec_text, image_ids, fingerprints
    balancers: dict[str, str] = field(default_factory=dict)  # role -> "address:port"
    command: dict | None = None  # the hook: command, exit code, output
    snapshot: str = ""

    def as_json(self) -> dict:
        release = None
        if self.release:
            release = {key: self.release[key] for key in ("operation_id", "kind", "image_ids") if key in self.release}
        return {
            "id": self.id, "environment": self.env, "created_at": self.created_at.isoformat(timespec="seconds") + "Z",
            "files": len(self.files), "size": self.size, "checksum": self.checksum, "release": release,
            "balancers": self.balancers, "command": self.command, "snapshot": self.snapshot,
        }

    def manifest(self) -> dict:
        return {**self.as_json(), "created_at": self.created_at.isoformat(), "files": self.files, "release": self.release}

    @classmethod
    def from_manifest(cls, data: dict) -> "BackupInfo":
        return cls(
            id=data["id"], env=data["environment"], created_at=datetime.fromisoformat(data["created_at"]), files=data["files"],
            size=data["size"], checksum=data["checksum"], release=data.get("release"), balancers=data.get("balancers") or {},
            command=data.get("command"), snapshot=data.get("snapshot", ""),
        )


class BackupCatalogue:
    """One environment's backups in one location."""

    def __init__(self, root: Path, project: str, env: str):
        self.root = root
        self.env = env
        self.dir = root / project / env
        self.objects = self.dir / "objects"
        self.manifests = self.dir / "manifests"

    def list(self) -> list[BackupInfo]:
        """Every readable backup, newest first (a manifest that cannot be read is left out:
        `problems` names it)."""
        found = []
        for path in sorted(self.manifests.glob("*.json")) if self.manifests.is_dir() else []:
            try:
                found.append(BackupInfo.from_manifest(json.loads(path.read_text())))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return sorted(found, key=lambda info: (info.created_at, info.id), reverse=True)

    def get(self, backup_id: str) -> BackupInfo:
        path = self.manifests / f"{backup_id}.json"
        if "/" in backup_id or not path.is_file():
            known = ", ".join(info.id for info in self.list()[:5]) or "none"
            raise SpecError(f"no backup {backup_id} of {self.env} in {self.dir} (newest: {known}; `phoenix backup {self.env} --list`)")
        try:
            return BackupInfo.from_manifest(json.loads(path.read_text()))
        except (ValueError, KeyError, TypeError) as exc:
            raise PhoenixError(f"backup {backup_id}: its manifest {path} cannot be read ({type(exc).__name__}): corrupt") from None

    def object_path(self, digest: str) -> Path:
        return self.objects / digest[:2] / digest

    def store_object(self, source: Path, digest: str) -> None:
        """Copy `source` in under its digest, unless an object of that digest is there already."""
        target = self.object_path(digest)
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f".{digest}.partial")
        shutil.copyfile(source, partial)
        os.chmod(partial, 0o600)
        os.replace(partial, target)  # an object is there whole, or not at all

    def write(self, info: BackupInfo) -> None:
        self.manifests.mkdir(parents=True, exist_ok=True)
        path = self.manifests / f"{info.id}.json"
        partial = path.with_name(f".{info.id}.partial")
        partial.write_text(json.dumps(info.manifest(), indent=1, sort_keys=True))
        os.replace(partial, path)

    def problems(self, info: BackupInfo) -> list[str]:
        """What is wrong with a backup, every object read again ([] when it is whole)."""
        found = []
        if files_checksum(info.files) != info.checksum:
            found.append(f"its manifest's checksum {info.checksum[:12]} does not match its file list")
        for name, entry in sorted(info.files.items()):
            path = self.object_path(entry["sha256"])
            try:
                actual = sha256_file(path)
            except OSError:
                found.append(f"{name}: its content ({entry['sha256'][:12]}) is missing")
                continue
            if actual != entry["sha256"]:
                found.append(f"{name}: its content reads {actual[:12]}, not {entry['sha256'][:12]}")
        return found

    def restore(self, info: BackupInfo, targets: dict[str, Path]) -> int:
        """Put the backup's files into `targets` (persistent directory name -> path), each
        directory emptied first; every file checked against its digest as it is copied.
        Returns the bytes written."""
        written = 0
        for name, target in targets.items():
            staging = target.with_name(f".{target.name}.restoring")
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir(parents=True)
            for path, entry in sorted(info.files.items()):
                top, _, rest = path.partition("/")
                if top != name or not rest:
                    continue
                destination = staging / rest
                if ".." in Path(rest).parts:
                    raise PhoenixError(f"backup {info.id}: {path} points outside its directory: refused")
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.object_path(entry["sha256"]), destination)
                if sha256_file(destination) != entry["sha256"]:
                    shutil.rmtree(staging, ignore_errors=True)
                    raise PhoenixError(f"backup {info.id}: {path} did not restore to its checksum {entry['sha256'][:12]}: corrupt")
                os.chmod(destination, entry.get("mode", 0o644))
                written += entry["size"]
            # the old directory goes only once the new one is whole beside it
            old = target.with_name(f".{target.name}.replaced")
            shutil.rmtree(old, ignore_errors=True)
            if target.exists():
                os.replace(target, old)
            os.replace(staging, target)
            shutil.rmtree(old, ignore_errors=True)
        return written

    def prune(self, keep: int) -> list[str]:
        """Keep the newest `keep` backups; remove the others' manifests, then every object no
        kept manifest names. Returns the ids removed."""
        backups = self.list()
        removed = [info.id for info in backups[keep:]]
        for backup_id in removed:
            (self.manifests / f"{backup_id}.json").unlink(missing_ok=True)
        if removed:
            needed = {entry["sha256"] for info in backups[:keep] for entry in info.files.values()}
            for path in self.objects.glob("*/*"):
                if path.name not in needed:
                    path.unlink(missing_ok=True)
        return removed


def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)
