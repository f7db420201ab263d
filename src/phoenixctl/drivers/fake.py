"""In-memory drivers, for engine unit tests and control-plane benchmarks only.

They keep their world in memory, shared by every driver instance of one project
(`FakeWorld.of(workdir)`), record every event in order, and let a test decide how servers
behave (healthy or not, failing at a step). Nothing here touches the network or a process:
the real drivers are tested with real HAProxy and real processes."""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
from dataclasses import dataclass, field
from pathlib import Path

from ..deadline import Deadline
from ..errors import PhoenixError
from ..excerpt import error_lines
from ..spec import ImageSpec
from .base import BakeResult, BalancerRequest, ComputeDriver, Endpoint, Launched, LaunchRequest, LoadBalancerDriver, LogExcerpt, MemberCounters, MemberState


@dataclass
class FakeServer:
    id: str
    role: str
    alive: bool = True
    healthy: bool = True
    answer: str = "HTTP 500"  # what its health check answers when it is not healthy
    output: str = ""  # what it printed (its log)


@dataclass
class FakeMember:
    state: str = "ready"  # ready, drain, maint
    sessions: int = 0


@dataclass
class FakeWorld:
    servers: dict[str, FakeServer] = field(default_factory=dict)
    balancers: dict[str, dict[str, FakeMember]] = field(default_factory=dict)  # lb key -> members
    events: list[tuple] = field(default_factory=list)
    unhealthy_roles: set[str] = field(default_factory=set)  # new servers of these roles fail health
    answers: dict[str, str] = field(default_factory=dict)  # role -> what its unhealthy servers answer (HTTP 500)
    outputs: dict[str, str] = field(default_factory=dict)  # role -> what its new servers print
    fail_remove: bool = False  # remove_member raises (a balancer that cannot be reached)
    violations: list[str] = field(default_factory=list)
    terminated_in_service: list[str] = field(default_factory=list)  # chaos's kills of serving servers: expected
    # Each event records how many members of every balancer serve right after it: what the
    # invariant tests check, and O(fleet) per event. A benchmark of Phoenix's own work turns it off.
    record_serving: bool = True
    lock: threading.Lock = field(default_factory=threading.Lock)
    ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    _worlds = {}

    @classmethod
    def of(cls, workdir: Path) -> "FakeWorld":
        return cls._worlds.setdefault(str(workdir), cls())

    def log(self, *event) -> None:
        """Record an event, with how many healthy members take traffic right after it."""
        with self.lock:
            # Copies: the balancer drivers change members without this lock (one dict operation each).
            serving = {key: len(self.serving(key)) for key in list(self.balancers)} if self.record_serving else {}
            self.events.append((*event, serving))
            # Never stop a server while the balancer still sends to it; `terminate` (chaos, a
            # crash) hits serving servers on purpose: recorded apart, as expected, not a violation.
            if event[0] in ("destroy", "terminate") and any(
                event[1] in members and members[event[1]].state == "ready" for members in list(self.balancers.values())
            ):
                if event[0] == "destroy":
                    self.violations.append(f"{event[1]} destroyed while still in service")
                else:
                    self.terminated_in_service.append(event[1])

    def serving(self, key: str) -> set[str]:
        return {
            name
            for name, m in list(self.balancers.get(key, {}).items())
            if m.state == "ready" and self.servers[name].alive and self.servers[name].healthy
        }

    def min_serving(self, key: str, since: int = 0) -> int:
        return min((event[-1].get(key, 0) for event in self.events[since:]), default=0)


