"""Where a project's state lives: the SQLite file beside the spec, or a PostgreSQL database
shared by every runner (`state: {url: ...}` in the spec, or `PHOENIX_STATE_URL`, which wins).

The URL is libpq's own (`postgresql://user:password@host:port/db`, `?host=/socket/dir`),
handed to psycopg as it is, so whatever `psql` takes works (PGPASSWORD, ~/.pgpass, service
files). Its password is never shown: `display` is what status, errors and logs name."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit

from .errors import PhoenixError, SpecError

ENV_VARIABLE = "PHOENIX_STATE_URL"
POSTGRES_SCHEMES = ("postgresql", "postgres")
# A small pool per command: a rotation's threads take turns on a few connections, and a
# connection that died with a server restart is noticed (pre-ping) instead of used.
POOL = {"pool_size": 4, "max_overflow": 4, "pool_timeout": 30, "pool_pre_ping": True, "pool_recycle": 1800}
CONNECT_TIMEOUT = 5  # seconds; an unreachable server ends the command soon, with one line


class StateUnavailable(PhoenixError):
    """The state store could not be reached or answered with an error (a restart, a lost
    network): the command ends here; the environment keeps serving; the next one recovers."""


@dataclass(frozen=True)
class StateLocation:
    """A SQLite file (`path`) or a PostgreSQL URL (`url`, with its password)."""

    path: Path | None = None
    url: str | None = None

    @property
    def shared(self) -> bool:
        """True for PostgreSQL: other runners, on other machines, read and write it too."""
        return self.url is not None

    @property
    def display(self) -> str:
        """Where the state lives, without a password (status, errors, logs)."""
        return redacted(self.url) if self.url else str(self.path)

    def as_json(self) -> dict:
        return {"backend": "postgresql" if self.shared else "sqlite", "location": self.display}

    def connect(self):
        """A new psycopg connection of its own (the environment lock's, held for an operation)."""
        import psycopg

        extra = {} if "connect_timeout" in self.url else {"connect_timeout": CONNECT_TIMEOUT}
        try:
            return psycopg.connect(self.url, autocommit=True, application_name="phoenix", **extra)
        except psycopg.Error as exc:
            raise unavailable(self, exc) from None

    def engine(self):
        """The SQLAlchemy engine: one SQLite file (WAL), or a small bounded PostgreSQL pool."""
        from sqlalchemy import create_engine

        if not self.shared:
            return create_engine(f"sqlite:///{self.path}", connect_args={"check_same_thread": False, "timeout": 30})
        try:
            import psycopg  # noqa: F401 - PostgreSQL's driver, an extra
        except ImportError:
            raise PhoenixError(
                f"the state store {self.display} needs psycopg: pip install 'phoenixctl[postgresql]'"
            ) from None
        return create_engine("postgresql+psycopg://", creator=self._pooled_connection, **POOL)

    def _pooled_connection(self):
        import psycopg

        extra = {} if "connect_timeout" in self.url else {"connect_timeout": CONNECT_TIMEOUT}
        return psycopg.connect(self.url, application_name="phoenix", **extra)

    def fleet_key(self) -> str:
        """A short name of this database, the same on every runner (no password in it)."""
        return hashlib.sha256(self.display.encode()).hexdigest()[:10]


def redacted(url: str) -> str:
    """`url` without its password (in the user part or as `?password=`)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    if netloc[1]:
        user = netloc[0].partition(":")[0]
        netloc = f"{user}@{netloc[2]}"
    else:
        netloc = parts.netloc
    query = urlencode([(key, value) for key, value in parse_qsl(parts.query, keep_blank_values=True) if key != "password"], safe="/")
    # built by hand: urlunsplit drops the empty host of `postgresql:///db?host=/socket/dir`
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "") + (f"#{parts.fragment}" if parts.fragment else "")


def parse_location(text: str, where: str) -> StateLocation:
    """A URL as a user gives it: `postgresql://...`, `sqlite:///path/state.db`, or a path."""
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme in POSTGRES_SCHEMES:
        return StateLocation(url=text)  # libpq reads the rest (and its defaults: PGHOST, PGUSER, ...)
    if scheme == "sqlite":
        path = text[len("sqlite:///"):] if text.lower().startswith("sqlite:///") else ""
        if not path.startswith("/"):
            raise SpecError(f"{where}: a sqlite URL takes an absolute path (sqlite:////abs/state.db), not {text!r}")
        return StateLocation(path=Path(path))
    if scheme:
        raise SpecError(f"{where}: unknown state store {scheme!r} in {redacted(text)} (postgresql://... or sqlite:///...)")
    return StateLocation(path=Path(text).absolute())


def project_location(spec_url: str | None, workdir: Path, spec_name: str) -> StateLocation:
    """Where this project's state lives: PHOENIX_STATE_URL, else the spec's `state.url`, else
    `.phoenix/state.db`."""
    from_env = os.environ.get(ENV_VARIABLE, "").strip()
    if from_env:
        return parse_location(from_env, ENV_VARIABLE)
    if spec_url:
        return parse_location(spec_url, f"{spec_name}: state.url")
    return StateLocation(path=workdir / "state.db")


def unavailable(location: StateLocation, exc: BaseException) -> StateUnavailable:
    """One line: where, and the driver's first line of why (libpq never prints a password)."""
    reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
    return StateUnavailable(f"state store {location.display} unavailable: {reason[0] if reason else type(exc).__name__}")


def local_fleet_dir(location: StateLocation, project: str) -> Path:
    """The local provider's files (servers, balancers, images) for a shared store: one folder
    per project and database on this machine, which every runner here uses, since the
    servers these runners share live on this machine. PHOENIX_LOCAL_HOME moves it."""
    base = os.environ.get("PHOENIX_LOCAL_HOME")
    if not base:
        base = "/var/lib/phoenix" if os.geteuid() == 0 else os.path.join(
            os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state"), "phoenix")
    return Path(base) / f"{project}-{location.fleet_key()}"
