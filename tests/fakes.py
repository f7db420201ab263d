"""The test fake: the simulated drivers with test knobs and invariant checks, in memory.

`provider: fake` (registered by conftest.py) behaves as `provider: simulated` with every
duration zero, but keeps its world in memory, shared by every driver of one project
(`FakeWorld.of(workdir)`), records every event in order with how many members take traffic
right after it, and lets a test decide how servers behave: unhealthy roles, what they answer
and print, a balancer that cannot remove members. Nothing touches the network or a process."""

from __future__ import annotations

import time
from collections import ChainMap
from pathlib import Path

from phoenixctl.drivers.base import LaunchRequest, Launched, LogExcerpt
from phoenixctl.drivers.simulated.drivers import SimulatedCompute, SimulatedLoadBalancers
from phoenixctl.drivers.simulated.world import Fleet, World
from phoenixctl.errors import PhoenixError
from phoenixctl.excerpt import error_lines


class FakeWorld(World):
    """The simulated world without files, plus the knobs and the event record."""

    _worlds: dict[str, "FakeWorld"] = {}

    def __init__(self, workdir: Path):
        super().__init__(workdir)
        self.events: list[tuple] = []
        self.unhealthy_roles: set[str] = set()  # new servers of these roles fail health
        self.answers: dict[str, str] = {}  # role -> what its unhealthy servers answer (HTTP 500)
        self.outputs: dict[str, str] = {}  # role -> what its new servers print
        self.fail_remove = False  # remove_member raises (a balancer that cannot be reached)
        self.violations: list[str] = []
        self.terminated_in_service: list[str] = []  # chaos's kills of serving servers: expected

    @classmethod
    def of(cls, workdir: Path) -> "FakeWorld":
        return cls._worlds.setdefault(str(workdir), cls(workdir))

    @classmethod
    def open(cls, workdir: Path) -> "FakeWorld":
        return cls.of(workdir)

    def close(self) -> None:
        """Kept for the test to look at."""

    def _load(self, env: str) -> Fleet:
        return Fleet()

    def _journal(self, env: str, change: list) -> None:
        pass

    @property
    def servers(self) -> ChainMap:
        """Every environment's servers, by id (records: role, alive, healthy, ...)."""
        return ChainMap(*[fleet.servers for fleet in self.fleets.values()])

    def healthy(self, server: dict | None, now: float) -> bool:
        return super().healthy(server, now) and server.get("healthy", True)

    def health_answer(self, server: dict | None, now: float) -> str:
        if server and server["alive"] and not server.get("healthy", True):
            return server.get("answer", "HTTP 500")
        return super().health_answer(server, now)

    def serving(self, key: str) -> set[str]:
        """The members of balancer `env/role` that take traffic."""
        env, role = key.split("/")
        fleet = self.fleet(env)
        return {
            name for name, member in list(fleet.balancers.get(role, {}).items())
            if member["state"] == "ready" and self.healthy(fleet.servers.get(name), time.time())
        }

    def log(self, *event) -> None:
        """Record an event, with how many healthy members take traffic right after it."""
        with self.lock:
            keys = [f"{env}/{role}" for env, fleet in list(self.fleets.items()) for role in list(fleet.balancers)]
            self.events.append((*event, {key: len(self.serving(key)) for key in keys}))
            # Never stop a server while the balancer still sends to it; `terminate` (chaos, a
            # crash) hits serving servers on purpose: recorded apart, as expected, not a violation.
            if event[0] in ("destroy", "terminate") and any(
                event[1] in members and members[event[1]]["state"] == "ready"
                for fleet in list(self.fleets.values()) for members in list(fleet.balancers.values())
            ):
                if event[0] == "destroy":
                    self.violations.append(f"{event[1]} destroyed while still in service")
                else:
                    self.terminated_in_service.append(event[1])

    def min_serving(self, key: str, since: int = 0) -> int:
        return min((event[-1].get(key, 0) for event in self.events[since:]), default=0)


class FakeCompute(SimulatedCompute):
    name = "fake"
    capabilities = frozenset({"persistent_layer"})
    world_type = FakeWorld

    def launch(self, request: LaunchRequest) -> Launched:
        launched = super().launch(request)
        self.server(launched.handle).update(
            healthy=request.role not in self.world.unhealthy_roles,
            answer=self.world.answers.get(request.role, "HTTP 500"), output=self.world.outputs.get(request.role, ""),
        )
        self.world.log("launch", request.server_id)
        return launched

    def destroy(self, handle: dict, deadline) -> None:
        server = self.server(handle)
        if server is not None and server["alive"]:
            self.world.log("destroy", handle["id"])
        super().destroy(handle, deadline)

    def terminate(self, handle: dict) -> None:
        super().terminate(handle)
        if self.server(handle) is not None:
            self.world.log("terminate", handle["id"])

    def log_excerpt(self, handle: dict) -> LogExcerpt | None:
        server = self.server(handle)
        return LogExcerpt(f"the fake log of {handle['id']}", tuple(error_lines(server.get("output", "")))) if server else None


class FakeLoadBalancers(SimulatedLoadBalancers):
    name = "fake"
    world_type = FakeWorld

    def add_member(self, handle: dict, name: str, address: str, port: int, tls_port=None, standby: bool = False, server=None) -> None:
        super().add_member(handle, name, address, port, tls_port, standby, server)
        self.world.log("add", name, "standby" if standby else "ready")

    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        super().switch(handle, enable, disable)
        self.world.log("switch", tuple(enable), tuple(disable))

    def drain_member(self, handle: dict, name: str) -> None:
        super().drain_member(handle, name)
        self.world.log("drain", name)

    def remove_member(self, handle: dict, name: str, deadline) -> None:
        if self.world.fail_remove:
            raise PhoenixError(f"fake balancer unreachable while removing {name}")
        present = name in self._members(handle)
        super().remove_member(handle, name, deadline)
        if present:
            self.world.log("remove", name)


def register() -> None:
    """`provider: fake`, for the engine tests (never listed among the providers)."""
    from phoenixctl import drivers

    drivers.register("compute", "fake", "fakes:FakeCompute")
    drivers.register("load_balancer", "fake", "fakes:FakeLoadBalancers")
