"""Releases: what an environment served from when (spec, image ids, each role's fingerprint),
so a rollback knows where to go back to and a failure can say where each role stands."""

from __future__ import annotations

import json
from datetime import datetime

from ..errors import PhoenixError
from ..state import ReleaseRow, utcnow
from .operation import Operation
from .part import Part


class Releases(Part):
    """The record of releases, one per change of what the environment serves."""

    def previous(self, env: str) -> ReleaseRow:
        """The last release that served something else than the current one."""
        releases = self.store.releases(env)
        previous = next((r for r in releases[1:] if r.fingerprints != releases[0].fingerprints), None) if releases else None
        if previous is None:
            raise PhoenixError(f"environment {env} has no previous release to roll back to")
        return previous

    def source(self, release_of: str | None, release: str | None) -> ReleaseRow | None:
        """The release a promotion deploys: what environment `release_of` runs now, or the
        release an operation of `history` recorded; refused, saying why, when its images are gone."""
        if release_of is not None and release is not None:
            raise PhoenixError("--release-of and --release name the same thing: give one")
        if release_of is None and release is None:
            return None
        if release_of is not None:
            self.project.loaded.environment(release_of)
            row = next(iter(self.store.releases(release_of, limit=1)), None)
            if row is None:
                raise PhoenixError(f"environment {release_of} has no release to promote (nothing was deployed to it)")
        else:
            row = self.store.release_of_operation(release)
            if row is None:
                raise PhoenixError(f"no release was recorded by {release} (`phoenix history ENV` lists the operations that made one)")
        for name, image_id in json.loads(row.image_ids).items():
            image = self.store.image(image_id)
            if image is None or not self.compute.image_available(image_id, image.location):
                raise PhoenixError(
                    f"the release of {row.operation_id} ({row.env}) cannot be deployed: its image {name} ({image_id}) is gone "
                    "(pruned); deploy a new build instead"
                )
        return row

    def record(self, op: Operation, env: str, kind: str, reason: str, image_ids=None, boots=None) -> None:
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
                baked_at=self.baked_at(image_ids), live_at=self.live_at(env),
            )
        )

    def baked_at(self, image_ids: dict[str, str]) -> datetime | None:
        """When the build was baked: its last image's bake (the start of its time to live)."""
        images = [self.store.image(image_id) for image_id in image_ids.values()]
        return max((image.created_at for image in images if image is not None), default=None)

    def live_at(self, env: str) -> datetime:
        """When the last server of the environment began serving what it serves now (now,
        when a server's record does not say: a blue-green switch, a store from before)."""
        serving = [row for row in self.store.servers(env) if row.in_service]
        if serving and all(row.serving_since for row in serving):
            return max(row.serving_since for row in serving)
        return utcnow()

    def serving_summary(self, env: str, previous: ReleaseRow, before: dict[str, str], new: dict[str, str]) -> str:
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
