"""The models of an environment's disaster recovery: `backup:` (where its persistent layer is
copied, how many copies are kept, how often `watch` takes one, the hook for a managed store)
and `drill:` (how often a rebuild should have been rehearsed)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .values import Duration


class BackupSpec(BaseModel):
    """`environments.E.backup`: copies of the environment's persistent directories."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    to: str | None = Field(
        None, description="The backup location: a directory (relative to phoenix.yaml, or absolute: another disk, a mounted share); "
        "default .phoenix/backups",
    )
    keep: int = Field(7, ge=1, le=10_000, description="Backups kept; older ones are removed after each new one")
    every: Duration | None = Field(None, description="`phoenix watch` takes a backup when the latest is older than this (e.g. 1h)")
    command: str | None = Field(
        None, description="A shell command run at each backup (from the project directory, with PHOENIX_ENV and PHOENIX_BACKUP_ID): "
        "the hook for a managed persistent layer (EFS, RDS, S3 snapshots); its output is recorded with the backup",
    )
    timeout: Duration = Field(600.0, description="How long the command may run")


class DrillSpec(BaseModel):
    """`environments.E.drill`: the rehearsal of a rebuild from nothing (`phoenix drill E`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    every: Duration = Field(7 * 86400.0, description="`phoenix plan` warns when no drill succeeded within this (e.g. 7d)")
