"""Recovery from nothing: `phoenix rebuild ENV`, and the rebuild a drill rehearses.

Nothing of the environment is assumed to survive: its servers, balancers, persistent
directories, even its rows in the state store. What does survive is the backup location:
the newest backup whose every file still reads to its checksum holds the data, the release
the environment served when it was taken (its spec text, image ids and fingerprints) and its
balancers' addresses. So a rebuild:

1. cleanup:  ends whatever is left of the environment (processes the record may not know
             included), and marks its rows gone;
2. backup:   picks the newest good backup, saying which newer ones it skipped and why;
3. images:   finds the release's images, baking any that are gone again from the recipe in
             the release's spec text (a content address that comes out different is said);
4. restore:  puts the backup into the persistent directories, every file checked;
5. servers:  brings the balancers back at their recorded addresses (a drill's scratch copy
             gets its own) and converges the release: launch, gates, warm-up, swap.

Each step is a timed phase of the operation (kind `rebuild`, or `drill`), so `history`
shows where the recovery time went; the recovery point is the backup's age at the end."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from ..deadline import Deadline
from ..state import LoadBalancerRow, utcnow
from .backup_store import BackupInfo
from .operation import Operation
from .parallel import run_parallel
from .part import Part
from .project import Project

STEPS = ("cleanup", "backup", "images", "restore", "servers")


@dataclass
class RecoveryReport:
    """What a rebuild (or a drill) did and how long it took."""

    environment: str
    operation: str
    into: str  # the environment rebuilt: the same one, or a drill's scratch copy
    backup: str
    backup_taken_at: str
    release: str | None  # the operation whose release was rebuilt
    image_ids: dict[str, str]
    recovery_time_s: float = 0.0
    recovery_point_s: float = 0.0  # the data's age when the environment served again
    phases: dict[str, float] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)  # newer backups that were not good
    cleaned: list[str] = field(default_factory=list)
    rebaked: list[str] = field(default_factory=list)
    restored_files: int = 0
    restored_bytes: int = 0
    # drills only
    compared: dict[str, int] = field(default_factory=dict)
    differences: list[str] = field(default_factory=list)
    torn_down: bool = False
    ok: bool = True

    def as_json(self) -> dict:
        return {key: value for key, value in self.__dict__.items()}

    def summary(self) -> str:
        line = (
            f"recovery time {self.recovery_time_s:.1f}s, recovery point {self.recovery_point_s:.0f}s "
            f"(backup {self.backup}, {self.restored_files} files), release of {self.release or 'the current spec'}"
        )
        if self.skipped:
            line += f"; {'; '.join(self.skipped)}"
        if self.compared:
            line += "; compared: " + ", ".join(f"{count} {what}" for what, count in self.compared.items())
        if self.differences:
            line += f"; differed: {'; '.join(self.differences[:5])}" + (f" (+{len(self.differences) - 5})" if len(self.differences) > 5 else "")
        return line


class Rebuilder(Part):
    """An environment rebuilt from its newest good backup."""

    def release_project(self, info: BackupInfo, derive: Callable[[str], str] | None = None) -> Project:
        """The project with the spec of the release the backup recorded (the current spec
        when the environment had served none), derived for a drill's scratch copy."""
        text = info.release["spec_text"] if info.release else self.project.loaded.text
        return Project.from_release(self.project, derive(text) if derive else text)

    def rebuild(self, op: Operation, env: str, into: str | None = None, derive: Callable[[str], str] | None = None) -> RecoveryReport:
        """Rebuild `env` (or, for a drill, its copy `into` from the spec `derive` makes)
        from its newest good backup."""
        target = into or env
        started = time.monotonic()
        phases: dict[str, float] = {}

        def step(name: str, action: Callable):
            began = time.monotonic()
            with op.phase(name):
                result = action()
            phases[name] = round(time.monotonic() - began, 3)
            return result

        backups = self.engine.backups
        # the record of the backups is in the backup location: read before anything is touched
        info, skipped = step("backup", lambda: backups.latest_good(env))
        for line in skipped:
            self.reporter.info(line)
        project = self.release_project(info, derive)
        engine = self.engine.for_project(project)
        recorded, cleaned = step("cleanup", lambda: cleanup(engine, op, target))
        report = RecoveryReport(
            environment=env, operation=op.id, into=target, backup=info.id, backup_taken_at=info.created_at.isoformat(timespec="seconds") + "Z",
            release=info.release["operation_id"] if info.release else None, image_ids={}, phases=phases, skipped=skipped,
            cleaned=cleaned,
        )
        report.image_ids = step("images", lambda: self._images(engine, op, info, report))
        report.restored_bytes = step("restore", lambda: backups.restore_into(info, env, target, project.spec))
        report.restored_files = len(info.files)
        if into is None:  # the balancers come back where clients know them; a scratch copy gets its own addresses
            for role, address in {**info.balancers, **recorded}.items():
                if role in project.spec.environments[target].roles:
                    host, port = address.rsplit(":", 1)
                    self.store.save_load_balancer(LoadBalancerRow(env=target, role=role, address=host, port=int(port), handle="{}"))
        step("servers", lambda: engine.converger.converge(
            op, target, roles=None, replace_outdated=True, replace_all=False, image_ids=report.image_ids, strategy="rolling",
            release_kind=op.result.kind, release_reason=f"rebuilt from backup {info.id}",
        ))
        report.recovery_time_s = round(time.monotonic() - started, 3)
        report.recovery_point_s = round((utcnow() - info.created_at).total_seconds(), 3)
        return report

    def _images(self, engine, op: Operation, info: BackupInfo, report: RecoveryReport) -> dict[str, str]:
        """The release's images, each baked again from the recorded recipe when it is gone."""
        spec = engine.project.spec
        wanted = info.release["image_ids"] if info.release else {}
        names = sorted({spec.roles[role].image for role in spec.environments[report.into].roles})
        found = {}
        for name in names:
            image_id = wanted.get(name)
            row = self.store.image(image_id) if image_id else None
            if row is not None and self.compute.image_available(image_id, row.location):
                found[name] = image_id
                continue
            baked = engine.converger.bake_one(name, op)[1]
            if image_id and baked != image_id:
                line = f"image {name} {image_id} is gone: baked again from the recorded recipe as {baked} (the project's files changed since)"
            else:
                line = f"image {name} {baked} baked again from the recorded recipe"
            self.reporter.info(line)
            report.rebaked.append(line)
            found[name] = baked
        return found


