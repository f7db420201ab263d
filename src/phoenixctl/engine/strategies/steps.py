"""The narrow set of steps every strategy works with, and what they share."""

from __future__ import annotations

from typing import Callable, Protocol

from ...boot.config import BootConfig
from ...deadline import Deadline
from ...plan import Batch, RolePlan
from ...state import LoadBalancerRow, ServerRow


class RolloutSteps(Protocol):
    """What a strategy may do: launch and gate groups, run batches, retire, discard, watch
    servers, poll at the provider's pace. (The engine's Lifecycle implements it.)"""

    spec: object
    store: object
    lbs: object
    compute: object
    reporter: object

    def launch_group(self, op, env: str, role: str, boot: BootConfig, count: int) -> list[ServerRow]: ...
    def run_batch(self, op, env: str, role: str, batch: Batch, lb: LoadBalancerRow, boot: BootConfig) -> list[ServerRow]: ...
    def retire_all(self, op, env: str, role: str, server_ids: list[str], lb: LoadBalancerRow) -> None: ...
    def retire_standby(self, op, env: str, role: str, lb: LoadBalancerRow) -> None: ...
    def remove_dead(self, op, env: str, lb: LoadBalancerRow, plan: RolePlan) -> None: ...
    def discard(self, op, env: str, lb: LoadBalancerRow, rows: list[ServerRow]) -> None: ...
    def switch(self, lb: LoadBalancerRow, enable: list[str], disable: list[str]) -> None: ...
    def check_alive(self, row: ServerRow, gate: str) -> None: ...
    def replan(self, env: str, role: str, boot: BootConfig) -> RolePlan: ...
    def poll(self, deadline: Deadline, check: Callable, interval: float, max_interval: float): ...


def fill_missing(steps: RolloutSteps, op, env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig) -> None:
    """Servers simply missing are launched as usual before any group is replaced."""
    for batch in plan.batches:
        if not batch.retire_first and not batch.retire_after:
            steps.run_batch(op, env, plan.role, batch, lb, boot)
