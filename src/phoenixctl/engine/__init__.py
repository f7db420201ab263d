"""The engine: carries out plans against the drivers (see docs/ARCHITECTURE.md).

`Executor` is the entry point (one method per command); `Project` a spec with its store and
drivers. Inside: `lifecycle` (one server, launch to destroy), `inspect` (what is against
what should be), `balancers`, `releases`, `converge` (an environment to its plan),
`strategies/` (rolling, blue-green, canary), `recovery` (after a crash), `reports`
(read-only), `watch` (the reconcile loop and chaos)."""

from .capabilities import check_provider, strategy_refusal
from .commands import Executor
from .operation import PHASES, OperationResult, Reporter
from .project import Project

__all__ = ["Executor", "OperationResult", "PHASES", "Project", "Reporter", "check_provider", "strategy_refusal"]
