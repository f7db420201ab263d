"""Rolling: batches of `max_surge + max_unavailable`, launch before terminate (the arithmetic
is the plan's, `plan.rolling_batches`)."""

from __future__ import annotations

from ...boot.config import BootConfig
from ...plan import RolePlan
from ...spec import RolloutSpec
from ...state import LoadBalancerRow
from .steps import RolloutSteps


def run(steps: RolloutSteps, op, env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig, pause: bool = False) -> bool:
    """Every batch in order: retire first what may go first, launch, swap in, retire the rest."""
    for batch in plan.batches:
        steps.run_batch(op, env, plan.role, batch, lb, boot)
    return False


def describe(plan: RolePlan, desired: int, rollout: RolloutSpec) -> list[str]:
    return [
        f"batch {i + 1}: retire {list(b.retire_first) or 'none'} first, launch {b.launch}, then retire {list(b.retire_after) or 'none'}"
        for i, b in enumerate(plan.batches)
    ]
