"""Deployment strategies, one module each (rolling, blue-green, canary), all working through
one narrow set of steps (`steps.RolloutSteps`, which the engine's lifecycle provides). Each
both runs and describes itself, so `--dry-run` output comes from the code that acts."""

from __future__ import annotations

from types import ModuleType

from . import blue_green, canary, rolling

STRATEGIES: dict[str, ModuleType] = {"rolling": rolling, "blue-green": blue_green, "canary": canary}


def strategy(name: str) -> ModuleType:
    """A strategy by its spec name: `run(steps, op, env, plan, lb, boot, pause) -> paused` and
    `describe(plan, desired, rollout) -> its steps as text`."""
    return STRATEGIES[name]
