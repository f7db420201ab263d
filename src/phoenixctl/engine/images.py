"""The project's images: what each one is (size, age, layers), who uses it (servers, and the
releases a rollback could go back to), and pruning those nothing needs any more.

An image is needed while a server of any environment runs from it, while the spec as it
stands would bake it (the next deploy's), and while one of the newest `keep` releases of an
environment names it. The release `rollback` would go back to is protected: pruning its
images is refused unless forced, since a rollback would then have to bake again."""

from __future__ import annotations

import json
import time
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field

from ..errors import PhoenixError
from .part import Part


@dataclass(frozen=True)
class ImageEntry:
    id: str
    name: str
    location: str
    size: int | None
    age_s: float | None
    layers: list[dict]
    servers: dict[str, int]  # environment -> servers running from it
    releases: list[str]  # "ci: current", "ci: rollback target (op-...)", "ci: op-..." (a kept release)
    in_spec: bool  # the spec as it stands bakes it

    def as_json(self) -> dict:
        return asdict(self)


@dataclass
class PruneResult:
    removed: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)  # image id -> why
    layers_removed: list[str] = field(default_factory=list)

    def as_json(self) -> dict:
        return asdict(self)


class ImageCatalog(Part):
    """`phoenix images` and `phoenix images prune`."""

    def entries(self, keep: int = 2) -> list[ImageEntry]:
        uses = self._release_uses(keep)
        servers = self._servers()
        current = self._spec_images()
        entries = []
        for row in self.store.images():
            details = self.compute.image_details(row.id, row.location)
            created = details.created if details and details.created else row.created_at.timestamp()
            entries.append(ImageEntry(
                id=row.id, name=row.name, location=row.location, size=details.size if details else None,
                age_s=round(time.time() - created, 1) if created else None,
                layers=[{"name": layer.name, "key": layer.key[:16], "size": layer.size} for layer in (details.layers if details else ())],
                servers=servers.get(row.id, {}), releases=[label for label, _ in uses.get(row.id, [])], in_spec=row.id in current,
            ))
        return entries

    def prune(self, keep: int, force: bool) -> PruneResult:
        """Remove the images nothing needs, and the cached layers only they were built on.
        Refuses, removing nothing, when one that a rollback would go back to is among them
        (unless `force`). Holds every environment's lock meanwhile, so no deploy launches
        from an image while it goes."""
        result = PruneResult()
        with ExitStack() as locks:
            for env in sorted(self.spec.environments):
                locks.enter_context(self.store.environment_lock(self.project.workdir, env, "images prune", self.engine.lock_timeout))
            uses, servers, current = self._release_uses(keep), self._servers(), self._spec_images()
            doomed, refused = [], []
            for row in self.store.images():
                kept_by = [label for label, kept in uses.get(row.id, []) if kept]
                if row.id in servers:
                    result.kept[row.id] = "servers run from it: " + ", ".join(f"{env} ({n})" for env, n in servers[row.id].items())
                elif row.id in current:
                    result.kept[row.id] = "the spec as it stands bakes it"
                elif kept_by:
                    result.kept[row.id] = "a kept release names it: " + ", ".join(kept_by)
                else:
                    doomed.append(row)
                    if row.id in uses:  # only a rollback target names it
                        refused.append(f"{row.id} ({', '.join(label for label, _ in uses[row.id])})")
            if refused and not force:
                raise PhoenixError(
                    f"images prune: a rollback would go back to {'; '.join(refused)}; nothing removed "
                    "(keep more releases with --keep, or --force)"
                )
            for row in doomed:
                self.compute.forget_image(row.id, row.location)
                self.store.forget_image(row.id)
                result.removed.append(row.id)
            result.layers_removed = self.compute.prune_layers()
        return result

    def _release_uses(self, keep: int) -> dict[str, list[tuple[str, bool]]]:
        """Image id -> (label, kept) for the newest `keep` releases of each environment (kept)
        and the release a rollback of it would go back to (kept only when among those)."""
        uses: dict[str, list[tuple[str, bool]]] = {}
        for env in self.spec.environments:
            releases = self.store.releases(env, limit=keep + 50)
            target = next((r for r in releases[1:] if r.fingerprints != releases[0].fingerprints), None) if releases else None
            for index, release in enumerate(releases):
                if index == 0:
                    label = f"{env}: current"
                elif release is target:
                    label = f"{env}: rollback target ({release.operation_id})"
                elif index < keep:
                    label = f"{env}: {release.operation_id}"
                else:
                    continue
                for image_id in json.loads(release.image_ids).values():
                    uses.setdefault(image_id, []).append((label, index < keep))
        return uses

    def _servers(self) -> dict[str, dict[str, int]]:
        found: dict[str, dict[str, int]] = {}
        for env in self.spec.environments:
            for server in self.store.servers(env):
                counts = found.setdefault(server.image_id, {})
                counts[env] = counts.get(env, 0) + 1
        return found

    def _spec_images(self) -> set[str]:
        ids = set()
        for name, recipe in self.spec.images.items():
            try:
                ids.add(self.compute.image_id(name, recipe, self.project.dir))
            except PhoenixError:
                continue  # a file missing now: nothing of the spec to keep for it
        return ids
