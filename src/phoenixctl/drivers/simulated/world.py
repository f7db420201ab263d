"""The simulated world: each environment's servers and balancer members, kept in files under
`.phoenix/simulated/` so that successive commands see the same fleet.

One environment, two files: `<env>.json`, a snapshot (`{"format": 1, ...}`), and
`<env>.journal`, one JSON line per change made since. A command loads an environment once,
on first use (the snapshot, then the journal replayed); appends each change to the journal as
it makes it (one short write, whatever the fleet's size: a `kill -9` loses nothing already
done, as a cloud keeps the servers a killed command launched); and when it ends folds the
journal into a new snapshot (a temporary file renamed over the old one) and empties the
journal. Each environment has files of its own, so commands on different environments never
touch each other's; within one environment (the command holding its lock, `chaos` beside it,
`status` reading) a lock on the journal file orders loads, appends and folds."""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Iterator

from ...errors import PhoenixError

FORMAT = 1


@dataclass
class Fleet:
    """One environment as simulated. A server: {role, launched, listening_at, healthy_at,
    alive} (times in seconds since the epoch); a member: {state: ready|drain, idle_at}."""

    servers: dict[str, dict] = field(default_factory=dict)
    balancers: dict[str, dict[str, dict]] = field(default_factory=dict)  # role -> member name -> member

    def apply(self, change: list) -> None:
        """One change as journaled: ["server", id, record], ["balancer", role, {}] or
        ["member", role, name, record]; a record of None removes. Replaying one twice is harmless."""
        kind, *key, record = change
        if kind == "balancer":
            if record is None:
                self.balancers.pop(key[0], None)
            else:
                self.balancers.setdefault(key[0], {})
            return
        table = self.servers if kind == "server" else self.balancers.get(key[0])
        name = key[-1]
        if table is None:
            return
        if record is None:
            table.pop(name, None)
        else:
            table[name] = record


class EnvironmentFiles:
    """One environment's snapshot and journal (the journal's lock orders both)."""

    def __init__(self, folder: Path, env: str):
        self.snapshot = folder / f"{env}.json"
        self.fd = os.open(folder / f"{env}.journal", os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.size = 0  # journal bytes this process has accounted for
        self.stamp: tuple | None = None  # the snapshot it read: another process folded when it differs
        self.changed = False

    @contextmanager
    def _locked(self, mode: int) -> Iterator[None]:
        fcntl.flock(self.fd, mode)
        try:
            yield
        finally:
            fcntl.flock(self.fd, fcntl.LOCK_UN)

    def _stamp(self) -> tuple | None:
        try:
            stat = self.snapshot.stat()
        except FileNotFoundError:
            return None
        return stat.st_ino, stat.st_mtime_ns, stat.st_size

    def load(self) -> Fleet:
        with self._locked(fcntl.LOCK_SH):
            return self._read()

    def _read(self) -> Fleet:
        fleet = Fleet()
        self.stamp = self._stamp()
        if self.stamp is not None:
            try:
                data = json.loads(self.snapshot.read_bytes())
                if data.get("format") != FORMAT:
                    raise ValueError(f"format {data.get('format')!r}")
                fleet.servers, fleet.balancers = data["servers"], data["balancers"]
            except (ValueError, KeyError, AttributeError) as exc:
                raise PhoenixError(
                    f"{self.snapshot}: not a simulated world of format {FORMAT} ({exc}); remove it to start the simulation afresh"
                ) from None
        journal = os.pread(self.fd, os.fstat(self.fd).st_size, 0)
        for line in journal.splitlines():
            try:
                change = json.loads(line)
            except ValueError:
                continue  # the torn last line of a write cut short
            fleet.apply(change)
        self.size = len(journal)
        return fleet

    def append(self, change: list) -> None:
        line = (json.dumps(change, separators=(",", ":")) + "\n").encode()
        with self._locked(fcntl.LOCK_EX):
            os.write(self.fd, line)
        self.size += len(line)
        self.changed = True

    def fold(self, fleet: Fleet) -> None:
        """After changes of ours: the journal into a new snapshot, then emptied."""
        try:
            if not self.changed:
                return
            with self._locked(fcntl.LOCK_EX):
                if os.fstat(self.fd).st_size != self.size or self._stamp() != self.stamp:
                    fleet = self._read()  # another process wrote too: the files hold both
                data = {"format": FORMAT, "servers": fleet.servers, "balancers": fleet.balancers}
                temporary = self.snapshot.with_name(f".{self.snapshot.name}.{os.getpid()}.tmp")
                temporary.write_text(json.dumps(data, separators=(",", ":")))
                os.replace(temporary, self.snapshot)
                os.ftruncate(self.fd, 0)
        finally:
            os.close(self.fd)


class World:
    """A project's simulated environments as one process sees them, shared by its compute and
    balancer drivers (`open`/`close` count them); each environment loaded on first use."""

    _open: ClassVar[dict[str, "World"]] = {}
    _open_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.fleets: dict[str, Fleet] = {}
        self.files: dict[str, EnvironmentFiles] = {}
        self.users = 0
        self.lock = threading.RLock()  # the drivers' threads change it side by side

    @classmethod
    def open(cls, workdir: Path) -> "World":
        with cls._open_lock:
            world = cls._open.get(str(workdir)) or cls._open.setdefault(str(workdir), cls(workdir))
            world.users += 1
            return world

    def close(self) -> None:
        """The last user gone: each environment changed here folded into its snapshot."""
        with self._open_lock:
            self.users -= 1
            if self.users > 0:
                return
            self._open.pop(str(self.workdir), None)
        with self.lock:
            for env, files in self.files.items():
                files.fold(self.fleets[env])
            self.files.clear()

    def fleet(self, env: str) -> Fleet:
        fleet = self.fleets.get(env)
        if fleet is None:
            with self.lock:
                if env not in self.fleets:
                    self.fleets[env] = self._load(env)
                fleet = self.fleets[env]
        return fleet

    def _load(self, env: str) -> Fleet:
        folder = self.workdir / "simulated"
        folder.mkdir(parents=True, exist_ok=True)
        files = EnvironmentFiles(folder, env)
        try:
            fleet = files.load()
        except BaseException:
            os.close(files.fd)
            raise
        self.files[env] = files
        return fleet

    def change(self, env: str, *change) -> None:
        with self.lock:
            self.fleet(env).apply(list(change))
            self._journal(env, list(change))

    def _journal(self, env: str, change: list) -> None:
        self.files[env].append(change)

    # --- the model: what a server or member is doing at a moment --------------------------
    def listening(self, server: dict | None, now: float) -> bool:
        return bool(server and server["alive"] and now >= server["listening_at"])

    def healthy(self, server: dict | None, now: float) -> bool:
        return bool(server and server["alive"] and now >= server["healthy_at"])

    def health_answer(self, server: dict | None, now: float) -> str:
        """What a health check would get: '' when healthy."""
        if not server or not server["alive"]:
            return "no answer (the simulated server is gone)"
        if not self.listening(server, now):
            return "ConnectError"
        return "" if self.healthy(server, now) else "HTTP 503"

    @staticmethod
    def sessions(member: dict, now: float) -> int:
        """Requests still open on a member: one until its modelled drain has elapsed."""
        return 1 if member["state"] == "drain" and now < member["idle_at"] else 0
