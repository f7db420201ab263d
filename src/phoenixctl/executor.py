"""The executor: carries out plans against the drivers.

Every wait has a deadline and a defined failure path; every step is written to the state
store before and after it happens. A new server enters service only when its process is
up, its own health check passes and the load balancer's check reports it UP. Retiring a
server is: stop new traffic at the balancer -> wait for its sessions to reach zero ->
remove it -> stop -> destroy. A failed batch destroys its new servers; the old ones keep
serving."""

from __future__ import annotations

import hashlib
import json
import secrets
import socket
import threading
from fnmatch import fnmatch
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator


from . import drivers
from .boot import config
from .boot.config import BootConfig
from .deadline import Deadline, DeadlineExceeded
from .drivers.base import BalancerRequest, FileChanges, ImageSample, LaunchRequest
from .errors import GateFailed, PhoenixError, SpecError
from .faults import failpoint
from .boot.secrets import Resolved, SecretResolver
from .lock import EnvironmentLock
from .plan import Batch, ObservedServer, RolePlan, plan_role
from .spec import LoadedSpec, load_spec, parse_spec, resolve_quantity, role_waves
from . import recovery, strategies, warmup
from .state import ImageRow, LoadBalancerRow, ReleaseRow, ServerRow, StateStore, WarmupRow, utcnow

PHASES = ("bake", "launch", "boot", "health", "warmup", "stage", "canary", "swap", "drain", "destroy")


class Reporter:
    """Where the executor tells what it does; the CLI shows it with rich, tests ignore it."""

    def info(self, message: str) -> None:  # a line worth showing
        pass

    def planned(self, steps: int) -> None:  # more steps to come (progress total)
        pass

    def advanced(self, steps: int = 1) -> None:  # steps done
        pass


@dataclass
class OperationResult:
    id: str
    env: str
    kind: str
    launched: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    baked: list[str] = field(default_factory=list)
    seconds: float = 0.0
    paused: bool = False  # a canary in service, waiting for promote or rollback
    recovered: list[str] = field(default_factory=list)  # what recovery found and did first
    refused: list[str] = field(default_factory=list)  # servers a watch pass was not allowed to retire

    @property
    def changed(self) -> bool:
        return bool(self.launched or self.retired or self.removed or self.destroyed or self.recovered)

    def summary(self) -> str:
        parts = [f"{len(self.launched)} launched", f"{len(self.retired)} retired"]
        if self.destroyed:
            parts = [f"{len(self.destroyed)} server(s) destroyed"]
        if self.removed:
            parts.append(f"{len(self.removed)} dead removed")
        if self.baked:
            parts.append(f"{len(self.baked)} image(s) baked")
        if self.recovered:
            parts.append(f"recovered: {'; '.join(self.recovered)}")
        if self.refused:
            parts.append(f"refused: {', '.join(self.refused)} (state on the server)")
        return ", ".join(parts)


class Operation:
    """One command's run on one environment; records per-phase timings."""

    def __init__(self, store: StateStore, result: OperationResult):
        self.store = store
        self.result = result
        self.id = result.id
        self.final_status = "succeeded"  # or "paused" (a canary waiting for promote/rollback)
        self._lock = threading.Lock()
        self._phases: list[dict] = []

    @contextmanager
    def phase(self, name: str, server_id: str | None = None) -> Iterator[None]:
        """Time a phase. Timings are kept in memory and written when the operation ends
        (they are measurements, not the journal: server states are written as they change)."""
        started_at, started = utcnow(), time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._lock:
                self._phases.append(dict(phase=name, seconds=time.monotonic() - started, server_id=server_id, ok=ok, started_at=started_at))

    def flush_phases(self) -> None:
        with self._lock:
            phases, self._phases = self._phases, []
        self.store.record_phases(self.id, phases)

    def note(self, attribute: str, value: str) -> None:
        with self._lock:
            getattr(self.result, attribute).append(value)


class Project:
    """A spec file, its `.phoenix/` directory, its state store and its drivers."""

    def __init__(self, spec_path: str | Path | None = None):
        self.loaded: LoadedSpec = load_spec(spec_path)
        self.spec = self.loaded.spec
        self.dir = self.loaded.project_dir
        self.workdir = self.dir / ".phoenix"
        provider = self.spec.provider.name
        check_provider(self.loaded)
        self.store = StateStore(self.workdir / "state.db")
        try:
            self.store.claim(self.dir)
        except BaseException:
            self.store.close()
            raise
        self.compute = drivers.compute_driver(provider, self.workdir, self.spec.project, self.spec.provider)
        self.load_balancers = drivers.load_balancer_driver(provider, self.workdir, self.spec.project, self.spec.provider)
        self.secrets = SecretResolver(self.loaded, self.workdir)

    @classmethod
    def from_release(cls, current: "Project", spec_text: str) -> "Project":
        """The same project (state, drivers, secrets key) with the spec a release was made from."""
        old = cls.__new__(cls)
        old.__dict__.update(current.__dict__)
        old.loaded = parse_spec(spec_text, current.loaded.path, current.loaded.path.name)
        old.spec = old.loaded.spec
        old.secrets = SecretResolver(old.loaded, current.workdir)
        return old

    def close(self) -> None:
        self.compute.close()
        self.store.close()


