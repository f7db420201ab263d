"""What the commands share: their options, and the project's executor with its progress bar.

Only click is loaded here: the engine, rich's progress bar and the printing helpers load
when a command first asks for an executor, so `phoenix --help` stays light."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import click

if TYPE_CHECKING:
    from ..engine import Executor


spec_option = click.option(
    "--file", "-f", "spec_file", type=click.Path(path_type=Path), default=None, help="The spec file (default: ./phoenix.yaml)"
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output for CI")
env_argument = click.argument("env")


lock_timeout_option = click.option(
    "--lock-timeout", type=click.FloatRange(min=0), default=0.0, show_default=True,
    help="Seconds to wait for another command on the environment (then exit 3)",
)


dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan (servers, batches, reasons) and change nothing")
discard_state_option = click.option(
    "--discard-state", is_flag=True, help="Retire servers even when they hold files written outside scratch and persistent mounts"
)


@contextmanager
def executor_for(
    spec_file: Path | None, description: str, quiet: bool = False, lock_timeout: float = 0.0, env: str | None = None
) -> Iterator[Executor]:
    """The project's executor; `env`, when given, is checked first, the same way for every command."""
    from ..engine import Executor, Project

    project = Project(spec_file)
    try:
        if env is not None:
            project.loaded.environment(env)
    except BaseException:
        project.close()
        raise
    if quiet:  # nothing to show while it works: rich is not even loaded
        from ..engine.operation import Reporter

        try:
            yield Executor(project, Reporter(), lock_timeout)
        finally:
            project.close()
        return
    from .render import RichReporter, err

    progress = None
    if err.is_terminal:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        progress = Progress(
            SpinnerColumn(), TextColumn(description, markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
        )
    try:
        if progress:
            with progress:
                yield Executor(project, RichReporter(progress), lock_timeout)
        else:
            yield Executor(project, RichReporter(None), lock_timeout)
    finally:
        project.close()
