"""What `phoenix` prints: the progress reporter, results, plans and phase tables.

Loaded by the commands that run the engine (it imports the engine's types); the consoles
themselves are in `console.py`, which every command may load without the engine."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text

from ..engine.operation import PHASES, OperationResult, Reporter
from ..engine.report_types import ConvergePlan, OperationReport, SwitchPlan
from .console import err, out
from .json_output import print_json

if TYPE_CHECKING:
    from rich.progress import Progress
    from rich.table import Table


class RichReporter(Reporter):
    """Progress bar and event lines on stderr, so stdout stays clean for --json."""

    def __init__(self, progress: Progress | None):
        self.progress = progress
        self.task = progress.add_task("working", total=0) if progress else None

    def info(self, message: str) -> None:
        # plain text: a server's output quoted in it may hold [brackets]
        (self.progress.console if self.progress else err).print(f"  {message}", markup=False)

    def planned(self, steps: int) -> None:
        if self.progress and steps:
            total = self.progress.tasks[0].total or 0
            self.progress.update(self.task, total=total + steps)

    def advanced(self, steps: int = 1) -> None:
        if self.progress:
            self.progress.advance(self.task, steps)


def result_json(result: OperationResult) -> dict:
    """What --json prints of one operation's result."""
    return {
        "operation": result.id,
        "environment": result.env,
        "kind": result.kind,
        "launched": result.launched,
        "retired": result.retired,
        "removed": result.removed,
        "destroyed": result.destroyed,
        "updated": result.updated,
        "baked": result.baked,
        "seconds": round(result.seconds, 3),
        "paused": result.paused,
        "recovered": result.recovered,
    }


def print_result(result: OperationResult, as_json: bool) -> None:
    if as_json:
        print_json(result_json(result))
    elif result.changed or result.baked:
        out.print(f"{result.kind} {result.env}: {result.summary()} in {result.seconds:.1f}s ({result.id})")
        if result.paused:
            out.print(f"paused after the canary: `phoenix promote {result.env}` or `phoenix rollback {result.env}`")
    else:
        out.print(f"{result.kind} {result.env}: nothing to change ({result.seconds:.1f}s)")


def print_plan(plan: ConvergePlan | SwitchPlan, as_json: bool) -> None:
    if as_json:
        print_json(plan.as_json())
        return
    head = f"{plan.kind} {plan.environment}" + (f" ({plan.strategy})" if isinstance(plan, ConvergePlan) else "")
    out.print(Text.assemble(("plan", "bold"), f": {head}" + (f": {plan.action}" if plan.action is not None else "") + " — nothing was changed"))
    if isinstance(plan, SwitchPlan):
        out.print(f"  servers: {', '.join(plan.servers) or 'none'}")
        return
    for role in plan.roles:
        if not role.changes and not any("launch" in step and "launch 0" not in step for step in role.steps):
            out.print(f"  {role.role}: " + (role.cannot_tell or f"nothing to change ({role.desired} wanted)"))
            continue
        out.print(f"  {role.role}: {role.desired} wanted, image {role.image}")
        for item in role.changes:
            out.print(f"    {item.server}: {item.reason}")
        for step in role.steps:
            out.print(f"    - {step}")
        if role.cannot_tell:
            out.print(f"    {role.cannot_tell}")


def phase_table(operations: list[OperationReport], title: str) -> Table:
    """One row per operation; per phase the slowest server's time (×servers)."""
    from rich.table import Table  # here: only tables need it, and --json never prints one

    table = Table(title=title, title_justify="left")
    shown = [p for p in PHASES if any(p in op.phases for op in operations)]  # no empty columns
    live = ("time to live",) if any(op.time_to_live_s is not None for op in operations) else ()
    for column in ("operation", "kind", "status", "started", "total", *shown, *live, "summary"):
        # ids and times are never cut (they are looked up and pasted); the summary wraps instead
        table.add_column(
            column, justify="right" if column in PHASES or column in ("total", "time to live") else "left",
            no_wrap=column != "summary", min_width=None if column == "summary" else len(column),
        )
    for op in operations:
        cells = [f"{op.phases[p].max_s:.2f}s ×{op.phases[p].count}" if p in op.phases else "" for p in shown]
        total = f"{op.seconds:.2f}s" if op.seconds is not None else "running"
        to_live = [f"{op.time_to_live_s:.2f}s" if op.time_to_live_s is not None else ""] if live else []
        table.add_row(op.id, op.kind, op.status, op.started_at, total, *cells, *to_live, op.summary)
    return table
