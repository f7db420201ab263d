"""A statement compiled once for the store's dialect and run as its SQL text.

The journal's UPDATE of one server runs about eight times per replaced server. Through
`Connection.execute`, SQLAlchemy rebuilds its cache key, looks the compiled form up and
processes the parameters at every run: twice the cost of the statement itself, and the
largest share of Phoenix's CPU in a rotation. Here the statement is compiled once, each
parameter's conversion taken from its column type for the dialect (SQLite stores datetimes
as text, booleans as integers; psycopg takes them as they are), and each run goes through
`Connection.exec_driver_sql`, inside the store's own transaction as before."""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy.engine import Connection, Dialect


class Prepared:
    def __init__(self, statement, dialect: Dialect):
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        # qmark (SQLite) binds by position, pyformat (psycopg) by name
        self.order: tuple[str, ...] | None = tuple(compiled.positiontup) if compiled.positional else None
        self.convert: dict[str, Callable[[Any], Any]] = {}
        for name, bind in compiled.binds.items():
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            if process is not None:
                self.convert[name] = process

    def run(self, connection: Connection, params: dict[str, Any]) -> None:
        convert = self.convert
        ready = {name: convert[name](value) if name in convert else value for name, value in params.items()}
        connection.exec_driver_sql(self.sql, tuple(ready[name] for name in self.order) if self.order is not None else ready)
