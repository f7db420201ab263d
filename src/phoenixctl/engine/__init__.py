"""The engine: carries out plans against the drivers (see docs/ARCHITECTURE.md).

`Executor` is the entry point (one method per command); `Project` a spec with its store and
drivers. Inside: `lifecycle` (one server, launch to destroy), `inspect` (what is against
what should be), `balancers`, `releases`, `converge` (an environment to its plan),
`strategies/` (rolling, blue-green, canary), `recovery` (after a crash), `reports`
(read-only), `watch` (the reconcile loop and chaos).

The names below load their module on first use: importing a part of the engine (say
`engine.capabilities`, which `phoenix validate` needs) never loads the executor, the
state store and everything behind them."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .capabilities import check_provider, strategy_refusal
    from .commands import Executor
    from .operation import PHASES, OperationResult, Reporter
    from .project import Project

_HOMES = {
    "Executor": "commands", "OperationResult": "operation", "PHASES": "operation", "Project": "project",
    "Reporter": "operation", "check_provider": "capabilities", "strategy_refusal": "capabilities",
}
__all__ = ["Executor", "OperationResult", "PHASES", "Project", "Reporter", "check_provider", "strategy_refusal"]


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_HOMES[name]}"), name)