class Executor:
    def __init__(self, project: Project, reporter: Reporter | None = None, lock_timeout: float = 0.0, discard_state: bool = False):
        self.project = project
        self.spec = project.spec
        self.store = project.store
        self.compute = project.compute
        self.lbs = project.load_balancers
        self.reporter = reporter or Reporter()
        self.lock_timeout = lock_timeout
        self.discard_state = discard_state  # retire servers even when they hold state written on them
        self._address_lock = threading.Lock()
        self._guards: dict[tuple[str, str], threading.Lock] = {}  # per balancer: traffic guard checks
        # Each project gets its own second octet of 127/8, so two copies rarely meet.
        self._octet = 64 + int(hashlib.sha256(str(project.dir).encode()).hexdigest(), 16) % 190

    # --- operations -----------------------------------------------------------------------
    @contextmanager
    def operation(self, env: str, kind: str) -> Iterator[Operation]:
        self.project.loaded.environment(env)
        with EnvironmentLock(self.project.workdir, env, kind, self.lock_timeout) as lock:
            op_id = f"op-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
            self.store.start_operation(op_id, env, kind)
            operation = Operation(self.store, OperationResult(op_id, env, kind))
            started = time.monotonic()
            try:
                if lock.previous_holder:
                    self.reporter.info(f"took over the lock of {lock.previous_holder}, which died holding it")
                    operation.note("recovered", f"took over the lock of {lock.previous_holder}")
                if kind not in ("recover", "destroy") and recovery.unfinished(self, env, op_id):
                    self._recover(operation, env)
                yield operation
            except BaseException as exc:
                operation.result.seconds = time.monotonic() - started
                reason = str(exc) or type(exc).__name__
                operation.flush_phases()
                self.store.finish_operation(op_id, "failed", f"{operation.result.summary()}; failed: {reason}")
                raise
            operation.result.seconds = time.monotonic() - started
            operation.flush_phases()
            self.store.finish_operation(op_id, operation.final_status, operation.result.summary())

    def bake(self, names: list[str] | None = None) -> list[tuple[str, str, bool, float]]:
        """Bake the named images (all by default): (name, image id, cached, seconds)."""
        names = names or list(self.spec.images)
        for name in names:
            if name not in self.spec.images:
                known = ", ".join(sorted(self.spec.images))
                raise SpecError(f"{self.project.loaded.path.name}: unknown image {name!r} (images: {known})")
        return [self._bake_one(name, None) for name in names]

    def _bake_one(self, name: str, op: Operation | None) -> tuple[str, str, bool, float]:
        recipe = self.spec.images[name]
        deadline = Deadline(recipe.bake_timeout, f"bake of image {name}")
        if op:
            with op.phase("bake"):
                result = self.compute.bake(name, recipe, self.project.dir, deadline)
        else:
            result = self.compute.bake(name, recipe, self.project.dir, deadline)
        if not result.cached:
            self.store.save_image(
                ImageRow(id=result.image_id, name=name, provider=self.compute.name, location=result.location, bake_seconds=result.seconds)
            )
            if op:
                op.note("baked", result.image_id)
        elif self.store.image(result.image_id) is None:
            self.store.save_image(ImageRow(id=result.image_id, name=name, provider=self.compute.name, location=result.location))
        self.reporter.info(f"image {name}: {result.image_id} ({'cache hit' if result.cached else f'baked in {result.seconds:.2f}s'})")
        return name, result.image_id, result.cached, result.seconds

    def up(self, env: str) -> OperationResult:
        """Create the environment from nothing, or complete it; changes nothing when complete."""
        with self.operation(env, "up") as op:
            self._converge(op, env, roles=None, replace_outdated=False, replace_all=False)
            return op.result

    def deploy(self, env: str, strategy: str | None = None, pause: bool = False) -> OperationResult:
        """Bake, then replace every server whose fingerprint changed, with the environment's
        strategy (or the one given): rolling, blue-green or canary."""
        self.project.loaded.environment(env)
        strategy = strategy or self.spec.rollout(env).strategy
        refusal = strategy_refusal(self.spec.provider.name, strategy, self.lbs.capabilities)
        if refusal:
            raise PhoenixError(refusal)
        with self.operation(env, "deploy") as op:
            self._supersede_paused(env)
            self._converge(op, env, roles=None, replace_outdated=True, replace_all=False, strategy=strategy, pause=pause)
            return op.result

    def rotate(self, env: str, role: str | None = None) -> OperationResult:
        """Replace every server even if nothing changed: the phoenix rebirth. Same build, so
        a canary has nothing to compare: canary environments rotate rolling."""
        self.project.loaded.environment(env)
        if role:
            self._check_env_role(env, role)
        strategy = self.spec.rollout(env).strategy
        with self.operation(env, "rotate") as op:
            self._supersede_paused(env)
            self._converge(
                op, env, roles=[role] if role else None, replace_outdated=True, replace_all=True,
                strategy="rolling" if strategy == "canary" else strategy,
            )
            return op.result

    def promote(self, env: str) -> OperationResult:
        """After a paused canary: roll the rest of the new build."""
        self.project.loaded.environment(env)
        paused = self.store.paused_operation(env)
        if paused is None:
            raise PhoenixError(f"environment {env} has no paused canary to promote")
        with self.operation(env, "promote") as op:
            self._converge(op, env, roles=None, replace_outdated=True, replace_all=False, strategy="rolling")
            self.store.set_operation_status(paused.id, "promoted", f"promoted by {op.id}")
            return op.result

    def rollback(self, env: str) -> OperationResult:
        """Back to the previous build: abort a paused canary, else switch back to a kept
        blue-green group at once, else redeploy the previous release (rolling, no canary)."""
        self.project.loaded.environment(env)
        with self.operation(env, "rollback") as op:
            paused = self.store.paused_operation(env)
            if paused is not None:
                canaries = [row for row in self.store.servers(env) if row.operation_id == paused.id and row.in_service]
                for role in sorted({row.role for row in canaries}):
                    lb = self.store.load_balancer(env, role)
                    self._retire_all(op, env, role, [row.id for row in canaries if row.role == role], lb)
                self.store.set_operation_status(paused.id, "rolled back", f"rolled back by {op.id}")
                self.reporter.info(f"canary of {paused.id} rolled back: {len(canaries)} server(s) retired")
                return op.result
            standby_roles = sorted({row.role for row in self.store.servers(env) if row.state == "standby"})
            switched = [
                role for role in standby_roles if strategies.switch_back(self, op, env, role, self.store.load_balancer(env, role))
            ]
            if switched and len(switched) == len(standby_roles):
                self._record_release(op, env, "rollback", f"switched back to the kept group of {', '.join(switched)}")
                return op.result
            # no kept group, or one that could not serve: the previous release, rolling
            # (roles already switched back match it and are left alone)
            self._redeploy_previous(op, env)
            return op.result

    def _previous_release(self, env: str) -> ReleaseRow:
        """The last release that served something else than the current one."""
        releases = self.store.releases(env)
        previous = next((r for r in releases[1:] if r.fingerprints != releases[0].fingerprints), None) if releases else None
        if previous is None:
            raise PhoenixError(f"environment {env} has no previous release to roll back to")
        return previous

    def lb_addresses(self, env: str) -> dict[str, str]:
        return {row.role: f"{row.address}:{row.port}" for row in self.store.load_balancers(env)}

    def _redeploy_previous(self, op: Operation, env: str) -> None:
        previous = self._previous_release(env)
        image_ids = json.loads(previous.image_ids)
        for name, image_id in image_ids.items():
            image = self.store.image(image_id)
            if image is None or not self.compute.image_available(image_id, image.location):
                raise PhoenixError(f"image {image_id} of the previous release ({previous.operation_id}) is gone")
        old = Project.from_release(self.project, previous.spec_text)
        self.reporter.info(f"redeploying the release of {previous.operation_id} ({previous.kind}, {previous.created_at:%Y-%m-%d %H:%M:%S} UTC)")
        Executor(old, self.reporter, discard_state=self.discard_state)._converge(
            op, env, roles=None, replace_outdated=True, replace_all=False, strategy="rolling", image_ids=image_ids,
            release_kind="rollback", release_reason=f"back to the release of {previous.operation_id}",
        )

    def _supersede_paused(self, env: str) -> None:
        paused = self.store.paused_operation(env)
        if paused is not None:
            self.store.set_operation_status(paused.id, "superseded", "a newer operation took over")

    def recover(self, env: str) -> OperationResult:
        """Only recovery: compare the record with reality and put things right."""
        with self.operation(env, "recover") as op:
            self._recover(op, env)
            return op.result

    def _recover(self, op: Operation, env: str) -> None:
        for action in recovery.recover(self, op, env):
            self.reporter.info(f"recover: {action}")
            op.note("recovered", action)

    def destroy(self, env: str) -> OperationResult:
        """Stop and remove every server and load balancer of the environment."""
        with self.operation(env, "destroy") as op:
            deadlines = self.spec.deadlines(env)
            for interrupted in recovery.unfinished(self, env, op.id):
                self.store.set_operation_status(interrupted.id, "interrupted", f"ended by {op.id}")
            known = {row.id for row in self.store.servers(env)}
            for server_id, handle in self.compute.discover(env).items():
                if server_id not in known:  # an orphan the record missed: it goes too
                    self.compute.destroy(handle, Deadline(deadlines.stop, f"orphan {server_id} to stop"))
                    op.note("destroyed", server_id)
            servers = self.store.servers(env)
            self.reporter.planned(len(servers))
            lbs = {row.role: row for row in self.store.load_balancers(env)}
            for server in servers:
                lb = lbs.get(server.role)
                if lb and self.lbs.is_alive(lb.handle_data):
                    self.lbs.remove_member(lb.handle_data, server.id, Deadline(deadlines.swap, f"removal of {server.id}"))
            self._parallel([lambda s=s: self._destroy_server(op, s, deadlines.stop) for s in servers])
            for server in servers:
                op.note("destroyed", server.id)
            for lb in lbs.values():
                self.lbs.destroy(lb.handle_data, Deadline(deadlines.stop, f"stop of the {lb.role} load balancer"))
                self.store.delete_load_balancer(env, lb.role)
                self.reporter.info(f"load balancer {lb.role} at {lb.address}:{lb.port} stopped")
            for role, handle in self.lbs.discover(env).items():  # what the record missed (a crash mid-create)
                self.lbs.destroy(handle, Deadline(max(deadlines.stop, 60), f"removal of an orphan {role} balancer"))
                op.note("recovered", f"orphan {role} balancer removed")
            for removed in self.compute.teardown(env, Deadline(max(deadlines.stop, 60), f"teardown of environment {env}")):
                self.reporter.info(f"removed {removed}")
            return op.result

    # --- converging an environment --------------------------------------------------------
    def _check_env_role(self, env: str, role: str) -> None:
        self.project.loaded.check_role(role)
        if role not in self.spec.environments[env].roles:
            raise SpecError(f"{self.project.loaded.path.name}: environment {env!r} has no role {role!r}")

    def secrets_for(self, env: str, read_only: bool) -> Resolved:
        """The environment's secrets: every value (commands run) to launch servers; for a
        read-only command, no command run (the keyed hash the last deploy recorded stands in)."""
        if read_only:
            return self.project.secrets.for_reading(env, self.store.recorded_secrets(env))
        return self.project.secrets.for_launch(env)

    def desired_boot(
        self, env: str, image_ids: dict[str, str], lb_addresses: dict[str, str], resolved: Resolved | None = None
    ) -> dict[str, BootConfig]:
        """Each role's boot configuration; `resolved` from `secrets_for` (default: for launching)."""
        resolved = resolved if resolved is not None else self.secrets_for(env, read_only=False)
        return {
            role: config.boot_config(
                self.project.loaded, self.project.workdir, resolved, env, role,
                image_ids[self.spec.roles[role].image], lb_addresses,
            )
            for role in self.spec.environments[env].roles
        }

    def preflight(self, env: str, read_only: bool = False) -> Resolved:
        """Everything that can be wrong with the input, checked before anything is started:
        secret isolation, secret resolution, user-data schema and size. `read_only` (dry
        runs): runs no secret command and writes nothing."""
        loaded, workdir = self.project.loaded, self.project.workdir
        roles = list(self.spec.environments[env].roles)
        merged = [config.merge(loaded, workdir, env, role, {}) for role in roles]
        config.check_isolation(loaded, env, merged)
        resolved = self.secrets_for(env, read_only)  # reads every secret of the environment (runs commands unless read-only)
        own = {name: digest for name, digest in resolved.digests.items() if digest is not None}
        config.check_values_isolated(env, own, self.store.secret_hashes())
        image_ids = {name: "img-preflight" for name in self.spec.images}
        self.desired_boot(env, image_ids, {}, resolved)  # renders and validates each role's user-data
        if not read_only:
            self.store.save_secret_hashes(env, own, self.project.secrets.sources(env))
        return resolved

    def _converge(
        self,
        op: Operation,
        env: str,
        roles: list[str] | None,
        replace_outdated: bool,
        replace_all: bool,
        strategy: str = "rolling",
        pause: bool = False,
        image_ids: dict[str, str] | None = None,
        release_kind: str | None = None,
        release_reason: str = "",
        reconcile_budget: int | None = None,
    ) -> list[RolePlan]:
        env_spec = self.spec.environments[env]
        self.preflight(env)
        if image_ids is None:
            image_names = sorted({self.spec.roles[role].image for role in env_spec.roles})
            image_ids = {name: image_id for name, image_id, _, _ in (self._bake_one(n, op) for n in image_names)}
        # Side by side: a cloud balancer takes minutes to become active.
        all_roles = list(env_spec.roles)
        lbs = dict(zip(all_roles, self._parallel([lambda r=r: self._ensure_load_balancer(op, env, r) for r in all_roles])))
        self._expire_standby(op, env, lbs)
        boots = self.desired_boot(env, image_ids, {role: f"{lb.address}:{lb.port}" for role, lb in lbs.items()})
        plans: list[RolePlan] = []
        reconcile = reconcile_budget is not None
        for role, env_role in env_spec.roles.items():
            if roles and role not in roles:
                continue
            boot = boots[role]
            observed = [self._observe(row, inspect=reconcile) for row in self.store.servers(env, role) if row.state != "standby"]

            def plan_with(keep: frozenset[str]) -> RolePlan:
                return plan_role(
                    role, env_role.count, boot.fingerprint, boot.image_id, observed, self.spec.rollout(env),
                    replace_all=replace_all, replace_outdated=replace_outdated,
                    max_age=self.spec.max_age(env, role) if reconcile else None, now=utcnow(), budget=reconcile_budget, keep=keep,
                )

            plan, refused = plan_with(frozenset()), {}
            while refusals := self._state_refusals(env, [r.server_id for r in plan.replace + plan.retire_extra]):
                if not reconcile:  # a deploy or rotation is refused whole, before anything starts
                    raise PhoenixError(next(iter(refusals.values())))
                # A watch pass replaces what it may: one server that cannot be retired never
                # stops the healing of dead or unhealthy servers elsewhere.
                refused.update(refusals)
                plan = plan_with(frozenset(refused))
            for server_id, why in refused.items():
                self.reporter.info(f"{role}: {why}")
                op.note("refused", server_id)
            if reconcile_budget is not None:
                reconcile_budget -= sum(1 for r in plan.replace if not r.urgent)
            plans.append(plan)
            self.reporter.planned(sum(b.launch for b in plan.batches) + len(plan.replace) + len(plan.retire_extra) + len(plan.remove_dead))
        # Roles have their own servers and balancers: converge them side by side, each after
        # the roles it depends on (a frontend warms its cache from a backend in service).
        by_role = {p.role: p for p in plans}
        paused = []
        try:
            for wave in role_waves(self.spec, list(by_role)):
                paused += self._parallel(
                    [lambda p=by_role[r]: self._execute_role(op, env, p, lbs[p.role], boots[p.role], strategy, pause) for r in wave]
                )
        except PhoenixError as failure:
            if op.result.kind in ("deploy", "promote") and release_kind is None:
                self._after_failed_release(op, env, {role: boot.fingerprint for role, boot in boots.items()}, failure)
            raise
        if roles is None:
            self._retire_removed_roles(op, env)
        if op.result.refused:
            op.final_status = "incomplete"  # what it may was done; the refused servers wait
        if any(paused):
            op.final_status, op.result.paused = "paused", True
            self.reporter.info(f"canary in service; `phoenix promote {env}` rolls the rest, `phoenix rollback {env}` retires it")
            return plans
        reasons = sorted({r.reason for p in plans for r in p.replace})
        self._record_release(op, env, release_kind or op.result.kind, release_reason or "; ".join(reasons), image_ids, boots)
        return plans

    def _after_failed_release(self, op: Operation, env: str, new: dict[str, str], failure: PhoenixError) -> None:
        """A deploy failed part-way: by default the roles it already moved go back to the
        release served before it (`rollout.on_failure: rollback`), so the environment ends on
        one release; the failure's message then says which role serves which release."""
        previous = next(iter(self.store.releases(env, limit=1)), None)
        if previous is None:
            failure.args = (f"{failure}; {env} had no earlier release to go back to",)
            return
        before = json.loads(previous.fingerprints)
        moved = sorted(
            role for role in before
            if any(row.in_service and row.fingerprint != before[role] for row in self.store.servers(env, role))
        )
        undo_failed = ""
        if moved and self.spec.rollout(env).on_failure == "rollback":
            self.reporter.info(f"deploy failed: rolling {', '.join(moved)} back to the release of {previous.operation_id}")
            try:
                self._roll_back_roles(op, env, moved, previous)
            except PhoenixError as undo:
                undo_failed = f"; rolling back failed too: {undo}"
        failure.args = (f"{failure}{undo_failed}; {self._serving_summary(env, previous, before, new)}",)

    def _roll_back_roles(self, op: Operation, env: str, roles: list[str], previous: ReleaseRow) -> None:
        """Roles back to a release: a switch back to a kept group where there is one, else
        a rolling redeploy of that release's spec and images."""
        switched = [role for role in roles if strategies.switch_back(self, op, env, role, self.store.load_balancer(env, role))]
        rest = [role for role in roles if role not in switched]
        if rest:
            old = Project.from_release(self.project, previous.spec_text)
            Executor(old, self.reporter, discard_state=self.discard_state)._converge(
                op, env, roles=rest, replace_outdated=True, replace_all=False, strategy="rolling",
                image_ids=json.loads(previous.image_ids), release_kind="rollback",
                release_reason=f"a failed {op.result.kind} rolled back to the release of {previous.operation_id}",
            )

    def _serving_summary(self, env: str, previous: ReleaseRow, before: dict[str, str], new: dict[str, str]) -> str:
        """Which release each role serves now, in one line."""
        where: dict[str, list[str]] = {}
        for role in sorted(set(before) | set(new)):
            prints = {row.fingerprint for row in self.store.servers(env, role) if row.in_service}
            if prints and prints == {before.get(role)}:
                label = f"the release of {previous.operation_id}"
            elif prints and prints == {new.get(role)}:
                label = "the new build"
            elif prints:
                label = "a mix of the new build and the previous release"
            else:
                label = "nothing"
            where.setdefault(label, []).append(role)
        if len(where) == 1:
            return f"{env} serves {next(iter(where))} on every role"
        return f"{env} serves " + "; ".join(f"{label} on {', '.join(roles)}" for label, roles in where.items())

    def _record_release(self, op: Operation, env: str, kind: str, reason: str, image_ids=None, boots=None) -> None:
        """Remember what the environment serves now, when it changed."""
        serving = {row.role: row for row in self.store.servers(env) if row.in_service}
        fingerprints = json.dumps({role: row.fingerprint for role, row in sorted(serving.items())})
        latest = next(iter(self.store.releases(env, limit=1)), None)
        if latest is not None and latest.fingerprints == fingerprints:
            return
        if image_ids is None:  # a switch back: the kept group's release is the one before the latest
            previous = next((r for r in self.store.releases(env)[1:] if r.fingerprints == fingerprints), None)
            spec_text, image_ids = (previous.spec_text, json.loads(previous.image_ids)) if previous else (self.project.loaded.text, {})
        else:
            spec_text = self.project.loaded.text
        self.store.add_release(
            ReleaseRow(
                env=env, operation_id=op.id, kind=kind, reason=reason, spec_text=spec_text,
                image_ids=json.dumps(image_ids, sort_keys=True), fingerprints=fingerprints,
            )
        )

    def _expire_standby(self, op: Operation, env: str, lbs: dict[str, LoadBalancerRow]) -> None:
        """A kept blue-green group past its `keep_previous` is retired by the next command."""
        now = utcnow()
        for row in self.store.servers(env):
            if row.state == "standby" and row.standby_until and row.standby_until <= now and row.role in lbs:
                self.reporter.info(f"{row.role}: the kept group's {row.id} is past keep_previous; retiring it")
                self._retire(op, env, row.role, row.id, lbs[row.role])

    def _retire_standby(self, op: Operation, env: str, role: str, lb: LoadBalancerRow) -> None:
        standby = [row.id for row in self.store.servers(env, role) if row.state == "standby"]
        self._retire_all(op, env, role, standby, lb)

    def _retire_removed_roles(self, op: Operation, env: str) -> None:
        """A role taken out of the environment's spec: retire its servers, stop its balancer."""
        wanted = set(self.spec.environments[env].roles)
        deadlines = self.spec.deadlines(env)
        for lb in self.store.load_balancers(env):
            if lb.role in wanted:
                continue
            servers = self.store.servers(env, lb.role)
            self.reporter.info(f"{lb.role}: no longer in environment {env}; retiring {len(servers)} server(s)")
            self._retire_all(op, env, lb.role, [s.id for s in servers], lb)
            self.lbs.destroy(lb.handle_data, Deadline(deadlines.stop, f"stop of the {lb.role} load balancer"))
            self.store.delete_load_balancer(env, lb.role)

    def _observe(self, row: ServerRow, inspect: bool = False) -> ObservedServer:
        alive = self.compute.is_alive(row.handle_data)
        drift = unhealthy = ""
        if inspect and alive and row.in_service:
            changes = self.file_changes(row)
            drift = describe_changes(changes) if changes else ""
            unhealthy = self._health_problem(row)
        return ObservedServer(
            id=row.id,
            role=row.role,
            image_id=row.image_id,
            fingerprint=row.fingerprint,
            alive=alive,
            in_service=row.in_service,
            launched_at=row.launched_at,
            drift=drift,
            unhealthy=unhealthy,
        )

    # --- drift and state on servers ---------------------------------------------------------
    def file_changes(self, row: ServerRow) -> FileChanges | None:
        """Changes since boot, less the role's scratch paths and persistent mounts."""
        changes = self.compute.file_changes(row.handle_data)
        if changes is None:
            return None
        role = self.spec.roles.get(row.role)
        scratch = role.scratch if role else []
        ignored = lambda path: path.startswith("persistent/") or any(fnmatch(path, p) for p in scratch)  # noqa: E731
        return changes.without(ignored)

    def _health_problem(self, row: ServerRow) -> str:
        health = self.spec.roles[row.role].health
        problem = self.compute.health(row.handle_data, row.address, row.port, health.path, health.timeout)
        if problem:
            return f"GET {health.path} answered {problem}"
        lb = self.store.load_balancer(row.env, row.role)
        if lb and self.lbs.is_alive(lb.handle_data):
            member = self.lbs.members(lb.handle_data).get(row.id)
            if member is not None and member.status.startswith("DOWN"):
                return f"the load balancer reports it {member.status}"
        return ""

    def _state_refusals(self, env: str, server_ids: list[str]) -> dict[str, str]:
        """Why each of these servers may not be retired: it holds files written outside scratch
        and persistent mounts (new files: data someone keeps there; a changed image file is
        drift, replaced freely)."""
        refusals: dict[str, str] = {}
        if self.discard_state:
            return refusals
        for server_id in server_ids:
            row = self.store.server(server_id)
            if row is None or self.spec.roles.get(row.role) is None or self.spec.roles[row.role].on_server_state == "discard":
                continue
            changes = self.file_changes(row)
            written = changes.added if changes else []  # new files: data that would be lost
            if written:
                shown = ", ".join(written[:5]) + (f" and {len(written) - 5} more" if len(written) > 5 else "")
                refusals[server_id] = (
                    f"refusing to retire {server_id}: it holds state written on the server ({shown}); "
                    f"declare those paths as scratch, set on_server_state: discard for role {row.role}, or pass --discard-state"
                )
        return refusals

    def _execute_role(
        self, op: Operation, env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig, strategy: str = "rolling", pause: bool = False
    ) -> bool:
        """Carry out one role's plan; True when a canary paused."""
        for dead in plan.remove_dead:
            self.reporter.info(f"{plan.role}: removing {dead.server_id}: {dead.reason}")
            self._remove_and_destroy(op, env, lb, dead.server_id)
            op.note("removed", dead.server_id)
        for replacement in plan.replace:
            self.reporter.info(f"{plan.role}: will replace {replacement.server_id}: {replacement.reason}")
        paused = False
        if strategy == "blue-green" and plan.replace:
            strategies.blue_green(self, op, env, plan, lb, boot)
        elif strategy == "canary" and plan.replace:
            paused = strategies.canary(self, op, env, plan, lb, boot, pause)
        else:
            for batch in plan.batches:
                self._run_batch(op, env, plan.role, batch, lb, boot)
        self._retire_all(op, env, plan.role, [r.server_id for r in plan.retire_extra], lb)
        return paused

    def _launch_group(self, op: Operation, env: str, role: str, boot: BootConfig, count: int) -> list[ServerRow]:
        """Launch and gate `count` servers side by side: all of them, or none (destroyed)."""
        outcomes = self._parallel([lambda: self._launch_and_gate(op, env, role, boot) for _ in range(count)], raise_first=False)
        ready = [o for o in outcomes if isinstance(o, ServerRow)]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            # Nothing of this group has taken traffic yet: destroy it all, the old servers keep serving.
            self._parallel([lambda s=s: self._destroy_server(op, s, self.spec.deadlines(env).stop) for s in ready])
            raise failures[0]
        return ready

    def _run_batch(self, op: Operation, env: str, role: str, batch: Batch, lb: LoadBalancerRow, boot: BootConfig) -> list[ServerRow]:
        self._retire_all(op, env, role, list(batch.retire_first), lb)
        ready = self._launch_group(op, env, role, boot, batch.launch)
        outcomes = self._parallel([lambda s=s: self._swap_in(op, env, s, lb) for s in ready], raise_first=False)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            swapped = [s for s, o in zip(ready, outcomes) if not isinstance(o, BaseException)]
            self._retire_all(op, env, role, [s.id for s in swapped], lb)
            raise failures[0]
        for server in ready:
            op.note("launched", server.id)
        self._retire_all(op, env, role, list(batch.retire_after), lb)
        return ready

    # --- one new server -------------------------------------------------------------------
    def _reserve_address(self, port: int) -> str:
        """A loopback address nobody uses on this port (checked by binding to it)."""
        with self._address_lock:
            used = self.store.used_addresses()
            for _ in range(2000):
                n = self.store.next_counter("address") % 65024 + 256  # skips 127.x.0.*
                address = f"127.{self._octet}.{n >> 8}.{n & 255}"
                if n & 255 in (0, 255) or address in used:
                    continue
                with socket.socket() as probe:
                    try:
                        probe.bind((address, port))
                        return address
                    except OSError:
                        continue
        raise PhoenixError(f"no free loopback address for port {port}")

    def _launch_and_gate(self, op: Operation, env: str, role: str, boot: BootConfig) -> ServerRow:
        if not boot.deliverable:  # made for reading: stand-ins where secret commands were not run
            raise PhoenixError(f"internal: the boot configuration of {env}/{role} was made without running its secret commands")
        server_id = f"{role}-{secrets.token_hex(3)}"
        deadlines = self.spec.deadlines(env)
        row = ServerRow(
            id=server_id, env=env, role=role, image_id=boot.image_id, fingerprint=boot.fingerprint,
            address="", port=boot.port, state="launching", operation_id=op.id,
        )
        self.store.add_server(row)
        image = self.store.image(boot.image_id)
        try:
            with op.phase("launch", server_id):
                launched = self.compute.launch(
                    LaunchRequest(
                        server_id=server_id, env=env, role=role, image_id=boot.image_id, image_location=image.location,
                        port=boot.port, command=boot.command, userdata=boot.userdata,
                        boot_env={"PHOENIX_SERVER_ID": server_id}, boot_timeout=deadlines.boot,
                        tls_port=self.spec.roles[role].tls_port, placement=self.spec.placement(env, role),
                        discovery=self.spec.roles[role].discovery, tags={"fingerprint": boot.fingerprint, "operation": op.id},
                    ),
                    self._reserve_address,
                )
            failpoint("launch")  # started, not yet recorded
            self.store.update_server(server_id, address=launched.address, handle=launched.handle, state="booting")
            row = self.store.server(server_id)
            with op.phase("boot", server_id):
                self._wait_listening(row, Deadline(deadlines.boot, f"{server_id} to listen"))
            self.store.update_server(server_id, state="checking")
            with op.phase("health", server_id):
                failpoint("health")
                self._wait_healthy(row, Deadline(deadlines.health, f"{server_id} to pass its health check"))
            warmup_spec = self.spec.warmup(env, role)
            if warmup_spec and not self.compute.reaches_servers:
                self.reporter.info(f"{role}: {server_id} not warmed: the provider's servers cannot be reached from here (emulator)")
            elif warmup_spec:
                self.store.update_server(server_id, state="warming")
                with op.phase("warmup", server_id):
                    failpoint("warmup")
                    self._warm(op, row, warmup_spec)
            self.store.update_server(server_id, state="ready")
            self.reporter.info(f"{role}: {server_id} on {row.address}:{row.port} is healthy")
            self.reporter.advanced()
            return row
        except BaseException as exc:
            self.reporter.info(f"{role}: {server_id} failed: {exc}")
            self._destroy_server(op, self.store.server(server_id), deadlines.stop, progress=False)
            if isinstance(exc, GateFailed) or not isinstance(exc, Exception):
                raise  # an interrupt stays an interrupt
            raise GateFailed(server_id, "launch", str(exc)) from exc

    def _wait_listening(self, row: ServerRow, deadline: Deadline) -> None:
        def listening() -> bool:
            self._check_alive(row, "boot")
            return self.compute.listening(row.handle_data, row.address, row.port)

        try:
            self.poll(deadline, listening, interval=0.02, max_interval=0.1)
        except DeadlineExceeded as exc:
            raise GateFailed(row.id, "boot", str(exc), self.compute.log_excerpt(row.handle_data)) from None

    def _wait_healthy(self, row: ServerRow, deadline: Deadline) -> None:
        health = self.spec.roles[row.role].health
        last = "no answer"
        answers: set[str] = set()

        def healthy() -> bool:
            nonlocal last
            self._check_alive(row, "health")
            last = self.compute.health(row.handle_data, row.address, row.port, health.path, health.timeout)
            answers.add(last)
            return not last

        try:
            self.poll(deadline, healthy, interval=0.05, max_interval=0.5)
        except DeadlineExceeded:
            reason = f"GET {health.path} still answered {last} after {deadline.seconds:g}s"
            if answers == {"HTTP 404"}:  # a server that answers, but not on that path
                reason += " (is health.path right? the server answers 404 for it)"
            raise GateFailed(row.id, "health", reason, self.compute.log_excerpt(row.handle_data)) from None

    def _warm(self, op: Operation, row: ServerRow, spec) -> None:
        result = warmup.warm(f"http://{row.address}:{row.port}", spec)
        passed = result.passed(spec)
        self.store.record_warmup(
            WarmupRow(
                operation_id=op.id, server_id=row.id, planned=result.planned, fetched=result.fetched,
                succeeded=result.succeeded, bytes=result.bytes, seconds=result.seconds, passed=passed,
                summary=result.summary(),
            )
        )
        self._check_alive(row, "warm-up")
        if not passed:
            raise GateFailed(row.id, "warm-up", f"{result.summary()}; {spec.min_success:.0%} needed")
        self.reporter.info(f"{row.role}: {row.id} warmed: {result.summary()}")

    def _check_alive(self, row: ServerRow, gate: str) -> None:
        if not self.compute.is_alive(row.handle_data):
            raise GateFailed(row.id, gate, "its process exited", self.compute.log_excerpt(row.handle_data))

    def _swap_in(self, op: Operation, env: str, row: ServerRow, lb: LoadBalancerRow) -> None:
        deadline = Deadline(self.spec.deadlines(env).swap, f"the {row.role} load balancer to report {row.id} UP")
        with op.phase("swap", row.id):
            try:
                self.store.update_server(row.id, state="joining")  # journal first: it may be a member from now on
                self.lbs.add_member(lb.handle_data, row.id, row.address, row.port, self.spec.roles[row.role].tls_port, server=row.handle_data)
                failpoint("swap")
                self.poll(deadline, lambda: self._member_up(lb, row), interval=0.05, max_interval=0.1)
            except BaseException as exc:
                self._remove_and_destroy(op, env, lb, row.id)
                if isinstance(exc, GateFailed) or not isinstance(exc, Exception):
                    raise  # a gate's own failure (its process exited, with its log) stays as it is
                raise GateFailed(row.id, "load balancer", str(exc)) from None
        self.store.update_server(row.id, state="in_service", in_service=True)
        self.reporter.info(f"{row.role}: {row.id} in service")

    def _member_up(self, lb: LoadBalancerRow, row: ServerRow) -> bool:
        self._check_alive(row, "load balancer")
        member = self.lbs.members(lb.handle_data).get(row.id)
        return bool(member and member.up)

    # --- retiring -------------------------------------------------------------------------
    def _retire_all(self, op: Operation, env: str, role: str, server_ids: list[str], lb: LoadBalancerRow) -> None:
        if server_ids:
            self._parallel([lambda sid=sid: self._retire(op, env, role, sid, lb) for sid in server_ids])

    def _retire(self, op: Operation, env: str, role: str, server_id: str, lb: LoadBalancerRow) -> None:
        """Drain, then remove from the balancer, then stop and destroy."""
        deadlines = self.spec.deadlines(env)
        with op.phase("drain", server_id):
            # Check and drain under one lock per balancer: two retirements side by side must
            # not both see the other still UP and leave nothing serving.
            with self._guard(lb):
                members = self.lbs.members(lb.handle_data)
                others_up = [name for name, m in members.items() if name != server_id and m.up]
                wanted = self.spec.environments[env].roles.get(role)
                if server_id in members and not others_up and wanted and wanted.count > 0:
                    raise PhoenixError(f"refusing to drain {server_id}: it is the last {role} server in service")
                self.store.update_server(server_id, state="draining", in_service=False)
                if server_id in members:
                    self.lbs.drain_member(lb.handle_data, server_id)
            if server_id in members:
                failpoint("drain")
                try:
                    self.poll(
                        Deadline(deadlines.drain, f"sessions on {server_id} to reach zero"),
                        lambda: (member := self.lbs.members(lb.handle_data).get(server_id)) is None or member.sessions == 0,
                        interval=0.02,
                        max_interval=0.2,
                    )
                except DeadlineExceeded as exc:
                    self.reporter.info(f"{role}: {exc}; removing it anyway")
        with op.phase("destroy", server_id):
            self.store.update_server(server_id, state="stopping")
            self.lbs.remove_member(lb.handle_data, server_id, Deadline(deadlines.swap, f"removal of {server_id}"))
            failpoint("destroy")
            self._destroy_server(op, self.store.server(server_id), deadlines.stop, record=False)
        op.note("retired", server_id)
        self.reporter.info(f"{role}: {server_id} retired")

    def poll(self, deadline: Deadline, check: Callable, interval: float, max_interval: float):
        """`deadline.poll`, paced for the provider: a cloud API is not asked many times a second
        (its health checks take seconds anyway, and throttling would slow everything)."""
        pace = max(self.compute.poll_interval, self.lbs.poll_interval)
        return deadline.poll(check, interval=max(interval, pace), max_interval=max(max_interval, pace * 2.5))

    def _guard(self, lb: LoadBalancerRow) -> threading.Lock:
        with self._address_lock:
            return self._guards.setdefault((lb.env, lb.role), threading.Lock())

    def _remove_and_destroy(self, op: Operation, env: str, lb: LoadBalancerRow | None, server_id: str) -> None:
        """A server that must not serve: out of the balancer, then destroyed — destroyed even
        when the balancer cannot be reached, so nothing is left running."""
        try:
            if lb is not None and self.lbs.is_alive(lb.handle_data):
                self.lbs.remove_member(lb.handle_data, server_id, Deadline(self.spec.deadlines(env).swap, f"removal of {server_id}"))
        finally:
            self._destroy_server(op, self.store.server(server_id), self.spec.deadlines(env).stop, progress=False)

    def _destroy_server(self, op: Operation, row: ServerRow | None, stop_seconds: float, progress: bool = True, record: bool = True) -> None:
        """Stop and delete one server (`progress`: a planned step, counted in the progress bar)."""
        if row is None:
            return
        self.store.update_server(row.id, state="stopping", in_service=False)
        if record:
            with op.phase("destroy", row.id):
                self.compute.destroy(row.handle_data, Deadline(stop_seconds, f"{row.id} to stop"))
        else:
            self.compute.destroy(row.handle_data, Deadline(stop_seconds, f"{row.id} to stop"))
        self.store.update_server(row.id, state="destroyed", retired_at=utcnow())
        if progress:
            self.reporter.advanced()

    # --- load balancers -------------------------------------------------------------------
    def _ensure_load_balancer(self, op: Operation, env: str, role: str) -> LoadBalancerRow:
        row = self.store.load_balancer(env, role)
        if row and self.lbs.is_alive(row.handle_data):
            return row
        env_role = self.spec.environments[env].roles[role]
        role_spec = self.spec.roles[role]
        port, address = role_spec.port, None
        if env_role.lb_address:
            address, port = env_role.lb_address.rsplit(":", 1)
            port = int(port)
        elif row:
            address, port = row.address, row.port  # a balancer that died comes back where it was
        elif not self.lbs.assigns_addresses:
            address = self._reserve_address(port)
        zone = self.spec.environments[env].dns_zone
        endpoint = self.lbs.create(
            BalancerRequest(
                env=env, role=role, port=port, health_path=role_spec.health.path, tls_port=role_spec.tls_port, address=address,
                kind=role_spec.discovery.type, public=role_spec.discovery.public,
                dns_name=f"{role_spec.discovery.dns}.{zone.rstrip('.')}" if role_spec.discovery.dns and zone else None,
                drain_seconds=self.spec.deadlines(env).drain, placement=self.spec.placement(env, role),
            )
        )
        handle, address, port = endpoint.handle, endpoint.address, endpoint.port
        row = LoadBalancerRow(env=env, role=role, address=address, port=port, handle=json.dumps(handle))
        self.store.save_load_balancer(row)
        self.reporter.info(f"{role_spec.discovery.type.replace('_', ' ')} {role} at {address}:{port}")
        # Members were in the dead balancer's memory only: whatever served must come back in.
        # A server that does not come UP is marked out of service for the plan to replace;
        # it is never destroyed here.
        tls_port = self.spec.roles[role].tls_port
        back = [s for s in self.store.servers(env, role) if s.in_service and self.compute.is_alive(s.handle_data)]
        for server in back:
            self.lbs.add_member(handle, server.id, server.address, server.port, tls_port, server=server.handle_data)
        try:
            self.poll(
                Deadline(self.spec.deadlines(env).swap, f"the {role} servers to be UP in the new balancer"),
                lambda: all(m.up for name, m in self.lbs.members(handle).items() if name in {s.id for s in back}),
                interval=0.05, max_interval=0.5,
            )
        except DeadlineExceeded:
            members = self.lbs.members(handle)
            for server in back:
                if not members.get(server.id) or not members[server.id].up:
                    self.store.update_server(server.id, in_service=False)
        return row

    # --- keeping servers phoenix -----------------------------------------------------------------
    def reconcile_plan(self, env: str) -> dict:
        """Every server that should be replaced and why (image or configuration changed,
        older than max_age, drifted, unhealthy, dead), changing nothing."""
        self.project.loaded.environment(env)
        image_ids = {name: self.compute.image_id(name, image, self.project.dir) for name, image in self.spec.images.items()}
        lbs = self.lb_addresses(env)
        resolved = self.secrets_for(env, read_only=True)
        boots = self.desired_boot(env, image_ids, lbs, resolved)
        now = utcnow()
        roles = []
        for role, env_role in self.spec.environments[env].roles.items():
            observed = [self._observe(r, inspect=True) for r in self.store.servers(env, role) if r.state != "standby"]
            plan = plan_role(
                role, env_role.count, boots[role].fingerprint, boots[role].image_id, observed, self.spec.rollout(env),
                max_age=self.spec.max_age(env, role), now=now,
            )
            missing = sum(b.launch for b in plan.batches) - len(plan.replace) - len(plan.remove_dead)
            roles.append(
                {
                    "role": role,
                    "desired": env_role.count,
                    "replace": [{"server": r.server_id, "reason": r.reason} for r in plan.replace + plan.remove_dead],
                    "retire": [{"server": r.server_id, "reason": r.reason} for r in plan.retire_extra],
                    "missing": max(missing, 0),
                    "cannot_tell": cannot_tell(boots[role], plan, observed),
                }
            )
        needed = any(r["replace"] or r["retire"] or r["missing"] for r in roles)
        return {
            "environment": env, "needs_replacement": needed, "undetermined": any(r["cannot_tell"] for r in roles),
            "roles": roles, "secret_commands": resolved.not_run,
        }

    def drift(self, env: str) -> dict:
        """Each server's files against how it booted: drift, and state written on it."""
        self.project.loaded.environment(env)
        servers = []
        for row in self.store.servers(env):
            if not self.compute.is_alive(row.handle_data):
                continue
            changes = self.file_changes(row)
            if changes is None:
                servers.append({"id": row.id, "role": row.role, "supported": False})
                continue
            servers.append(
                {
                    "id": row.id,
                    "role": row.role,
                    "supported": True,
                    "modified": changes.modified,
                    "added": changes.added,
                    "deleted": changes.deleted,
                    # new files outside scratch and persistent mounts: lost when the server goes
                    "state": changes.added,
                    "on_server_state": self.spec.roles[row.role].on_server_state if row.role in self.spec.roles else "refuse",
                }
            )
        return {"environment": env, "drifted": any(s.get("modified") or s.get("added") or s.get("deleted") for s in servers), "servers": servers}

    def reconcile(self, env: str, budget: int | None) -> OperationResult:
        """One pass of `watch`: replace what needs replacing within the budget (unhealthy and
        dead servers at once), oldest first, within the rotation limits."""
        with self.operation(env, "watch") as op:
            self._converge(op, env, roles=None, replace_outdated=True, replace_all=False, reconcile_budget=budget)
            return op.result

    # --- dry runs ---------------------------------------------------------------------------
    def describe(self, env: str, kind: str, strategy: str | None = None, role: str | None = None) -> dict:
        """What deploy, rotate or rollback would do, and why, without doing any of it."""
        self.project.loaded.environment(env)
        if role:
            self._check_env_role(env, role)
        if kind == "rollback":
            paused = self.store.paused_operation(env)
            if paused is not None:
                canaries = [r.id for r in self.store.servers(env) if r.operation_id == paused.id and r.in_service]
                return {"environment": env, "kind": kind, "action": "retire the paused canary", "servers": canaries}
            standby = [r for r in self.store.servers(env) if r.state == "standby"]
            if standby:
                return {
                    "environment": env, "kind": kind, "action": "switch back to the kept group at once",
                    "servers": [r.id for r in standby],
                    "replaces": [r.id for r in self.store.servers(env) if r.in_service and r.role in {s.role for s in standby}],
                }
            previous = self._previous_release(env)
            old = Executor(Project.from_release(self.project, previous.spec_text), self.reporter)
            described = old._describe_converge(env, "rolling", None, replace_all=False, image_ids=json.loads(previous.image_ids))
            return {**described, "kind": kind, "action": f"redeploy the release of {previous.operation_id}"}
        strategy = strategy or self.spec.rollout(env).strategy
        if kind == "rotate" and strategy == "canary":
            strategy = "rolling"
        described = self._describe_converge(env, strategy, role, replace_all=kind == "rotate")
        return {**described, "kind": kind}

    def _describe_converge(self, env: str, strategy: str, role: str | None, replace_all: bool, image_ids=None) -> dict:
        resolved = self.preflight(env, read_only=True)
        if image_ids is None:
            image_ids = {name: self.compute.image_id(name, image, self.project.dir) for name, image in self.spec.images.items()}
        lbs = self.lb_addresses(env)
        boots = self.desired_boot(env, image_ids, lbs, resolved)
        rollout = self.spec.rollout(env)
        roles = []
        for name, env_role in self.spec.environments[env].roles.items():
            if role and name != role:
                continue
            observed = [self._observe(r) for r in self.store.servers(env, name) if r.state != "standby"]
            plan = plan_role(name, env_role.count, boots[name].fingerprint, boots[name].image_id, observed, rollout, replace_all=replace_all)
            entry = {
                "role": name,
                "desired": env_role.count,
                "image": boots[name].image_id,
                "remove": [{"server": r.server_id, "reason": r.reason} for r in plan.remove_dead],
                "replace": [{"server": r.server_id, "reason": r.reason} for r in plan.replace],
                "retire_extra": [{"server": r.server_id, "reason": r.reason} for r in plan.retire_extra],
                "cannot_tell": cannot_tell(boots[name], plan, observed),
            }
            if strategy == "blue-green" and plan.replace:
                entry["steps"] = [
                    f"launch a new group of {env_role.count}, gate and warm it, stage it in the balancer",
                    f"switch all traffic to it in one step; keep the previous group for {rollout.keep_previous:g}s",
                ]
            elif strategy == "canary" and plan.replace:
                count = min(max(1, resolve_quantity(rollout.canary, env_role.count, round_up=True)), len(plan.replace))
                entry["steps"] = [
                    f"launch {count} canary server(s) beside the old ones",
                    f"watch them for {rollout.canary_time:g}s; roll back if their error rate is above the old servers' + {rollout.canary_tolerance:.1%}",
                    "then roll the rest",
                ]
            else:
                entry["steps"] = [
                    f"batch {i + 1}: retire {list(b.retire_first) or 'none'} first, launch {b.launch}, then retire {list(b.retire_after) or 'none'}"
                    for i, b in enumerate(plan.batches)
                ]
            roles.append(entry)
        return {"environment": env, "strategy": strategy, "roles": roles, "secret_commands": resolved.not_run}

    # --- what the provider can do --------------------------------------------------------------
    def doctor(self, probe: bool = False, timeout: float = 900.0) -> dict:
        """The provider's capabilities for this spec; with `probe`, how long an image and a
        server take to make (the floor of how fast a change can reach users)."""
        deadline = Deadline(timeout, "the doctor's probes")
        first = next(iter(self.spec.images.items()), None)
        sample = ImageSample(first[0], first[1], self.project.dir) if first else None
        rows = self.compute.capability_report(probe, deadline, sample) + self.lbs.capability_report()
        capabilities = self.lbs.capabilities
        rows += [
            {"capability": "rolling", "ok": True, "detail": "launch before terminate, max_surge / max_unavailable"},
            {"capability": "blue-green", "ok": "standby" in capabilities, "detail": "a kept group, switched in one step"},
            {"capability": "canary", "ok": "counters" in capabilities, "detail": "per-member error counts from the balancer"},
            {"capability": "server checks", "ok": self.compute.reaches_servers,
             "detail": "Phoenix probes new servers (listen, health, warm-up)" if self.compute.reaches_servers
             else "off: the balancer's health check is the gate; no warm-up"},
        ]
        return {"provider": self.spec.provider.name, "probe": probe, "capabilities": rows}

    # --- reading --------------------------------------------------------------------------
    def status(self, env: str) -> dict:
        self.project.loaded.environment(env)
        now = utcnow()
        servers = []
        for row in self.store.servers(env):
            alive = self.compute.is_alive(row.handle_data)
            servers.append(
                {
                    "id": row.id,
                    "role": row.role,
                    "address": f"{row.address}:{row.port}",
                    "image": row.image_id,
                    "state": row.state if alive else "dead",
                    "in_service": row.in_service and alive,
                    "launched_at": row.launched_at.isoformat(timespec="seconds") + "Z",
                    "age_s": round((now - row.launched_at).total_seconds(), 1),
                    "fingerprint": row.fingerprint,
                    **self.compute.describe(row.handle_data),
                }
            )
        load_balancers = []
        for row in self.store.load_balancers(env):
            alive = self.lbs.is_alive(row.handle_data)
            members = self.lbs.members(row.handle_data) if alive else {}
            load_balancers.append(
                {
                    "role": row.role,
                    "address": f"{row.address}:{row.port}",
                    "alive": alive,
                    "members_up": sum(1 for m in members.values() if m.up),
                    "pid": row.handle_data.get("pid"),
                    **({"tls_address": f"{row.address}:{row.handle_data['tls_port']}"} if row.handle_data.get("tls_port") else {}),
                }
            )
        return {"environment": env, "servers": servers, "load_balancers": load_balancers}

    def shortfall(self, env: str) -> dict[str, tuple[int, int]]:
        """Roles serving fewer servers than the spec wants: role -> (serving, wanted)."""
        wanted = {role: r.count for role, r in self.project.loaded.environment(env).roles.items()}
        serving = dict.fromkeys(wanted, 0)
        for row in self.store.servers(env):
            if row.role in serving and row.in_service and self.compute.is_alive(row.handle_data):
                serving[row.role] += 1
        return {role: (serving[role], count) for role, count in wanted.items() if serving[role] < count}

    def history(self, env: str, limit: int = 20) -> list[dict]:
        self.project.loaded.environment(env)
        releases = {r.operation_id: r for r in self.store.releases(env, limit=500)}
        reports = []
        for op in self.store.operations(env, limit):
            report = operation_report(self.store, op)
            release = releases.get(op.id)
            if release is not None:
                report["release"] = {
                    "kind": release.kind,
                    "reason": release.reason,
                    "images": json.loads(release.image_ids),
                    "fingerprints": json.loads(release.fingerprints),
                }
            reports.append(report)
        return reports

    # --- helpers --------------------------------------------------------------------------
    @staticmethod
    def _parallel(tasks: list[Callable], raise_first: bool = True) -> list:
        """Run tasks in threads; return results (or exceptions, with raise_first=False)."""
        if not tasks:
            return []
        outcomes: list = []
        with ThreadPoolExecutor(max_workers=min(32, len(tasks))) as pool:
            futures = [pool.submit(task) for task in tasks]
            for future in futures:
                try:
                    outcomes.append(future.result())
                except Exception as exc:  # noqa: BLE001 - handed back to the caller; an interrupt is not
                    outcomes.append(exc)
        if raise_first:
            for outcome in outcomes:
                if isinstance(outcome, BaseException):
                    raise outcome
        return outcomes


