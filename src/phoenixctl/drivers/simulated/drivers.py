"""The simulated provider's drivers: servers and balancers that exist only as records of the
world (world.py), for rehearsing a spec at any scale without starting anything.

A server listens once its modelled boot has elapsed since launch and is healthy once its
health time has elapsed too; a drained member's sessions reach zero after the drain time
(`provider.simulated`, per role, default zero). Every answer is computed from timestamps,
never by sleeping. Nothing runs and addresses end in `.invalid` (RFC 6761): Phoenix sends
nothing to these servers, so warm-up and load are skipped with the reason."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from ...deadline import Deadline
from ...spec import ImageSpec, ProviderSpec, SimulatedSpec
from ..base import BakeResult, BalancerRequest, ComputeDriver, Endpoint, Launched, LaunchRequest, LoadBalancerDriver, MemberCounters, MemberState
from .world import World

DOMAIN = "simulated.invalid"  # a name that can never resolve


class SimulatedCompute(ComputeDriver):
    name = "simulated"
    capabilities = frozenset({"persistent_layer", "image_refs"})  # modelled: nothing is attached or fetched
    world_type = World

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        super().__init__(workdir, project, settings)
        self.model = self.settings.simulated or SimulatedSpec()
        self.world = self.world_type.open(workdir)

    @property
    def reaches_servers(self) -> bool:
        return False

    @property
    def unreachable(self) -> str:
        return "simulated servers run nothing and their addresses are not real: nothing can be sent to them"

    def image_id(self, name: str, recipe: ImageSpec, project_dir: Path) -> str:
        return "sim-" + hashlib.sha256(json.dumps(recipe.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()[:12]

    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline, no_cache: bool = False) -> BakeResult:
        image_id = self.image_id(name, recipe, project_dir)
        return BakeResult(image_id, f"simulated://{image_id}", cached=False, seconds=0.0)

    def image_available(self, image_id: str, location: str) -> bool:
        return True

    def launch(self, request: LaunchRequest) -> Launched:
        now, times = time.time(), self.model.durations(request.role)
        server = {
            "role": request.role, "launched": now, "listening_at": now + times.boot,
            "healthy_at": now + times.boot + times.health, "alive": True,
        }
        self.world.change(request.env, "server", request.server_id, server)
        return Launched(f"{request.server_id}.{request.env}.{DOMAIN}", request.port, {"env": request.env, "id": request.server_id})

    def server(self, handle: dict) -> dict | None:
        """The server's record (None: never launched, or destroyed)."""
        env = handle.get("env")
        return self.world.fleet(env).servers.get(handle.get("id", "")) if env else None

    def is_alive(self, handle: dict) -> bool:
        server = self.server(handle)
        return bool(server and server["alive"])

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        if self.server(handle) is not None:
            self.world.change(handle["env"], "server", handle["id"], None)

    def terminate(self, handle: dict) -> None:
        server = self.server(handle)
        if server is not None:
            self.world.change(handle["env"], "server", handle["id"], {**server, "alive": False})

    def discover(self, env: str) -> dict[str, dict]:
        return {sid: {"env": env, "id": sid} for sid, server in list(self.world.fleet(env).servers.items()) if server["alive"]}

    def label(self, handle: dict) -> str:
        return "simulated server"

    def listening(self, handle: dict, address: str, port: int) -> bool:
        return self.world.listening(self.server(handle), time.time())

    def health(self, handle: dict, address: str, port: int, path: str, timeout: float) -> str:
        return self.world.health_answer(self.server(handle), time.time())

    def capability_report(self, probe: bool, deadline: Deadline, sample=None) -> list[dict]:
        return [{"capability": "simulated", "ok": True, "detail": f"a rehearsal: {self.unreachable}; the world is in {self.workdir / 'simulated'}"}]

    def close(self) -> None:
        super().close()
        self.world.close()


class MemberView(Mapping):
    """A balancer's members as of one look, each one's state worked out only when asked for:
    the engine mostly asks about one member, and a role may have thousands."""

    def __init__(self, world: World, members: dict[str, dict], servers: dict[str, dict], now: float):
        self.world, self.members, self.servers, self.now = world, members, servers, now

    def __getitem__(self, name: str) -> MemberState:
        member = self.members[name]
        ok = self.world.healthy(self.servers.get(name), self.now)
        status = ("UP" if member["state"] == "ready" else "DRAIN") if ok else "DOWN"
        return MemberState(status=status, check_ok=ok, sessions=self.world.sessions(member, self.now))

    def get(self, name: str, default=None):  # Mapping's own goes through __getitem__'s KeyError for a non-member
        return self[name] if name in self.members else default

    def __iter__(self) -> Iterator[str]:
        return iter(self.members)

    def __len__(self) -> int:
        return len(self.members)


class SimulatedLoadBalancers(LoadBalancerDriver):
    name = "simulated"
    capabilities = frozenset({"standby", "counters"})
    world_type = World

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        super().__init__(workdir, project, settings)
        self.model = self.settings.simulated or SimulatedSpec()
        self.world = self.world_type.open(workdir)

    def create(self, request: BalancerRequest) -> Endpoint:
        self.world.change(request.env, "balancer", request.role, {})
        address = request.address or f"{request.role}.{request.env}.{DOMAIN}"
        return Endpoint(address, request.port, {"env": request.env, "role": request.role})

    def discover(self, env: str) -> dict[str, dict]:
        return {role: {"env": env, "role": role} for role in list(self.world.fleet(env).balancers)}

    def is_alive(self, handle: dict) -> bool:
        return "env" in handle and handle.get("role") in self.world.fleet(handle["env"]).balancers

    def _members(self, handle: dict) -> dict[str, dict]:
        return self.world.fleet(handle["env"]).balancers.get(handle["role"], {})

    def _set(self, handle: dict, name: str, state: str) -> None:
        idle_at = time.time() + self.model.durations(handle["role"]).drain if state == "drain" else 0.0
        self.world.change(handle["env"], "member", handle["role"], name, {"state": state, "idle_at": idle_at})

    def add_member(
        self, handle: dict, name: str, address: str, port: int, tls_port: int | None = None, standby: bool = False, server: dict | None = None
    ) -> None:
        self._set(handle, name, "drain" if standby else "ready")

    def members(self, handle: dict) -> Mapping[str, MemberState]:
        return MemberView(self.world, dict(self._members(handle)), self.world.fleet(handle["env"]).servers, time.time())

    def member(self, handle: dict, name: str) -> MemberState | None:
        """One member without copying the others: a waiting server asks this at every poll."""
        member = self._members(handle).get(name)
        if member is None:
            return None
        return MemberView(self.world, {name: member}, self.world.fleet(handle["env"]).servers, time.time())[name]

    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        for names, state in ((enable, "ready"), (disable, "drain")):
            for name in names:
                self._set(handle, name, state)

    def counters(self, handle: dict) -> dict[str, MemberCounters]:
        return {name: MemberCounters(0, 0) for name in list(self._members(handle))}  # no traffic is simulated

    def drain_member(self, handle: dict, name: str) -> None:
        self._set(handle, name, "drain")

    def remove_member(self, handle: dict, name: str, deadline: Deadline) -> None:
        if name in self._members(handle):
            self.world.change(handle["env"], "member", handle["role"], name, None)

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        self.world.change(handle["env"], "balancer", handle["role"], None)

    def close(self) -> None:
        self.world.close()
