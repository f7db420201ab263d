"""The commands: `up`, `deploy`, `rotate`, `promote`, `rollback`, `recover`, `destroy`, `bake`
and a `watch` pass, each one operation under the environment's lock, journaled, recovering
first what an interrupted command left; and the read-only reports, by delegation."""

from __future__ import annotations

import json
import secrets
import time
from contextlib import contextmanager
from typing import Iterator

from ..boot.config import BootConfig
from ..deadline import Deadline
from ..drivers.base import BakeResult
from ..errors import PhoenixError, SpecError
from ..boot.secrets import Resolved
from ..state import utcnow
from .capabilities import strategy_refusal
from .operation import Operation, OperationResult, Reporter
from .parallel import run_parallel
from .project import Project
from .recovery import Recovery
from .report_types import Coverage
from .reports import Reports
from .strategies import blue_green
from .part import Part
from .wiring import Engine


class Executor(Part):
    """What the CLI (and tests, benchmarks, `watch`) call: one method per command. Like every
    part, it reads the project (spec, store, drivers, reporter) through its engine."""

    def __init__(self, project: Project, reporter: Reporter | None = None, lock_timeout: float = 0.0, discard_state: bool = False):
        super().__init__(Engine(project, reporter, lock_timeout, discard_state))
        self.reports = Reports(self.engine)

    @property
    def discard_state(self) -> bool:
        return self.engine.discard_state

    @discard_state.setter
    def discard_state(self, value: bool) -> None:
        self.engine.discard_state = value

    # --- the commands that change an environment ------------------------------------------
    @contextmanager
    def operation(self, env: str, kind: str, lock_name: str | None = None) -> Iterator[Operation]:
        """`lock_name`: the lock taken instead of the environment's (a drill locks its scratch
        copy and leaves the environment it copies free)."""
        self.project.loaded.environment(env)
        with self.store.environment_lock(self.project.workdir, lock_name or env, kind, self.engine.lock_timeout) as lock:
            op_id = f"op-{utcnow():%Y%m%d-%H%M%S}-{secrets.token_hex(3)}"
            self.store.start_operation(op_id, env, kind)
            operation = Operation(self.store, OperationResult(op_id, env, kind))
            started = time.monotonic()
            try:
                if lock.previous_holder:
                    self.reporter.info(f"took over the lock of {lock.previous_holder}, which died holding it")
                    operation.note("recovered", f"took over the lock of {lock.previous_holder}")
                if kind not in ("recover", "destroy", "rebuild", "drill") and Recovery(self.engine).unfinished(env, op_id):
                    self._recover(operation, env)
                yield operation
            except BaseException as exc:
                if isinstance(exc, Exception):
                    self._deliver_logs_quietly(operation)
                operation.result.seconds = time.monotonic() - started
                reason = str(exc) or type(exc).__name__
                operation.flush_phases()
                self.store.finish_operation(op_id, "failed", f"{operation.result.summary()}; failed: {reason}")
                raise
            self.engine.lifecycle.deliver_logs(operation)
            operation.result.seconds = time.monotonic() - started
            operation.flush_phases()
            self.store.finish_operation(op_id, operation.final_status, operation.result.summary())

    def _deliver_logs_quietly(self, operation: Operation) -> None:
        """A failed operation's retired servers' lines too, never hiding why it failed."""
        try:
            self.engine.lifecycle.deliver_logs(operation)
        except Exception:  # noqa: BLE001 - the operation's own failure is the one to report
            pass

    def bake(self, names: list[str] | None = None, no_cache: bool = False) -> list[tuple[str, str, bool, float]]:
        """Bake the named images (all by default): (name, image id, cached, seconds)."""
        return [(name, result.image_id, result.cached, result.seconds) for name, result in self.bake_layers(names, no_cache)]

    def bake_layers(self, names: list[str] | None = None, no_cache: bool = False) -> list[tuple[str, BakeResult]]:
        """Bake the named images (all by default), each with its layers' hits, times and sizes;
        `no_cache` rebuilds every layer."""
        names = names or list(self.spec.images)
        for name in names:
            if name not in self.spec.images:
                known = ", ".join(sorted(self.spec.images))
                raise SpecError(f"{self.project.loaded.path.name}: unknown image {name!r} (images: {known})")
        return [(name, self.engine.converger.bake_image(name, None, no_cache)[4]) for name in names]

    def up(self, env: str) -> OperationResult:
        """Create the environment from nothing, or complete it; changes nothing when complete."""
        with self.operation(env, "up") as op:
            self.engine.converger.converge(op, env, roles=None, replace_outdated=False, replace_all=False)
            return op.result

    def deploy(
        self, env: str, strategy: str | None = None, pause: bool = False, image_ids: dict[str, str] | None = None,
        release_of: str | None = None, release: str | None = None,
    ) -> OperationResult:
        """Bake (unless given the images), then replace every server whose fingerprint changed,
        with the environment's strategy (or the one given): rolling, blue-green or canary; an
        in-place environment has its servers updated where they stand instead. `release_of`
        (an environment) or `release` (an operation id from `history`): deploy exactly that
        release's images and configuration, baking nothing (promotion)."""
        self.project.loaded.environment(env)
        source = self.engine.releases.source(release_of, release)
        in_place = self.spec.environments[env].mode == "in-place"
        if in_place:
            if strategy not in (None, "rolling") or pause:
                raise PhoenixError(f"environment {env} is in-place: its servers are updated where they stand (--strategy and --pause are for phoenix environments)")
            self.engine.in_place.check_able(env)
        else:
            strategy = strategy or self.spec.rollout(env).strategy
            refusal = strategy_refusal(self.spec.provider.name, strategy, self.lbs.capabilities)
            if refusal:
                raise PhoenixError(refusal)
        with self.operation(env, "deploy") as op:
            engine, reason = self.engine, ""
            if source is not None:
                engine = self.engine.for_project(Project.from_release(self.project, source.spec_text))
                engine.project.loaded.environment(env)
                image_ids, reason = json.loads(source.image_ids), f"promoted: the release of {source.operation_id} ({source.env})"
                self.reporter.info(f"deploying the release of {source.operation_id} ({source.env}): images {', '.join(image_ids.values())}")
            if in_place:
                engine.in_place.deploy(op, env, image_ids, release_reason=reason)
            else:
                self._supersede_paused(env)
                engine.converger.converge(
                    op, env, roles=None, replace_outdated=True, replace_all=False, strategy=strategy, pause=pause, image_ids=image_ids,
                    release_reason=reason,
                )
            return op.result

    def deploy_many(
        self, envs: list[str], strategy: str | None = None, release_of: str | None = None, release: str | None = None
    ) -> list[tuple[str, OperationResult | Exception]]:
        """One build to several environments: baked once, then deployed to each side by side,
        each its own locked, journaled operation. One failing neither stops nor undoes the
        others: each environment's result or error, in the order given."""
        for env in envs:
            self.project.loaded.environment(env)
        self.engine.releases.source(release_of, release)  # refused before anything starts
        image_ids: dict[str, str] | None = None
        if release_of is None and release is None:
            needed = sorted({self.spec.roles[role].image for env in envs for role in self.spec.environments[env].roles})
            image_ids = {name: image_id for name, image_id, _, _ in (self.engine.converger.bake_one(n, None) for n in needed)}

        def deploy_one(env: str) -> OperationResult:
            own = None
            if image_ids is not None:
                own = {self.spec.roles[r].image: image_ids[self.spec.roles[r].image] for r in self.spec.environments[env].roles}
            return self.deploy(env, strategy, image_ids=own, release_of=release_of, release=release)

        return list(zip(envs, run_parallel([lambda e=e: deploy_one(e) for e in envs], raise_first=False)))

    def rotate(self, env: str, role: str | None = None) -> OperationResult:
        """Replace every server even if nothing changed: the phoenix rebirth. Same build, so
        a canary has nothing to compare: canary environments rotate rolling."""
        self.project.loaded.environment(env)
        self.refuse_in_place(env, "rotate", "replaces every server")
        if role:
            self.check_env_role(env, role)
        strategy = self.spec.rollout(env).strategy
        with self.operation(env, "rotate") as op:
            self._supersede_paused(env)
            self.engine.converger.converge(
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
            self.engine.converger.converge(op, env, roles=None, replace_outdated=True, replace_all=False, strategy="rolling")
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
                    self.engine.lifecycle.retire_all(op, env, role, [row.id for row in canaries if row.role == role], lb)
                self.store.set_operation_status(paused.id, "rolled back", f"rolled back by {op.id}")
                self.reporter.info(f"canary of {paused.id} rolled back: {len(canaries)} server(s) retired")
                return op.result
            standby_roles = sorted({row.role for row in self.store.servers(env) if row.state == "standby"})
            lbs = {role: self.store.load_balancer(env, role) for role in standby_roles}
            # Every role switched back first, then the groups it replaced drained side by side:
            # clients see the previous build everywhere at once, not one role after another's drain.
            replaced = {role: blue_green.switch_back(self.engine.lifecycle, op, env, role, lbs[role]) for role in standby_roles}
            switched = [role for role in standby_roles if replaced[role] is not None]
            run_parallel([
                lambda r=role: self.engine.lifecycle.retire_all(op, env, r, [row.id for row in replaced[r]], lbs[r]) for role in switched
            ])
            if switched and len(switched) == len(standby_roles):
                self.engine.releases.record(op, env, "rollback", f"switched back to the kept group of {', '.join(switched)}")
                return op.result
            # no kept group, or one that could not serve: the previous release, rolling
            # (roles already switched back match it and are left alone)
            self._redeploy_previous(op, env)
            return op.result

    def refuse_in_place(self, env: str, command: str, does: str) -> None:
        if self.spec.environments[env].mode == "in-place":
            raise PhoenixError(
                f"{command} refused: environment {env} is in-place (mode: in-place): its servers live on and `phoenix deploy {env}` "
                f"updates them where they stand; {command} {does}, which only phoenix environments do"
            )

    def _redeploy_previous(self, op: Operation, env: str) -> None:
        previous = self.engine.releases.previous(env)
        image_ids = json.loads(previous.image_ids)
        for name, image_id in image_ids.items():
            image = self.store.image(image_id)
            if image is None or not self.compute.image_available(image_id, image.location):
                raise PhoenixError(f"image {image_id} of the previous release ({previous.operation_id}) is gone")
        old = Project.from_release(self.project, previous.spec_text)
        self.reporter.info(f"redeploying the release of {previous.operation_id} ({previous.kind}, {previous.created_at:%Y-%m-%d %H:%M:%S} UTC)")
        if self.spec.environments[env].mode == "in-place":
            self.engine.for_project(old).in_place.deploy(
                op, env, image_ids, release_kind="rollback", release_reason=f"back to the release of {previous.operation_id}"
            )
            return
        self.engine.for_project(old).converger.converge(
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
        for action in Recovery(self.engine).recover(op, env):
            self.reporter.info(f"recover: {action}")
            op.note("recovered", action)

    def destroy(self, env: str) -> OperationResult:
        """Stop and remove every server and load balancer of the environment."""
        with self.operation(env, "destroy") as op:
            deadlines = self.spec.deadlines(env)
            for interrupted in Recovery(self.engine).unfinished(env, op.id):
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
            run_parallel([lambda s=s: self.engine.lifecycle.destroy_server(op, s, deadlines.stop) for s in servers])
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

    def reconcile(self, env: str, budget: int | None) -> OperationResult:
        """One pass of `watch`: replace what needs replacing within the budget (unhealthy and
        dead servers at once), oldest first, within the rotation limits."""
        self.refuse_in_place(env, "watch", "replaces outdated, old, drifted and unhealthy servers")
        with self.operation(env, "watch") as op:
            self.engine.converger.converge(op, env, roles=None, replace_outdated=True, replace_all=False, reconcile_budget=budget)
            return op.result

    # --- read-only, by delegation -----------------------------------------------------------
    def check_env_role(self, env: str, role: str) -> None:
        self.engine.inspector.check_env_role(env, role)

    def lb_addresses(self, env: str) -> dict[str, str]:
        return self.engine.inspector.lb_addresses(env)

    def secrets_for(self, env: str, read_only: bool) -> Resolved:
        return self.engine.inspector.secrets_for(env, read_only)

    def desired_boot(
        self, env: str, image_ids: dict[str, str], lb_addresses: dict[str, str], resolved: Resolved | None = None
    ) -> dict[str, BootConfig]:
        return self.engine.inspector.desired_boot(env, image_ids, lb_addresses, resolved)

    def preflight(self, env: str, read_only: bool = False) -> Resolved:
        return self.engine.inspector.preflight(env, read_only)

    # the `--json` contract, as plain dicts (tests and benchmarks read these); inside src/, the
    # typed reports: `executor.reports.status(env)` and the like (engine/report_types.py)
    def status(self, env: str) -> dict:
        return self.reports.status(env).as_json()

    def history(self, env: str, limit: int = 20) -> list[dict]:
        return [op.as_json() for op in self.reports.history(env, limit)]

    def drift(self, env: str) -> dict:
        return self.reports.drift(env).as_json()

    def reconcile_plan(self, env: str) -> dict:
        return self.reports.reconcile_plan(env).as_json()

    def describe(self, env: str, kind: str, strategy: str | None = None, role: str | None = None) -> dict:
        return self.reports.describe(env, kind, strategy, role).as_json()

    def compare(self, env_a: str, env_b: str) -> dict:
        """Build by build: the time to live in each environment, their ratio, failed deploys."""
        return self.engine.time_to_live.compare(env_a, env_b).as_json()

    def doctor(self, probe: bool = False, timeout: float = 900.0) -> dict:
        return self.reports.doctor(probe, timeout).as_json()

    def shortfall(self, env: str) -> dict[str, Coverage]:
        """Roles serving fewer servers than the spec wants: role -> (serving, wanted)."""
        return self.reports.shortfall(env)