def check_provider(loaded: LoadedSpec) -> None:
    """The provider exists and can do what the spec asks of it; checked before anything runs."""
    spec, provider = loaded.spec, loaded.spec.provider.name
    try:
        capabilities = drivers.capabilities(provider)
    except KeyError:
        raise SpecError(f"{loaded.where('provider')}: provider: unknown provider {provider!r} (providers: {', '.join(drivers.names())})") from None

    def fail(loc: tuple, message: str) -> None:
        raise loaded.error(loc, message)

    for loc, rollout in [(("defaults", "rollout"), spec.defaults.rollout)] + [
        (("environments", env, "rollout"), e.rollout) for env, e in spec.environments.items() if e.rollout
    ]:
        refusal = strategy_refusal(provider, rollout.strategy, capabilities)
        if refusal:
            fail(loc + ("strategy",), refusal)
    for name, image in spec.images.items():
        for ref in ("prebuilt", "base"):
            if getattr(image, ref) is not None and "image_refs" not in capabilities:
                fail(("images", name, ref), f"provider {provider} bakes its images from the project's files; {ref} is for cloud providers")
    for name, role in spec.roles.items():
        if role.discovery.type == "floating_ip" and "floating_ip" not in capabilities:
            fail(("roles", name, "discovery", "type"), f"provider {provider} has no floating IPs")
        if role.discovery.type == "floating_ip" and not spec.provider.server_checks:
            fail(("roles", name, "discovery", "type"), "a floating IP has no health check of its own: it needs provider.server_checks")
        zoned = [env for env, e in spec.environments.items() if e.dns_zone and name in e.roles]
        if role.discovery.dns and zoned and "dns" not in capabilities:
            fail(("roles", name, "discovery", "dns"), f"provider {provider} keeps no DNS records (environment {zoned[0]} names a dns_zone)")
        if role.persistent and "persistent_layer" not in capabilities:
            fail(("roles", name, "persistent"), f"provider {provider} has no persistent layer; use a managed store (EFS, RDS, S3) and pass its address in env")
        if not spec.provider.server_checks and role.warmup and role.warmup.enabled:
            fail(("roles", name, "warmup"), "warm-up needs provider.server_checks (Phoenix crawls each new server itself); set warmup.enabled: false")


