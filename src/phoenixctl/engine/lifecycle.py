"""One server's life: launch -> boot -> health -> warm-up -> swap in -> drain -> remove ->
stop -> destroy, each step journaled in the state store before and after it happens, every
wait bounded by a deadline, every failure leaving the old servers serving.

A new server enters service only when its process is up, its own health check passes, its
warm-up is done and the load balancer's check reports it UP. Retiring a server is: stop new
traffic at the balancer -> wait for its sessions to reach zero -> remove it -> stop ->
destroy; never the last server of a role that wants one. A failed batch destroys its new
servers. This is also the narrow set of steps the strategies work with (`RolloutSteps`)."""

from __future__ import annotations

import json
import secrets
import threading

from ..boot.config import BootConfig
from ..deadline import Deadline, DeadlineExceeded
from ..drivers.base import LaunchRequest
from ..errors import GateFailed, PhoenixError
from ..faults import failpoint
from ..plan import Batch, RolePlan
from ..state import LoadBalancerRow, ServerRow, WarmupRow, utcnow
from .operation import Operation
from .parallel import run_parallel
from .part import Part
from .shipping import await_delivery, release_of, undelivered


class Lifecycle(Part):
    """Launching, gating, swapping, retiring and destroying servers."""

    # --- groups and batches: what the strategies use ----------------------------------------
    def launch_group(self, op: Operation, env: str, role: str, boot: BootConfig, count: int) -> list[ServerRow]:
        """Launch and gate `count` servers side by side: all of them, or none (destroyed)."""
        image = self.store.image(boot.image_id)  # once for the group
        outcomes = run_parallel([lambda: self.launch_and_gate(op, env, role, boot, image.location) for _ in range(count)], raise_first=False)
        ready = [o for o in outcomes if isinstance(o, ServerRow)]
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            # Nothing of this group has taken traffic yet: destroy it all, the old servers keep serving.
            run_parallel([lambda s=s: self.destroy_server(op, s, self.spec.deadlines(env).stop) for s in ready])
            raise failures[0]
        return ready

    def run_batch(self, op: Operation, env: str, role: str, batch: Batch, lb: LoadBalancerRow, boot: BootConfig) -> list[ServerRow]:
        self.retire_all(op, env, role, list(batch.retire_first), lb)
        ready = self.launch_group(op, env, role, boot, batch.launch)
        outcomes = run_parallel([lambda s=s: self.swap_in(op, env, s, lb) for s in ready], raise_first=False)
        failures = [o for o in outcomes if isinstance(o, BaseException)]
        if failures:
            swapped = [s for s, o in zip(ready, outcomes) if not isinstance(o, BaseException)]
            self.retire_all(op, env, role, [s.id for s in swapped], lb)
            raise failures[0]
        for server in ready:
            op.note("launched", server.id)
        self.retire_all(op, env, role, list(batch.retire_after), lb)
        return ready

    # --- one new server -------------------------------------------------------------------

    def launch_and_gate(self, op: Operation, env: str, role: str, boot: BootConfig, image_location: str) -> ServerRow:
        if not boot.deliverable:  # made for reading: stand-ins where secret commands were not run
            raise PhoenixError(f"internal: the boot configuration of {env}/{role} was made without running its secret commands")
        deadlines = self.spec.deadlines(env)
        for _ in range(8):  # 24 random bits: ids of a large fleet (and of the servers it had) do meet
            server_id = f"{role}-{secrets.token_hex(3)}"
            row = ServerRow(
                id=server_id, env=env, role=role, image_id=boot.image_id, fingerprint=boot.fingerprint,
                address="", port=boot.port, state="launching", operation_id=op.id,
            )
            if self.store.add_server(row):
                break
        else:
            raise PhoenixError(f"internal: no free server id for {env}/{role} after 8 tries")
        try:
            with op.phase("launch", server_id):
                launched = self.compute.launch(
                    LaunchRequest(
                        server_id=server_id, env=env, role=role, image_id=boot.image_id, image_location=image_location,
                        port=boot.port, command=boot.command, userdata=boot.userdata,
                        boot_env={"PHOENIX_SERVER_ID": server_id}, boot_timeout=deadlines.boot,
                        tls_port=self.spec.roles[role].tls_port, placement=self.spec.placement(env, role),
                        discovery=self.spec.roles[role].discovery, logs=self.spec.logs(env),
                        tags={"fingerprint": boot.fingerprint, "operation": op.id, "release": self.release(op, env, role, boot)},
                    ),
                )
            failpoint("launch")  # started, not yet recorded
            self.store.update_server(server_id, address=launched.address, handle=launched.handle, state="booting")
            row.address, row.handle, row.state = launched.address, json.dumps(launched.handle), "booting"  # as just written
            with op.phase("boot", server_id):
                self.wait_listening(row, Deadline(deadlines.boot, f"{server_id} to listen"))
            self.store.update_server(server_id, state="checking")
            with op.phase("health", server_id):
                failpoint("health")
                self.wait_healthy(row, Deadline(deadlines.health, f"{server_id} to pass its health check"))
            warmup_spec = self.spec.warmup(env, role)
            if warmup_spec and not self.compute.reaches_servers:
                self.reporter.info(f"{role}: {server_id} not warmed: {self.compute.unreachable}")
            elif warmup_spec:
                self.store.update_server(server_id, state="warming")
                with op.phase("warmup", server_id):
                    failpoint("warmup")
                    self.warm(op, row, warmup_spec)
            self.store.update_server(server_id, state="ready")
            self.reporter.info(f"{role}: {server_id} on {row.address}:{row.port} is healthy")
            self.reporter.advanced()
            return row
        except BaseException as exc:
            self.reporter.info(f"{role}: {server_id} failed: {exc}")
            self.destroy_server(op, self.store.server(server_id), deadlines.stop, progress=False)
            if isinstance(exc, GateFailed) or not isinstance(exc, Exception):
                raise  # an interrupt stays an interrupt
            raise GateFailed(server_id, "launch", str(exc)) from exc

    def wait_listening(self, row: ServerRow, deadline: Deadline) -> None:
        def listening() -> bool:
            self.check_alive(row, "boot")
            return self.compute.listening(row.handle_data, row.address, row.port)

        try:
            self.poll(deadline, listening, interval=0.02, max_interval=0.1)
        except DeadlineExceeded as exc:
            raise GateFailed(row.id, "boot", str(exc), self.compute.log_excerpt(row.handle_data)) from None

    def wait_healthy(self, row: ServerRow, deadline: Deadline) -> None:
        health = self.spec.roles[row.role].health
        last = "no answer"
        answers: set[str] = set()

        def healthy() -> bool:
            nonlocal last
            self.check_alive(row, "health")
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

    def warm(self, op: Operation, row: ServerRow, spec) -> None:
        from .. import warmup  # the crawler (httpx, lxml) loads with the first server it warms

        result = warmup.warm(f"http://{row.address}:{row.port}", spec)
        passed = result.passed(spec)
        self.store.record_warmup(
            WarmupRow(
                operation_id=op.id, server_id=row.id, planned=result.planned, fetched=result.fetched,
                succeeded=result.succeeded, bytes=result.bytes, seconds=result.seconds, passed=passed,
                summary=result.summary(),
            )
        )
        self.check_alive(row, "warm-up")
        if not passed:
            raise GateFailed(row.id, "warm-up", f"{result.summary()}; {spec.min_success:.0%} needed")
        self.reporter.info(f"{row.role}: {row.id} warmed: {result.summary()}")

    def check_alive(self, row: ServerRow, gate: str) -> None:
        if not self.compute.is_alive(row.handle_data):
            raise GateFailed(row.id, gate, "its process exited", self.compute.log_excerpt(row.handle_data))

    def swap_in(self, op: Operation, env: str, row: ServerRow, lb: LoadBalancerRow) -> None:
        deadline = Deadline(self.spec.deadlines(env).swap, f"the {row.role} load balancer to report {row.id} UP")
        with op.phase("swap", row.id):
            try:
                self.store.update_server(row.id, state="joining")  # journal first: it may be a member from now on
                self.lbs.add_member(lb.handle_data, row.id, row.address, row.port, self.spec.roles[row.role].tls_port, server=row.handle_data)
                failpoint("swap")
                self.poll(deadline, lambda: self.member_up(lb, row), interval=0.05, max_interval=0.1)
            except BaseException as exc:
                self.remove_and_destroy(op, env, lb, row.id)
                if isinstance(exc, GateFailed) or not isinstance(exc, Exception):
                    raise  # a gate's own failure (its process exited, with its log) stays as it is
                raise GateFailed(row.id, "load balancer", str(exc)) from None
        self.store.update_server(row.id, state="in_service", in_service=True, serving_since=utcnow())
        self.reporter.info(f"{row.role}: {row.id} in service")

    def member_up(self, lb: LoadBalancerRow, row: ServerRow) -> bool:
        self.check_alive(row, "load balancer")
        member = self.engine.members.member(lb, row.id)  # this member alone, not the whole balancer
        return bool(member and member.up)

    # --- retiring -------------------------------------------------------------------------
    def retire_all(self, op: Operation, env: str, role: str, server_ids: list[str], lb: LoadBalancerRow) -> None:
        if server_ids:
            run_parallel([lambda sid=sid: self.retire(op, env, role, sid, lb) for sid in server_ids])

    def retire(self, op: Operation, env: str, role: str, server_id: str, lb: LoadBalancerRow) -> None:
        """Drain, then remove from the balancer, then stop and destroy."""
        deadlines = self.spec.deadlines(env)
        self.drain(op, env, role, server_id, lb)
        with op.phase("destroy", server_id):
            self.store.update_server(server_id, state="stopping")
            self.lbs.remove_member(lb.handle_data, server_id, Deadline(deadlines.swap, f"removal of {server_id}"))
            self.engine.members.removed(lb, server_id)
            failpoint("destroy")
            row = self.store.server(server_id)
            self.destroy_server(op, row, deadlines.stop, record=False)
            op.shipping(row)  # its last lines: waited for once, with every other retirement's, when the operation ends
        op.note("retired", server_id)
        self.reporter.info(f"{role}: {server_id} retired")

    def deliver_logs(self, op: Operation) -> None:
        """The operation's retired servers (their processes ended: no line can follow) have
        their output all shipped, waited for side by side within the drain deadline, or the
        operation says which lines stay in each one's own log file."""

        def deliver(row: ServerRow) -> None:
            deadline = Deadline(self.spec.deadlines(row.env).drain, f"the last lines of {row.id} to reach the aggregator")
            kept = undelivered(row.id, await_delivery(self.compute, row.handle_data, deadline))
            if kept:
                op.note("logs_kept", kept)
                self.reporter.info(f"{row.role}: {kept}")

        run_parallel([lambda r=r: deliver(r) for r in op.take_shipping() if r is not None])

    def release(self, op: Operation, env: str, role: str, boot: BootConfig) -> str:
        """The release new servers of this build serve (looked up once per operation and build)."""
        key = (op.id, env, role, boot.fingerprint)
        with self.engine.guards_lock:
            served = self.engine.served_releases
            if key not in served:
                served[key] = release_of(self.store, env, role, boot.fingerprint, default=op.id)
            return served[key]

    def drain(self, op: Operation, env: str, role: str, server_id: str, lb: LoadBalancerRow, then: str = "removing it anyway") -> None:
        """No new traffic to the server, then its sessions to zero (with a deadline); never the
        last server in service of a role that wants one."""
        deadlines = self.spec.deadlines(env)
        with op.phase("drain", server_id):
            # Check and drain under one lock per balancer: two retirements side by side must
            # not both see the other still UP and leave nothing serving.
            members = self.engine.members
            with self.guard(lb):
                is_member = members.member(lb, server_id) is not None
                wanted = self.spec.environments[env].roles.get(role)
                if is_member and not members.any_other_up(lb, server_id) and wanted and wanted.count > 0:
                    raise PhoenixError(f"refusing to drain {server_id}: it is the last {role} server in service")
                self.store.update_server(server_id, state="draining", in_service=False)
                if is_member:
                    self.lbs.drain_member(lb.handle_data, server_id)
                    members.drained(lb, server_id)
            if is_member:
                failpoint("drain")
                try:
                    self.poll(
                        Deadline(deadlines.drain, f"sessions on {server_id} to reach zero"),
                        lambda: (member := members.member(lb, server_id)) is None or member.sessions == 0,
                        interval=0.02,
                        max_interval=0.2,
                    )
                except DeadlineExceeded as exc:
                    self.reporter.info(f"{role}: {exc}; {then}")


    def switch(self, lb: LoadBalancerRow, enable: list[str], disable: list[str]) -> None:
        """Traffic to `enable`, none to `disable`, in one step of the balancer."""
        self.lbs.switch(lb.handle_data, enable=enable, disable=disable)
        self.engine.members.forget(lb, enable)

    def guard(self, lb: LoadBalancerRow) -> threading.Lock:
        with self.engine.guards_lock:
            return self.engine.guards.setdefault((lb.env, lb.role), threading.Lock())

    def remove_and_destroy(self, op: Operation, env: str, lb: LoadBalancerRow | None, server_id: str) -> None:
        """A server that must not serve: out of the balancer, then destroyed — destroyed even
        when the balancer cannot be reached, so nothing is left running."""
        try:
            if lb is not None and self.lbs.is_alive(lb.handle_data):
                self.lbs.remove_member(lb.handle_data, server_id, Deadline(self.spec.deadlines(env).swap, f"removal of {server_id}"))
                self.engine.members.removed(lb, server_id)
        finally:
            self.destroy_server(op, self.store.server(server_id), self.spec.deadlines(env).stop, progress=False)

    def destroy_server(self, op: Operation, row: ServerRow | None, stop_seconds: float, progress: bool = True, record: bool = True) -> None:
        """Stop and delete one server (`progress`: a planned step, counted in the progress bar)."""
        if row is None:
            return
        if row.state != "stopping" or row.in_service:  # (a retirement journaled it already)
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

    # --- for the strategies ---------------------------------------------------------------
    def remove_dead(self, op: Operation, env: str, lb: LoadBalancerRow, plan: RolePlan) -> None:
        """Dead servers, and live ones never put into service, of a role's plan: out, destroyed."""
        for dead in plan.remove_dead:
            self.reporter.info(f"{plan.role}: removing {dead.server_id}: {dead.reason}")
            self.remove_and_destroy(op, env, lb, dead.server_id)
            op.shipping(self.store.server(dead.server_id))
            op.note("removed", dead.server_id)

    def discard(self, op: Operation, env: str, lb: LoadBalancerRow, rows: list[ServerRow]) -> None:
        """New servers that must not serve: out of the balancer, destroyed."""
        run_parallel([lambda r=r: self.remove_and_destroy(op, env, lb, r.id) for r in rows])

    def replan(self, env: str, role: str, boot: BootConfig) -> RolePlan:
        """The role's plan as it stands now (after a canary: the rest to roll)."""
        return self.engine.inspector.plan(env, role, boot, self.engine.inspector.observe_role(env, role))

    def retire_standby(self, op: Operation, env: str, role: str, lb: LoadBalancerRow) -> None:
        """The kept blue-green group of a role, retired."""
        standby = [row.id for row in self.store.servers(env, role) if row.state == "standby"]
        self.retire_all(op, env, role, standby, lb)
