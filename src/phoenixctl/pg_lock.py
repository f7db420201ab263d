"""The environment lock on a shared (PostgreSQL) store, as Terraform's `pg` backend locks:
a session-level advisory lock (`pg_try_advisory_lock`) on a connection of its own, held for
the whole operation. The server releases it when that session ends, a holder killed with
SIGKILL included, so it holds across machines and never goes stale. The holder's host, pid,
operation and start time are a row of `lock_holders`, deleted on a clean release: a row
found by the next holder names one that died holding it."""

from __future__ import annotations

import hashlib

from sqlalchemy import delete, insert, select

from .lock import acquire, describe_holder, holder_record
from .state_location import unavailable
from .state_tables import lock_holders


def lock_key(project: str, env: str) -> int:
    """The advisory lock's 64-bit key: one per project and environment in the database."""
    return int.from_bytes(hashlib.sha256(f"phoenix\0{project}\0{env}".encode()).digest()[:8], "big", signed=True)


class PostgresLock:
    def __init__(self, store, env: str, operation: str, timeout: float = 0.0):
        self.store, self.env, self.operation, self.timeout = store, env, operation, timeout
        self.key = lock_key(store.project, env)
        self.previous_holder: str | None = None
        self._session = None

    def _holder_row(self):
        table = lock_holders
        return select(table.c.host, table.c.pid, table.c.operation, table.c.since).where(
            table.c.project == self.store.project, table.c.env == self.env
        )

    def __enter__(self) -> "PostgresLock":
        import psycopg

        session = self.store.location.connect()  # its own connection: the lock lives as long as it
        try:
            def try_once() -> bool:
                return bool(session.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0])

            def holder() -> str:
                with self.store.transaction() as connection:
                    row = connection.execute(self._holder_row()).mappings().first()
                return describe_holder(row) if row else "another phoenix command (its holder record is not written yet)"

            acquire(self.env, self.timeout, try_once, holder)
            with self.store.transaction() as connection:
                left = connection.execute(self._holder_row()).mappings().first()
                self.previous_holder = describe_holder(left) if left else None  # it died holding the lock
                connection.execute(delete(lock_holders).where(lock_holders.c.project == self.store.project, lock_holders.c.env == self.env))
                connection.execute(insert(lock_holders).values(project=self.store.project, env=self.env, **holder_record(self.operation)))
        except psycopg.Error as exc:
            session.close()
            raise unavailable(self.store.location, exc) from None
        except BaseException:
            session.close()
            raise
        self._session = session
        return self

    def __exit__(self, *exc) -> None:
        session, self._session = self._session, None
        if session is None:
            return
        try:  # a clean release leaves no record; a store gone meanwhile took the lock with it
            with self.store.transaction() as connection:
                connection.execute(delete(lock_holders).where(lock_holders.c.project == self.store.project, lock_holders.c.env == self.env))
            session.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except Exception:  # noqa: BLE001 - the session's end releases the lock anyway
            pass
        finally:
            session.close()