def strategy_refusal(provider: str, strategy: str, capabilities: frozenset[str]) -> str:
    """'' when the provider can run the strategy, else why not."""
    need = {"blue-green": "standby", "canary": "counters"}.get(strategy)
    if need and need not in capabilities:
        return f"provider {provider} cannot run {strategy} deployments (its balancers lack {need} members)"
    return ""


def cannot_tell(boot: BootConfig, plan: RolePlan, observed: list[ObservedServer]) -> str | None:
    """Why a read-only command cannot tell whether some of a role's servers carry what they
    should (None when it can, or when no server is left to judge: all replaced or missing):
    secret commands it does not run, with no keyed hash recorded for them."""
    decided = {r.server_id for r in plan.remove_dead + plan.replace + plan.retire_extra}
    if not boot.unknown or not any(s.alive and s.in_service and s.id not in decided for s in observed):
        return None
    return (
        f"cannot tell whether the servers' boot configuration changed: secret command(s) {', '.join(boot.unknown)} "
        "not run here, and no keyed hash recorded for the command as it stands (a deploy runs it and records one)"
    )


def describe_changes(changes: FileChanges) -> str:
    parts = []
    for label, paths in (("modified", changes.modified), ("added", changes.added), ("deleted", changes.deleted)):
        if paths:
            parts.append(f"{len(paths)} {label} ({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})")
    return ", ".join(parts)


