"""What is, against what should be: each server observed (alive, in service, drift, health),
each role's boot configuration as the spec wants it, and the checks made before anything
starts (secret isolation and resolution, user-data schema and size)."""

from __future__ import annotations

from fnmatch import fnmatch

from ..boot import config
from ..boot.config import BootConfig
from ..drivers.base import FileChanges
from ..errors import SpecError
from ..plan import ObservedServer, RolePlan, plan_role
from ..boot.secrets import Resolved
from ..state import ServerRow
from .part import Part


def describe_changes(changes: FileChanges) -> str:
    parts = []
    for label, paths in (("modified", changes.modified), ("added", changes.added), ("deleted", changes.deleted)):
        if paths:
            parts.append(f"{len(paths)} {label} ({', '.join(paths[:3])}{', ...' if len(paths) > 3 else ''})")
    return ", ".join(parts)


class Inspector(Part):
    """Observations and desired state, read-only (but for the secret hashes preflight records)."""

    def observe_role(self, env: str, role: str, inspect: bool = False) -> list[ObservedServer]:
        """A role's servers as they are (a kept blue-green group aside); `inspect`: their files
        and health too."""
        members = BalancerView(self, env, role)  # read once for the role, and only if a server is asked about
        return [self.observe(row, inspect=inspect, members=members) for row in self.store.servers(env, role) if row.state != "standby"]

    def plan(self, env: str, role: str, boot: BootConfig, observed: list[ObservedServer], **options) -> RolePlan:
        """The one place a role is planned (observe, then this): the spec's count and rollout,
        the boot configuration's fingerprint, what was observed; `options` for `plan_role`."""
        return plan_role(
            role, self.spec.environments[env].roles[role].count, boot.fingerprint, boot.image_id, observed, self.spec.rollout(env), **options
        )

    def check_env_role(self, env: str, role: str) -> None:
        self.project.loaded.check_role(role)
        if role not in self.spec.environments[env].roles:
            raise SpecError(f"{self.project.loaded.path.name}: environment {env!r} has no role {role!r}")

    def lb_addresses(self, env: str) -> dict[str, str]:
        return {row.role: f"{row.address}:{row.port}" for row in self.store.load_balancers(env)}

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

    def observe(self, row: ServerRow, inspect: bool = False, members: "BalancerView | None" = None) -> ObservedServer:
        handle = row.handle_data  # one copy for the server's three questions (a plan asks them of 10,000 servers)
        alive = self.compute.is_alive(handle)
        drift = unhealthy = ""
        if inspect and alive and row.in_service:
            changes = self.file_changes(row, handle)
            drift = describe_changes(changes) if changes else ""
            unhealthy = self.health_problem(row, members or BalancerView(self, row.env, row.role), handle)
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

    def file_changes(self, row: ServerRow, handle: dict | None = None) -> FileChanges | None:
        """Changes since boot, less the role's scratch paths and persistent mounts (`handle`:
        the row's, already read)."""
        changes = self.compute.file_changes(row.handle_data if handle is None else handle)
        if changes is None:
            return None
        role = self.spec.roles.get(row.role)
        scratch = role.scratch if role else []
        ignored = lambda path: path.startswith("persistent/") or any(fnmatch(path, p) for p in scratch)  # noqa: E731
        return changes.without(ignored)

    def health_problem(self, row: ServerRow, members: "BalancerView", handle: dict | None = None) -> str:
        health = self.spec.roles[row.role].health
        problem = self.compute.health(row.handle_data if handle is None else handle, row.address, row.port, health.path, health.timeout)
        if problem:
            return f"GET {health.path} answered {problem}"
        member = members.get(row.id)
        if member is not None and member.status.startswith("DOWN"):
            return f"the load balancer reports it {member.status}"
        return ""

    def state_refusals(self, env: str, server_ids: list[str]) -> dict[str, str]:
        """Why each of these servers may not be retired: it holds files written outside scratch
        and persistent mounts (new files: data someone keeps there; a changed image file is
        drift, replaced freely)."""
        refusals: dict[str, str] = {}
        if self.engine.discard_state:
            return refusals
        rows = {row.id: row for row in self.store.servers(env)} if server_ids else {}  # one query, not one a server
        for server_id in server_ids:
            row = rows.get(server_id)
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


class BalancerView:
    """A role's balancer members, read on first use and then kept: one read for a role's
    observation, however many servers it has (None where the balancer is gone)."""

    def __init__(self, inspector: Inspector, env: str, role: str):
        self.inspector, self.env, self.role = inspector, env, role
        self._members: dict | None = None
        self._read = False

    def get(self, server_id: str):
        if not self._read:
            self._read = True
            lb = self.inspector.store.load_balancer(self.env, self.role)
            if lb and self.inspector.lbs.is_alive(lb.handle_data):
                self._members = self.inspector.lbs.members(lb.handle_data)
        return self._members.get(server_id) if self._members is not None else None