class FakeCompute(ComputeDriver):
    name = "fake"
    capabilities = frozenset({"persistent_layer"})

    def __init__(self, workdir: Path, project: str, settings=None):
        super().__init__(workdir, project, settings)
        self.world = FakeWorld.of(workdir)

    def image_id(self, name: str, recipe: ImageSpec, project_dir: Path) -> str:
        return "img-" + hashlib.sha256(json.dumps(recipe.model_dump(), sort_keys=True).encode()).hexdigest()[:12]

    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline) -> BakeResult:
        image_id = self.image_id(name, recipe, project_dir)
        return BakeResult(image_id, f"memory://{image_id}", cached=False, seconds=0.0)

    def image_available(self, image_id: str, location: str) -> bool:
        return True

    def launch(self, request: LaunchRequest) -> Launched:
        server = FakeServer(
            request.server_id, request.role, healthy=request.role not in self.world.unhealthy_roles,
            answer=self.world.answers.get(request.role, "HTTP 500"), output=self.world.outputs.get(request.role, ""),
        )
        with self.world.lock:
            self.world.servers[server.id] = server
            number = next(self.world.ids)
        self.world.log("launch", server.id)
        return Launched(address=f"fake-{number}", port=request.port, handle={"id": server.id})

    def _server(self, handle: dict) -> FakeServer | None:
        return self.world.servers.get(handle.get("id", ""))

    def is_alive(self, handle: dict) -> bool:
        server = self._server(handle)
        return bool(server and server.alive)

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        server = self._server(handle)
        if server is not None and server.alive:
            self.world.log("destroy", server.id)
            server.alive = False

    def terminate(self, handle: dict) -> None:
        server = self._server(handle)
        if server is not None:
            server.alive = False
            self.world.log("terminate", server.id)

    def discover(self, env: str) -> dict[str, dict]:
        return {sid: {"id": sid, "pid": 0} for sid, s in self.world.servers.items() if s.alive}

    def listening(self, handle: dict, address: str, port: int) -> bool:
        return self.is_alive(handle)

    def health(self, handle: dict, address: str, port: int, path: str, timeout: float) -> str:
        server = self._server(handle)
        if server and server.alive and server.healthy:
            return ""
        return server.answer if server else "HTTP 500"

    def log_excerpt(self, handle: dict) -> LogExcerpt | None:
        server = self._server(handle)
        return LogExcerpt(f"the fake log of {server.id}", tuple(error_lines(server.output))) if server else None


class FakeLoadBalancers(LoadBalancerDriver):
    name = "fake"
    capabilities = frozenset({"standby", "counters"})

    def __init__(self, workdir: Path, project: str, settings=None):
        super().__init__(workdir, project, settings)
        self.world = FakeWorld.of(workdir)

    def create(self, request: BalancerRequest) -> Endpoint:
        key = f"{request.env}/{request.role}"
        self.world.balancers.setdefault(key, {})
        return Endpoint(request.address or f"fake-lb-{key}", request.port, {"key": key})

    def is_alive(self, handle: dict) -> bool:
        return handle["key"] in self.world.balancers

    def _members(self, handle: dict) -> dict[str, FakeMember]:
        return self.world.balancers[handle["key"]]

    def add_member(
        self, handle: dict, name: str, address: str, port: int, tls_port: int | None = None, standby: bool = False, server: dict | None = None
    ) -> None:
        self._members(handle)[name] = FakeMember(state="drain" if standby else "ready")
        self.world.log("add", name, "standby" if standby else "ready")

    def members(self, handle: dict) -> dict[str, MemberState]:
        return {name: self._state(name, member) for name, member in list(self._members(handle).items())}

    def member(self, handle: dict, name: str) -> MemberState | None:
        member = self._members(handle).get(name)
        return self._state(name, member) if member is not None else None

    def _state(self, name: str, member: FakeMember) -> MemberState:
        server = self.world.servers.get(name)
        healthy = bool(server and server.alive and server.healthy)
        status = {"ready": "UP", "drain": "DRAIN", "maint": "MAINT"}[member.state] if healthy else "DOWN"
        return MemberState(status=status, check_ok=healthy, sessions=member.sessions)

    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        members = self._members(handle)
        for name in enable:
            members[name].state = "ready"
        for name in disable:
            members[name].state = "drain"
        self.world.log("switch", tuple(enable), tuple(disable))

    def counters(self, handle: dict) -> dict[str, MemberCounters]:
        return {name: MemberCounters(0, 0) for name in self._members(handle)}

    def drain_member(self, handle: dict, name: str) -> None:
        self._members(handle)[name].state = "drain"
        self.world.log("drain", name)

    def remove_member(self, handle: dict, name: str, deadline: Deadline) -> None:
        if self.world.fail_remove:
            raise PhoenixError(f"fake balancer unreachable while removing {name}")
        if self._members(handle).pop(name, None) is not None:
            self.world.log("remove", name)

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        self.world.balancers.pop(handle["key"], None)
