"""The disaster-recovery commands: `backup` (and `--list`, `--verify`), `restore`, `rebuild`
and `drill`, each one operation through the executor (journaled, locked, in `history`), and
what `status`, `history`, `plan` and `watch` read of them.

Where things are kept (the state store's schema is not changed for any of it):

- the backups' record is their catalogue in the backup location (`engine/backup_store.py`),
  which is also what survives the loss of the store;
- a backup, restore, rebuild or drill is an operation of its environment (kind `backup`,
  `restore`, `rebuild`, `drill`), its phases in the phases table, its outcome in its status
  and summary: the last successful drill is the newest operation of kind `drill` with status
  `succeeded` (its summary gives the recovery time and point)."""

from __future__ import annotations

from dataclasses import dataclass

from ..deadline import Deadline, DeadlineExceeded
from ..errors import PhoenixError
from ..state import OperationRow, utcnow
from .backup_store import BackupInfo
from .commands import Executor
from .operation import OperationResult
from .rebuild import RecoveryReport


@dataclass(frozen=True)
class DrillStanding:
    """The last successful drill of an environment, and whether one is overdue."""

    last: OperationRow | None
    warning: str | None

    def as_json(self) -> dict:
        last = None
        if self.last is not None:
            last = {"operation": self.last.id, "at": self.last.started_at.isoformat(timespec="seconds") + "Z", "summary": self.last.summary}
        return {"last_successful_drill": last, "warning": self.warning}


class DisasterRecovery:
    """The commands of disaster recovery, on one project's executor."""

    def __init__(self, executor: Executor):
        self.executor = executor
        self.engine = executor.engine
        self.store = executor.store

    # --- backups --------------------------------------------------------------------------
    def backup(self, env: str) -> BackupInfo:
        """A consistent copy of the environment's persistent layer, to its backup location."""
        with self.executor.operation(env, "backup") as op:
            info = self.engine.backups.take(env, op.id)
            op.result.detail = f"backup {info.id}: {len(info.files)} files, {info.size} bytes, checksum {info.checksum[:12]}"
            return info

    def backups(self, env: str) -> list[BackupInfo]:
        self.executor.project.loaded.environment(env)
        return self.engine.backups.catalogue(env).list()

    def verify(self, env: str, backup_id: str) -> tuple[BackupInfo, list[str]]:
        """The backup and what is wrong with it ([] when every file reads to its checksum)."""
        self.executor.project.loaded.environment(env)
        catalogue = self.engine.backups.catalogue(env)
        info = catalogue.get(backup_id)
        return info, catalogue.problems(info)

    def backup_due(self, env: str) -> bool:
        """`backup.every` is set and the newest backup is older than it (or there is none)."""
        every = self.executor.spec.environments[env].backup.every
        if every is None:
            return False
        newest = next(iter(self.backups(env)), None)
        return newest is None or (utcnow() - newest.created_at).total_seconds() >= every

    # --- restore, rebuild, drill ----------------------------------------------------------
    def restore(self, env: str, backup_id: str, stop_writers: bool = False) -> OperationResult:
        """Put a backup back while no server of the environment writes to it: the roles that
        mount its directories are stopped first (with `stop_writers`; refused otherwise), the
        backup checked whole, restored, and those roles launched again."""
        spec = self.executor.spec
        self.executor.project.loaded.environment(env)
        info, problems = self.verify(env, backup_id)
        if problems:
            raise PhoenixError(f"restore refused: backup {backup_id} is corrupt: {problems[0]}" + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        mounting = [role for role in spec.environments[env].roles if spec.roles[role].persistent]
        with self.executor.operation(env, "restore") as op:
            running = [row for role in mounting for row in self.store.servers(env, role)]
            if running and not stop_writers:
                raise PhoenixError(
                    f"restore refused: {len(running)} server(s) of {', '.join(mounting)} mount the persistent layer and may write "
                    f"to it; pass --stop-writers to drain and stop them first (those roles serve nothing until the restore is done)"
                )
            lbs = self.executor.lbs
            for row in running:  # drained (requests in flight finish, with the drain deadline), then stopped
                lb = self.store.load_balancer(env, row.role)
                if lb is not None and lbs.is_alive(lb.handle_data) and lbs.member(lb.handle_data, row.id) is not None:
                    lbs.drain_member(lb.handle_data, row.id)
                    try:
                        Deadline(spec.deadlines(env).drain, f"sessions on {row.id} to reach zero").poll(
                            lambda: (member := lbs.member(lb.handle_data, row.id)) is None or member.sessions == 0, interval=0.02
                        )
                    except DeadlineExceeded as exc:
                        self.executor.reporter.info(f"{row.role}: {exc}; stopping it anyway")
                self.engine.lifecycle.remove_and_destroy(op, env, lb, row.id)
                op.note("retired", row.id)
            with op.phase("restore"):
                written = self.engine.backups.restore_into(info, env, env)
            self.engine.converger.converge(op, env, roles=None, replace_outdated=False, replace_all=False)
            op.result.detail = f"restored backup {info.id} ({len(info.files)} files, {written} bytes) taken {info.created_at:%Y-%m-%d %H:%M:%S} UTC"
            return op.result

    def rebuild(self, env: str) -> RecoveryReport:
        """The environment from nothing: whatever is left cleaned up, the release of its newest
        good backup rebuilt with that backup's data, at the balancers' recorded addresses."""
        with self.executor.operation(env, "rebuild") as op:
            report = self.engine.rebuilder.rebuild(op, env)
            op.result.detail = report.summary()
            return report

    def drill(self, env: str, into: str | None = None) -> RecoveryReport:
        """A scratch copy of the environment rebuilt, compared with it, torn down; recorded as
        an operation of the environment (kind `drill`) that succeeded only when nothing
        unexplained differed."""
        scratch = self.engine.drill.scratch_name(env, into)
        if scratch in self.executor.spec.environments and (self.store.servers(scratch) or self.store.load_balancers(scratch)):
            raise PhoenixError(f"drill refused: environment {scratch} runs; a drill rebuilds into an empty environment and tears it down")
        with self.executor.operation(env, "drill", lock_name=scratch) as op:
            report = self.engine.drill.run(op, env, scratch)
            op.result.detail = f"drill into {scratch}: " + report.summary()
            if not report.ok:
                op.final_status = "failed"
            return report

    # --- what the reports say of drills -------------------------------------------------
    def drill_standing(self, env: str) -> DrillStanding:
        self.executor.project.loaded.environment(env)
        last = next((op for op in self.store.operations(env, limit=500) if op.kind == "drill" and op.status == "succeeded"), None)
        settings = self.executor.spec.environments[env].drill
        warning = None
        if settings is not None:
            age = (utcnow() - last.started_at).total_seconds() if last else None
            if age is None or age > settings.every:
                when = f"the last succeeded {age / 86400:.1f} days ago" if age is not None else "none has succeeded"
                warning = f"no drill of {env} succeeded within drill.every ({settings.every / 86400:g}d): {when}; run `phoenix drill {env}`"
        return DrillStanding(last, warning)

