"""The `phoenix` process's garbage collector: quiet while a command loads its libraries.

Importing SQLAlchemy, pydantic and the spec models makes hundreds of thousands of objects
that live as long as the process. Each full collection walks all of them, and CPython runs
several while they are made and one more at exit: 0.1 to 0.2 s of a command that plans
10,000 servers. So the script defers collection until its project is open, then freezes
what exists (left out of every later collection) and collects as usual from there on. Code
that calls `cli.main` itself (the tests) keeps Python's default behaviour."""

from __future__ import annotations

import gc

_deferred = False


def defer_collection() -> None:
    global _deferred
    _deferred = True
    gc.disable()


def settle() -> None:
    """The libraries are loaded: what they made is kept out of collections from now on."""
    global _deferred
    if _deferred:
        _deferred = False
        gc.freeze()
        gc.enable()