def cleanup(engine, op: Operation, env: str) -> tuple[dict[str, str], list[str]]:
    """End whatever is left of the environment, recorded or not; its server rows marked
    destroyed, its balancer rows removed. Returns the balancers' recorded addresses by role,
    and what was done."""
    store, compute, lbs = engine.project.store, engine.project.compute, engine.project.load_balancers
    stop = engine.project.spec.deadlines(env).stop if env in engine.project.spec.environments else 10.0
    done: list[str] = []
    for earlier in store.operations(env, limit=500):
        if earlier.status == "running" and earlier.id != op.id:
            store.set_operation_status(earlier.id, "interrupted", f"ended by {op.id}")
            done.append(f"operation {earlier.id} ({earlier.kind}) never finished: ended")
    found = compute.discover(env)
    rows = store.servers(env)
    handles = {server_id: handle for server_id, handle in found.items()}
    handles.update({row.id: row.handle_data for row in rows if row.id not in handles})

    def end(server_id: str, handle: dict) -> None:
        compute.destroy(handle, Deadline(stop, f"{server_id} to stop"))

    run_parallel([lambda s=s, h=h: end(s, h) for s, h in handles.items()])
    done += [f"{server_id}: ended" for server_id in found]
    for row in rows:
        store.update_server(row.id, state="destroyed", in_service=False, retired_at=utcnow())
    addresses: dict[str, str] = {}
    for lb in store.load_balancers(env):
        if lbs.is_alive(lb.handle_data):
            lbs.destroy(lb.handle_data, Deadline(stop, f"stop of the {lb.role} balancer"))
            done.append(f"balancer {lb.role} stopped")
        addresses[lb.role] = f"{lb.address}:{lb.port}"
        store.delete_load_balancer(env, lb.role)
    for role, handle in lbs.discover(env).items():
        lbs.destroy(handle, Deadline(max(stop, 60), f"removal of the {role} balancer"))
        done.append(f"balancer {role} removed")
    for line in done:
        engine.reporter.info(f"cleanup: {line}")
    return addresses, done

