"""Converging an environment: bake what is missing, make its balancers, plan each role
(pure: `plan.plan_role`), then carry the plans out role by role (each after the roles it
depends on) with a strategy; a deploy that fails part-way goes back to the release served
before it, so the environment ends on one release."""

from __future__ import annotations

import json

from ..boot.config import BootConfig
from ..deadline import Deadline
from ..errors import PhoenixError
from ..plan import RolePlan
from ..spec import role_waves
from ..state import ImageRow, LoadBalancerRow, ReleaseRow, utcnow
from . import strategies
from .operation import Operation
from .parallel import run_parallel
from .part import Part
from .project import Project
from .strategies import blue_green


class Converger(Part):
    """An environment to its plan."""

    def converge(
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
        resolved = self.engine.inspector.preflight(env)  # secrets read once, for the checks and the launches
        if image_ids is None:
            image_names = sorted({self.spec.roles[role].image for role in env_spec.roles})
            image_ids = {name: image_id for name, image_id, _, _ in (self.bake_one(n, op) for n in image_names)}
        self.store.set_operation_images(op.id, image_ids)  # the build it carries, kept even when it fails (`compare`)
        # Side by side: a cloud balancer takes minutes to become active.
        all_roles = list(env_spec.roles)
        lbs = dict(zip(all_roles, run_parallel([lambda r=r: self.engine.balancers.ensure(op, env, r) for r in all_roles])))
        self.engine.balancers.expire_standby(op, env, lbs)
        boots = self.engine.inspector.desired_boot(env, image_ids, {role: f"{lb.address}:{lb.port}" for role, lb in lbs.items()}, resolved)
        plans: list[RolePlan] = []
        reconcile = reconcile_budget is not None
        for role in env_spec.roles:
            if roles and role not in roles:
                continue
            boot = boots[role]
            observed = self.engine.inspector.observe_role(env, role, inspect=reconcile)

            def plan_with(keep: frozenset[str]) -> RolePlan:
                return self.engine.inspector.plan(
                    env, role, boot, observed, replace_all=replace_all, replace_outdated=replace_outdated,
                    max_age=self.spec.max_age(env, role) if reconcile else None, now=utcnow(), budget=reconcile_budget, keep=keep,
                )

            plan, refused = plan_with(frozenset()), {}
            while refusals := self.engine.inspector.state_refusals(env, [r.server_id for r in plan.replace + plan.retire_extra]):
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
                paused += run_parallel(
                    [lambda p=by_role[r]: self.execute_role(op, env, p, lbs[p.role], boots[p.role], strategy, pause) for r in wave]
                )
        except PhoenixError as failure:
            if op.result.kind in ("deploy", "promote") and release_kind is None:
                self.after_failed_release(op, env, {role: boot.fingerprint for role, boot in boots.items()}, failure)
            raise
        if roles is None:
            self.engine.balancers.retire_removed_roles(op, env)
        if op.result.refused:
            op.final_status = "incomplete"  # what it may was done; the refused servers wait
        if any(paused):
            op.final_status, op.result.paused = "paused", True
            self.reporter.info(f"canary in service; `phoenix promote {env}` rolls the rest, `phoenix rollback {env}` retires it")
            return plans
        reasons = sorted({r.reason for p in plans for r in p.replace})
        self.engine.releases.record(op, env, release_kind or op.result.kind, release_reason or "; ".join(reasons), image_ids, boots)
        return plans

    def execute_role(
        self, op: Operation, env: str, plan: RolePlan, lb: LoadBalancerRow, boot: BootConfig, strategy: str = "rolling", pause: bool = False
    ) -> bool:
        """Carry out one role's plan with a strategy; True when a canary paused."""
        steps = self.engine.lifecycle
        steps.remove_dead(op, env, lb, plan)
        for replacement in plan.replace:
            self.reporter.info(f"{plan.role}: will replace {replacement.server_id}: {replacement.reason}")
        paused = strategies.strategy(strategy).run(steps, op, env, plan, lb, boot, pause)
        steps.retire_all(op, env, plan.role, [r.server_id for r in plan.retire_extra], lb)
        return paused

    def after_failed_release(self, op: Operation, env: str, new: dict[str, str], failure: PhoenixError) -> None:
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
                self.roll_back_roles(op, env, moved, previous)
            except PhoenixError as undo:
                undo_failed = f"; rolling back failed too: {undo}"
        failure.args = (f"{failure}{undo_failed}; {self.engine.releases.serving_summary(env, previous, before, new)}",)

    def roll_back_roles(self, op: Operation, env: str, roles: list[str], previous: ReleaseRow) -> None:
        """Roles back to a release: a switch back to a kept group where there is one, else
        a rolling redeploy of that release's spec and images."""
        steps = self.engine.lifecycle
        switched = [role for role in roles if blue_green.switch_back(steps, op, env, role, self.store.load_balancer(env, role))]
        rest = [role for role in roles if role not in switched]
        if rest:
            old = Project.from_release(self.project, previous.spec_text)
            self.engine.for_project(old).converger.converge(
                op, env, roles=rest, replace_outdated=True, replace_all=False, strategy="rolling",
                image_ids=json.loads(previous.image_ids), release_kind="rollback",
                release_reason=f"a failed {op.result.kind} rolled back to the release of {previous.operation_id}",
            )

    def bake_one(self, name: str, op: Operation | None, no_cache: bool = False) -> tuple[str, str, bool, float]:
        return self.bake_image(name, op, no_cache)[:4]

    def bake_image(self, name: str, op: Operation | None, no_cache: bool = False):
        """Bake one image (its layers from the cache where their inputs are unchanged): (name,
        image id, cached, seconds, the BakeResult). An operation's history records the layers."""
        recipe = self.spec.images[name]
        deadline = Deadline(recipe.bake_timeout, f"bake of image {name}")
        if op:
            with op.phase("bake"):
                result = self.compute.bake(name, recipe, self.project.dir, deadline, no_cache=no_cache)
        else:
            result = self.compute.bake(name, recipe, self.project.dir, deadline, no_cache=no_cache)
        if not result.cached:
            self.store.save_image(
                ImageRow(id=result.image_id, name=name, provider=self.compute.name, location=result.location, bake_seconds=result.seconds)
            )
            if op:
                op.note("baked", result.image_id)
        elif self.store.image(result.image_id) is None:
            self.store.save_image(ImageRow(id=result.image_id, name=name, provider=self.compute.name, location=result.location))
        layers = ", ".join(f"{layer.name} {'hit' if layer.cached else 'built'}" for layer in result.layers)
        if op and layers:
            op.note("layers", f"{name}: {layers}")
        done = "cache hit" if result.cached else f"baked in {result.seconds:.2f}s"
        self.reporter.info(f"image {name}: {result.image_id} ({done}{'; layers ' + layers if layers and not result.cached else ''})")
        return name, result.image_id, result.cached, result.seconds, result
