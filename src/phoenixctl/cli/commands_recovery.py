"""The disaster-recovery commands: backup (--list, --verify), restore, rebuild, drill.

Each command imports what it uses in its body: at import this module loads only click
(see `cli/__init__.py`)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import env_argument, executor_for, json_option, lock_timeout_option, spec_option
from .json_output import print_json


def _recovery(executor):
    from ..engine.disaster import DisasterRecovery

    return DisasterRecovery(executor)


@click.command()
@env_argument
@click.option("--list", "listing", is_flag=True, help="The environment's backups, newest first")
@click.option("--verify", "verify_id", default=None, metavar="ID", help="Read every file of backup ID again against its checksum")
@lock_timeout_option
@spec_option
@json_option
def backup(env: str, listing: bool, verify_id: str | None, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """A consistent copy of the environment's persistent layer, content-addressed with a
    manifest of checksums, to its backup location (backup.to; .phoenix/backups by default)."""
    from ..errors import PhoenixError
    from .console import out

    if listing and verify_id:
        raise click.UsageError("--list and --verify are separate questions: give one")
    with executor_for(spec_file, f"backup {env}", quiet=True, lock_timeout=lock_timeout, env=env) as executor:
        recovery = _recovery(executor)
        if listing:
            backups = recovery.backups(env)
            if as_json:
                print_json([info.as_json() for info in backups])
            for info in [] if as_json else backups:
                out.print(f"{info.id}  {info.created_at:%Y-%m-%d %H:%M:%S}Z  {len(info.files)} files  {info.size} bytes  {info.checksum[:12]}", markup=False)
            if not backups and not as_json:
                out.print(f"{env}: no backups yet (`phoenix backup {env}` takes one)")
            return
        if verify_id:
            info, problems = recovery.verify(env, verify_id)
            if as_json:
                print_json({**info.as_json(), "ok": not problems, "problems": problems})
            elif not problems:
                out.print(f"backup {info.id}: every one of {len(info.files)} files reads to its checksum")
            if problems:
                raise PhoenixError(f"backup {info.id} is corrupt: {'; '.join(problems[:3])}" + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""))
            return
        info = recovery.backup(env)
    if as_json:
        print_json(info.as_json())
    else:
        out.print(f"backup {info.id} of {env}: {len(info.files)} files, {info.size} bytes, checksum {info.checksum[:12]}", markup=False)


@click.command()
@env_argument
@click.option("--backup", "backup_id", required=True, metavar="ID", help="The backup to put back (`phoenix backup ENV --list`)")
@click.option("--stop-writers", is_flag=True, help="Drain and stop the roles that mount the persistent layer first (else refused while they run)")
@lock_timeout_option
@spec_option
@json_option
def restore(env: str, backup_id: str, stop_writers: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Put a backup back into the environment's persistent layer, checked file by file, while
    no server writes to it; the roles that mount it are launched again afterwards."""
    from .render import print_result

    with executor_for(spec_file, f"restore {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        print_result(_recovery(executor).restore(env, backup_id, stop_writers), as_json)


@click.command()
@env_argument
@lock_timeout_option
@spec_option
@json_option
def rebuild(env: str, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Recovery from nothing: clean up what is left, rebuild the release the environment last
    served with its newest good backup, balancers back at their addresses; report the
    recovery time phase by phase and the recovery point."""
    with executor_for(spec_file, f"rebuild {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        report = _recovery(executor).rebuild(env)
    print_recovery(report, as_json)


@click.command()
@env_argument
@click.option("--into", default=None, metavar="NAME", help="The scratch environment (default: ENV-drill, derived from ENV)")
@lock_timeout_option
@spec_option
@json_option
def drill(env: str, into: str | None, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """A game day that touches nothing of ENV: a scratch copy rebuilt from nothing with ENV's
    release and newest good backup, compared with ENV (versions, pages, data), torn down;
    exit 1 when something differed."""
    from ..errors import PhoenixError

    with executor_for(spec_file, f"drill {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        report = _recovery(executor).drill(env, into)
    print_recovery(report, as_json)
    if not report.ok:
        raise PhoenixError(f"drill of {env} found differences: {'; '.join(report.differences[:3])}")


def print_recovery(report, as_json: bool) -> None:
    from .console import out

    if as_json:
        print_json(report.as_json())
        return
    what = "drill" if report.into != report.environment else "rebuild"
    out.print(f"{what} {report.environment}" + (f" into {report.into}" if what == "drill" else "") + f": {report.operation}", markup=False)
    for line in report.skipped + report.rebaked:
        out.print(f"  {line}", markup=False)
    out.print(f"  recovery time {report.recovery_time_s:.2f}s: " + ", ".join(f"{name} {seconds:.2f}s" for name, seconds in report.phases.items()), markup=False)
    out.print(f"  recovery point {report.recovery_point_s:.0f}s: backup {report.backup} taken {report.backup_taken_at}, {report.restored_files} files", markup=False)
    if report.compared:
        out.print("  compared: " + ", ".join(f"{count} {name}" for name, count in report.compared.items()), markup=False)
    for line in report.differences:
        out.print(f"  differed: {line}", markup=False)
    if what == "drill":
        out.print(f"  scratch environment {report.into} " + ("torn down" if report.torn_down else "NOT torn down"), markup=False)


COMMANDS = (backup, restore, rebuild, drill)
