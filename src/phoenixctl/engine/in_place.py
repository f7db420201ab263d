"""In-place environments (`mode: in-place`): the servers a team already has, updated where
they stand, so one pipeline can deploy every build to them and to their phoenix replicas.

`up` creates their servers as it creates any (launch, gate, swap in); a deploy then updates
each where it stands, batch by batch within the rollout limits: out of its balancer and
drained, updated (the provider's built-in update, or the team's `in_place.command`), started
again, gated (process, health, warm-up, the balancer's check), put back. A server keeps its
id, address and age. The only server of a role cannot leave its balancer without an outage:
it is updated while it serves and restarted under the balancer's retries.

A failed update puts that server back on its previous build (gated again); when even that
fails, it stays out of service, the role is served by the others, and the deploy fails
saying which. Servers updated in earlier batches keep the new build: the error says which
server serves which."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from ..boot.config import BootConfig
from ..deadline import Deadline
from ..drivers.base import LaunchRequest, UpdateRequest
from ..errors import PhoenixError
from ..faults import failpoint
from ..plan import RolePlan, rollout_limits
from ..spec import role_waves
from ..state import LoadBalancerRow, ServerRow, utcnow
from .operation import Operation
from .parallel import run_parallel
from .part import Part


def batch_size(serving: int, desired: int, rollout) -> int:
    """Servers of a role updated at once: `max_unavailable` of them (at least one: an in-place
    server is unavailable while it updates, there is no surge), never the last one serving."""
    _, unavailable = rollout_limits(desired, rollout)
    return max(1, min(max(unavailable, 1), serving - 1))


def describe(plan: RolePlan, desired: int, rollout) -> list[str]:
    """A dry run of one role of an in-place deploy: what is launched, then what is updated."""
    missing = sum(b.launch for b in plan.batches) - len(plan.replace)
    steps = [f"launch {missing} missing server(s) from the new build"] if missing > 0 else []
    outdated = [r.server_id for r in plan.replace]
    serving = max(desired, 1)
    size = batch_size(serving, desired, rollout)
    for number, start in enumerate(range(0, len(outdated), size), start=1):
        how = "drain, update, restart, gate, put back" if serving > 1 else "update while it serves, restart with checks held, gate"
        steps.append(f"batch {number}: update {outdated[start : start + size]} where they stand ({how})")
    return steps


class InPlace(Part):
    """Deploys to in-place environments."""

    def check_able(self, env: str) -> None:
        if "in_place" not in self.compute.capabilities:
            raise PhoenixError(f"environment {env} is in-place, and provider {self.compute.name} cannot update servers in place")

    def deploy(
        self, op: Operation, env: str, image_ids: dict[str, str] | None = None, release_kind: str | None = None, release_reason: str = ""
    ) -> None:
        self.check_able(env)
        env_spec = self.spec.environments[env]
        resolved = self.engine.inspector.preflight(env)  # secrets read once, for the checks and the launches
        if image_ids is None:
            names = sorted({self.spec.roles[role].image for role in env_spec.roles})
            image_ids = {name: image_id for name, image_id, _, _ in (self.engine.converger.bake_one(n, op) for n in names)}
        self.store.set_operation_images(op.id, image_ids)
        roles = list(env_spec.roles)
        lbs = dict(zip(roles, run_parallel([lambda r=r: self.engine.balancers.ensure(op, env, r) for r in roles])))
        boots = self.engine.inspector.desired_boot(env, image_ids, {role: f"{lb.address}:{lb.port}" for role, lb in lbs.items()}, resolved)
        for wave in role_waves(self.spec, roles):
            outcomes = run_parallel([lambda r=r: self.deploy_role(op, env, r, lbs[r], boots[r]) for r in wave], raise_first=False)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                reasons = "; ".join(str(f) for f in failures)
                raise PhoenixError(f"in-place deploy of {env} failed: {reasons}; {self.serving_summary(env, boots)}")
        self.engine.balancers.retire_removed_roles(op, env)
        self.engine.releases.record(op, env, release_kind or op.result.kind, release_reason or "updated in place", image_ids, boots)

    def deploy_role(self, op: Operation, env: str, role: str, lb: LoadBalancerRow, boot: BootConfig) -> None:
        """Missing and dead servers are launched from the new build (as `up` would), then every
        server of an older build is updated where it stands, a batch at a time."""
        steps = self.engine.lifecycle
        plan = self.engine.inspector.plan(env, role, boot, self.engine.inspector.observe_role(env, role), replace_outdated=False)
        steps.remove_dead(op, env, lb, plan)
        for batch in plan.batches:
            steps.run_batch(op, env, role, batch, lb, boot)
        steps.retire_all(op, env, role, [r.server_id for r in plan.retire_extra], lb)
        serving = [row for row in self.store.servers(env, role) if row.in_service]
        outdated = [row for row in serving if row.fingerprint != boot.fingerprint]
        self.reporter.planned(len(outdated))
        size = batch_size(len(serving), self.spec.environments[env].roles[role].count, self.spec.rollout(env))
        for start in range(0, len(outdated), size):
            chunk = outdated[start : start + size]
            outcomes = run_parallel([lambda r=r: self.update_server(op, env, r, lb, boot, sole=len(serving) == 1) for r in chunk], raise_first=False)
            failures = [o for o in outcomes if isinstance(o, BaseException)]
            if failures:
                raise failures[0]

    def update_server(self, op: Operation, env: str, row: ServerRow, lb: LoadBalancerRow, boot: BootConfig, sole: bool) -> None:
        deadlines = self.spec.deadlines(env)
        if sole:
            self.reporter.info(f"{row.role}: {row.id} is the only {row.role} server: updated while it serves, restarted under the balancer's retries")
        else:
            self.engine.lifecycle.drain(op, env, row.role, row.id, lb, then="updating it anyway")
        self.store.update_server(row.id, state="updating", in_service=sole)
        try:
            with op.phase("update", row.id), self.held(lb, row.id, sole):
                handle = self.compute.update_in_place(
                    row.handle_data, self.update_request(op, env, row, boot), Deadline(deadlines.boot + deadlines.health, f"in-place update of {row.id}")
                )
                self.store.update_server(row.id, handle=handle)
                failpoint("update")  # updated and restarted, not yet gated
                self.engine.lifecycle.wait_listening(self.store.server(row.id), Deadline(deadlines.boot, f"{row.id} to listen"))
            self.gate_and_put_back(op, env, row.id, lb, image_id=boot.image_id, fingerprint=boot.fingerprint)
        except BaseException as exc:
            if not isinstance(exc, Exception):
                raise  # an interrupt stays an interrupt: recovery finds the server as the journal left it
            self.reporter.info(f"{row.role}: {row.id} update failed: {exc}")
            raise PhoenixError(f"{exc}; {self.put_back(op, env, row, lb, sole)}") from None
        self.compute.forget_previous(self.store.server(row.id).handle_data)
        op.note("updated", row.id)
        self.reporter.info(f"{row.role}: {row.id} updated in place to {boot.image_id}")
        self.reporter.advanced()

    @contextmanager
    def held(self, lb: LoadBalancerRow, server_id: str, sole: bool) -> Iterator[None]:
        """The only server of a role restarts in its balancer: its checks are held meanwhile,
        so the restart's refused connections are retried, not answered 503."""
        if sole:
            self.lbs.hold_checks(lb.handle_data, server_id, True)
        try:
            yield
        finally:
            if sole:
                self.lbs.hold_checks(lb.handle_data, server_id, False)

    def put_back(self, op: Operation, env: str, row: ServerRow, lb: LoadBalancerRow, sole: bool) -> str:
        """After a failed update: the server back on its previous build, gated again; says how it went."""
        deadlines = self.spec.deadlines(env)
        try:
            current = self.store.server(row.id).handle_data
            with self.held(lb, row.id, sole):
                handle = self.compute.restore_previous(current, Deadline(deadlines.boot + deadlines.stop, f"{row.id} back to its previous build"))
                self.store.update_server(row.id, handle=handle)
                self.engine.lifecycle.wait_listening(self.store.server(row.id), Deadline(deadlines.boot, f"{row.id} to listen"))
            self.gate_and_put_back(op, env, row.id, lb)
            return f"{row.id} was put back on its previous build ({row.image_id}) and serves again"
        except Exception as undo:  # noqa: BLE001 - said in the deploy's error
            self.store.update_server(row.id, state="failed", in_service=False)
            try:
                self.lbs.drain_member(lb.handle_data, row.id)
            except Exception:  # noqa: BLE001 - a balancer that cannot be reached sends it nothing either
                pass
            others = sum(1 for r in self.store.servers(env, row.role) if r.in_service and r.id != row.id)
            return f"{row.id} could not be put back ({undo}): it is out of service, {row.role} is served by {others} other server(s)"

    def resume(self, op: Operation, env: str, lb: LoadBalancerRow, row: ServerRow) -> str:
        """Recovery: an in-place update interrupted part-way. The server goes back on what it
        ran before (when that was kept; else it still runs it), gated, into service."""
        deadlines = self.spec.deadlines(env)
        try:
            self.lbs.hold_checks(lb.handle_data, row.id, False)  # the only server of a role may have died with them held
            try:
                handle = self.compute.restore_previous(row.handle_data, Deadline(deadlines.boot + deadlines.stop, f"{row.id} back to its previous build"))
                self.store.update_server(row.id, handle=handle)
            except PhoenixError:
                if not self.compute.is_alive(row.handle_data):
                    raise
            self.gate_and_put_back(op, env, row.id, lb)
        except Exception as exc:  # noqa: BLE001 - reported; the next deploy replaces what is out of service
            self.store.update_server(row.id, state="failed", in_service=False)
            return f"{row.role}: {row.id} was being updated in place and could not be put back ({exc}): out of service"
        return f"{row.role}: {row.id} was being updated in place: back on its previous build, in service"

    def gate_and_put_back(self, op: Operation, env: str, server_id: str, lb: LoadBalancerRow, **fields) -> None:
        """Every gate a new server passes, then back into its balancer (a sole server never left)."""
        steps, deadlines = self.engine.lifecycle, self.spec.deadlines(env)
        row = self.store.server(server_id)
        # The journal says "updating" until it serves again: recovery then puts it back (`resume`).
        with op.phase("boot", server_id):
            steps.wait_listening(row, Deadline(deadlines.boot, f"{server_id} to listen"))
        with op.phase("health", server_id):
            steps.wait_healthy(row, Deadline(deadlines.health, f"{server_id} to pass its health check"))
        warmup = self.spec.warmup(env, row.role)
        if warmup and self.compute.reaches_servers:
            with op.phase("warmup", server_id):
                steps.warm(op, row, warmup)
        with op.phase("swap", server_id):
            steps.switch(lb, enable=[server_id], disable=[])  # the shared view of members forgets its drain
            self.poll(
                Deadline(deadlines.swap, f"the {row.role} load balancer to report {server_id} UP"),
                lambda: steps.member_up(lb, row), interval=0.05, max_interval=0.1,
            )
        self.store.update_server(server_id, state="in_service", in_service=True, serving_since=utcnow(), **fields)

    def update_request(self, op: Operation, env: str, row: ServerRow, boot: BootConfig) -> UpdateRequest:
        image, previous = self.store.image(boot.image_id), self.store.image(row.image_id)
        recipe = self.spec.images[self.spec.roles[row.role].image]
        in_place = self.spec.environments[env].in_place
        launch = LaunchRequest(
            server_id=row.id, env=env, role=row.role, image_id=boot.image_id, image_location=image.location, port=boot.port,
            command=boot.command, userdata=boot.userdata, boot_env={"PHOENIX_SERVER_ID": row.id},
            boot_timeout=self.spec.deadlines(env).boot, tls_port=self.spec.roles[row.role].tls_port,
            logs=self.spec.logs(env), tags={"release": self.engine.lifecycle.release(op, env, row.role, boot)},
        )
        return UpdateRequest(
            launch=launch, previous_location=previous.location if previous else image.location,
            steps=tuple(step for layer in recipe.all_layers() for step in layer.steps),
            script=in_place.command if in_place else None, project_dir=str(self.project.dir),
        )

    def serving_summary(self, env: str, boots: dict[str, BootConfig]) -> str:
        """Which server serves which build, in one line."""
        new, old, out = [], [], []
        for row in self.store.servers(env):
            (out if not row.in_service else new if row.fingerprint == boots[row.role].fingerprint else old).append(row.id)
        parts = [f"the new build on {', '.join(new)}" if new else "", f"the previous build on {', '.join(old)}" if old else ""]
        serves = f"{env} serves " + "; ".join(p for p in parts if p) if new or old else f"{env} serves nothing"
        return serves + (f"; out of service: {', '.join(out)}" if out else "")
