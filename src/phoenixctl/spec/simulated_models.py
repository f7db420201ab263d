"""The simulated provider's model of time (`provider: {name: simulated, simulated: {...}}`):
how long a server takes to boot, pass its health check and drain, per role where given.
Nothing runs: a rehearsal of a spec at scale (see drivers/simulated)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .values import DurationOrZero, Name


class SimulatedDurations(BaseModel):
    """How long a simulated server takes, as modelled (nothing runs): from launch until it
    listens, then until its health check passes; from drain until its sessions reach zero."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    boot: DurationOrZero = Field(0.0, description="From launch until the server listens")
    health: DurationOrZero = Field(0.0, description="From listening until its health check passes")
    drain: DurationOrZero = Field(0.0, description="From drain until its open sessions reach zero")


class SimulatedSpec(SimulatedDurations):
    """`provider: {name: simulated, simulated: {...}}`: the modelled durations (default zero),
    with a role's own where `roles` names it (fields it leaves out come from above)."""

    roles: dict[Name, SimulatedDurations] = Field(default_factory=dict, description="Durations of one role")

    def durations(self, role: str) -> SimulatedDurations:
        own = self.roles.get(role)
        return SimulatedDurations(**{**self.model_dump(exclude={"roles"}), **(own.model_dump(exclude_unset=True) if own else {})})
