"""Reading the project's aggregator: its records (JSON lines per environment / role / server /
day under `.phoenix/logs/.aggregator/records/`), filtered, in time order, across server
generations (a server's records stay after it is destroyed), followed as they are written;
and retention (`logs.keep`): days older than that removed, with the servers' own log files
and their lookup rows. Reads files only: no daemon needed, nothing of the engine."""

from __future__ import annotations

import heapq
import json
import os
import time
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Iterator

from .aggregator import HOME


@dataclass(frozen=True)
class Record:
    time: datetime
    env: str
    role: str
    server: str
    release: str
    msg: str

    def as_json(self) -> dict:
        return {"time": self.time.isoformat(), "env": self.env, "role": self.role, "server": self.server,
                "release": self.release, "msg": self.msg}

    def line(self) -> str:
        return f"{self.time.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%S.%fZ} {self.server} {self.role} {self.release or '-'} {self.msg}"


@dataclass(frozen=True)
class Filters:
    role: str | None = None
    server: str | None = None
    release: str | None = None
    since: datetime | None = None
    grep: str | None = None

    def match(self, record: Record) -> bool:
        return (
            (self.role is None or record.role == self.role)
            and (self.server is None or record.server == self.server)
            and (self.release is None or record.release == self.release)
            and (self.since is None or record.time >= self.since)
            and (self.grep is None or self.grep in record.msg)
        )


class Records:
    def __init__(self, logs_dir: Path):
        self.logs_dir = logs_dir
        self.root = logs_dir / HOME / "records"

    def files(self, env: str, filters: Filters) -> list[Path]:
        """The day files that may hold matching records (by role, server and day)."""
        base = self.root / env
        found = base.glob(f"{filters.role or '*'}/{filters.server or '*'}/*.jsonl")
        oldest = f"{filters.since - timedelta(days=1):%Y-%m-%d}" if filters.since else ""  # a day early: days are local time
        return sorted(path for path in found if path.stem >= oldest)

    def read(self, env: str, filters: Filters) -> list[Record]:
        """Every matching record, oldest first (each file is in order: merged by time)."""
        streams = [[r for r in _parse(path.read_bytes().splitlines()) if filters.match(r)] for path in self.files(env, filters)]
        return list(heapq.merge(*streams, key=lambda r: r.time))

    def follow(self, env: str, filters: Filters, interval: float = 0.2, deadline: float | None = None) -> Iterator[Record]:
        """What is written from now on, new servers' files included, until `deadline`
        (a monotonic time; None: until interrupted). Each poll's records in time order."""
        offsets = {path: path.stat().st_size for path in self.files(env, filters)}
        while deadline is None or time.monotonic() < deadline:
            fresh: list[Record] = []
            for path in self.files(env, filters):
                start = offsets.get(path, 0)
                try:
                    with path.open("rb") as handle:
                        handle.seek(start)
                        data = handle.read()
                except OSError:
                    continue
                complete = data[: data.rfind(b"\n") + 1]  # a line being written waits for the next poll
                offsets[path] = start + len(complete)
                fresh += [r for r in _parse(complete.splitlines()) if filters.match(r)]
            yield from sorted(fresh, key=lambda r: r.time)
            time.sleep(interval)

    def prune(self, keep: dict[str, float], now: float | None = None) -> list[Path]:
        """Remove each environment's records (days) and servers' own log files older than its
        `keep` (seconds); returns what was removed."""
        now = now or time.time()
        removed = []
        for env, seconds in keep.items():
            cutoff = datetime.fromtimestamp(now - seconds, timezone.utc)
            for day in (self.root / env).glob("*/*/*.jsonl"):
                try:
                    ends = datetime.strptime(day.stem, "%Y-%m-%d").replace(tzinfo=timezone.utc) + timedelta(days=1)
                except ValueError:
                    continue
                if ends < cutoff:
                    day.unlink(missing_ok=True)
                    removed.append(day)
            for own in (self.logs_dir / env).glob("*/*.log"):
                live = (self.logs_dir.parent / "servers" / env / own.stem).exists()  # a quiet server still writes to it
                if not live and own.stat().st_mtime < now - seconds:
                    own.unlink(missing_ok=True)
                    removed.append(own)
            for folder in sorted((self.root / env).glob("*/*"), reverse=True):
                if folder.is_dir() and not any(folder.iterdir()):
                    os.rmdir(folder)
        return removed


def _parse(lines: list[bytes]) -> Iterator[Record]:
    for raw in lines:
        try:
            fields = json.loads(raw)
            stamp = datetime.fromisoformat(fields["time"].replace("Z", "+00:00"))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue  # not a record of ours (a half line left by a crash)
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=timezone.utc)
        yield Record(stamp, str(fields.get("env", "")), str(fields.get("role", "")), str(fields.get("server", "")),
                     str(fields.get("release", "")), str(fields.get("msg", "")))
