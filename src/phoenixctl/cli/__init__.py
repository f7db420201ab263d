"""The `phoenix` command: the click group of every command, and the entry point.

Bad input exits 2 with one line naming the place; other failures exit non-zero with a
one-line reason; a held environment lock exits 3. Never a traceback.

Every command module loads only click at import; each command loads what it uses (the
spec models, the engine, rich) in its own body, so `phoenix --help` and `phoenix CMD --help`
load none of it (tests/test_imports.py keeps that so)."""

from __future__ import annotations

import gc
import os
import sys

import click

from .. import heap
from ..errors import PhoenixError
from . import (
    commands_env, commands_images, commands_logs, commands_project, commands_read, commands_recovery, commands_state, commands_web,
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """Phoenix servers in practice: bake an image, launch fresh servers, gate them, swap
    them in, drain and destroy the old ones."""


COMMAND_MODULES = (commands_project, commands_env, commands_read, commands_images, commands_recovery, commands_state, commands_web, commands_logs)
for _command in (command for module in COMMAND_MODULES for command in module.COMMANDS):
    app.add_command(_command)
del _command


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and an exit code for every failure, never a traceback."""
    # Phoenix's spec models use no pydantic plugin; looking for one reads the metadata of every
    # installed distribution (about 50 ms of each command's start). A user's own setting wins.
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")
    try:
        code = app.main(args=argv, prog_name="phoenix", standalone_mode=False)
        if isinstance(code, int):  # a command's own exit code (ctx.exit / Exit), e.g. `plan`
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        return _fail("phoenix: aborted", 130)
    except click.UsageError as exc:
        where = f" {exc.ctx.command.name}" if exc.ctx and exc.ctx.command and exc.ctx.command.name != "phoenix" else ""
        return _fail(f"phoenix{where}: error: {exc.format_message()}", 2)
    except click.ClickException as exc:
        return _fail(f"phoenix: error: {exc.format_message()}", exc.exit_code)
    except PhoenixError as exc:
        return _fail(f"phoenix: error: {exc}", exc.exit_code)
    except KeyboardInterrupt:
        return _fail("phoenix: interrupted", 130)
    except Exception as exc:  # noqa: BLE001 - a bug of ours: still one line, the traceback on request
        if os.environ.get("PHOENIX_DEBUG"):
            raise
        return _fail(f"phoenix: internal error: {type(exc).__name__}: {exc} (PHOENIX_DEBUG=1 shows the traceback)", 1)
    return 0


def entry() -> None:
    """The `phoenix` script: `main`, with collection deferred until the project is open
    (`heap`), and no collection over the libraries' objects as the process ends (0.05 to
    0.15 s of each command, for nothing: objects are still freed and files closed)."""
    heap.defer_collection()
    code = main()
    gc.freeze()  # what is alive now is left out of every later collection, the last one included
    sys.exit(code)


def _fail(line: str, code: int) -> int:
    from .console import err  # rich loads only when there is something to print

    err.print(line, markup=False)
    return code