def operation_report(store: StateStore, op) -> dict:
    """One operation with per-phase timings: servers, wall-clock span and slowest server."""
    phases: dict[str, dict] = {}
    for row in store.phases(op.id):
        entry = phases.setdefault(row.phase, {"count": 0, "failed": 0, "first": None, "last": None, "max_s": 0.0, "total_s": 0.0})
        end = row.started_at.timestamp() + row.seconds
        entry["count"] += 1
        entry["failed"] += 0 if row.ok else 1
        entry["first"] = min(filter(None, [entry["first"], row.started_at.timestamp()]))
        entry["last"] = max(filter(None, [entry["last"], end]))
        entry["max_s"] = max(entry["max_s"], row.seconds)
        entry["total_s"] += row.seconds
    ordered = {}
    for name in [p for p in PHASES if p in phases] + [p for p in phases if p not in PHASES]:
        entry = phases[name]
        ordered[name] = {
            "count": entry["count"],
            "failed": entry["failed"],
            "span_s": round(entry["last"] - entry["first"], 3),
            "max_s": round(entry["max_s"], 3),
            "total_s": round(entry["total_s"], 3),
        }
    warmups = [
        {
            "server": w.server_id, "planned": w.planned, "fetched": w.fetched, "succeeded": w.succeeded,
            "failures": w.fetched - w.succeeded, "bytes": w.bytes, "seconds": round(w.seconds, 3), "passed": w.passed,
        }
        for w in store.warmups(op.id)
    ]
    seconds = (op.ended_at - op.started_at).total_seconds() if op.ended_at else None
    return {
        "id": op.id,
        "kind": op.kind,
        "status": op.status,
        "started_at": op.started_at.isoformat(timespec="seconds") + "Z",
        "seconds": round(seconds, 3) if seconds is not None else None,
        "summary": op.summary,
        "phases": ordered,
        "warmups": warmups,
    }

