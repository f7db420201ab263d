"""Time to live: from the bake of a build to the moment the last server of an environment
began serving it, read from the releases; and two environments compared build by build
(`phoenix compare`): each one's time to live, their ratio, and the deploys that failed where.

A build is known by its image ids: the same images deployed to two environments (one
`phoenix deploy A B`, or a promotion) are the same build in both."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field

from ..state import ReleaseRow
from .part import Part


def time_to_live(release: ReleaseRow) -> float | None:
    """Seconds from the bake of the release's build to its last server serving it."""
    if release.baked_at is None or release.live_at is None:
        return None
    return round((release.live_at - release.baked_at).total_seconds(), 3)


@dataclass
class BuildComparison:
    """One build as each environment received it."""

    images: dict[str, str]
    baked_at: str | None
    time_to_live_s: dict[str, float | None] = field(default_factory=dict)
    failed: dict[str, list[str]] = field(default_factory=dict)  # env -> the deploys of it that failed

    def ratio(self, a: str, b: str) -> float | None:
        ttl_a, ttl_b = self.time_to_live_s.get(a), self.time_to_live_s.get(b)
        return round(ttl_a / ttl_b, 3) if ttl_a is not None and ttl_b else None

    def as_json(self, a: str, b: str) -> dict:
        return {
            "images": self.images, "baked_at": self.baked_at, "time_to_live_s": self.time_to_live_s,
            "ratio": self.ratio(a, b), "failed": self.failed,
        }


@dataclass
class Comparison:
    """Builds, newest first, with the time to live of each in both environments."""

    a: str
    b: str
    builds: list[BuildComparison]

    def median(self, env: str) -> float | None:
        values = [b.time_to_live_s[env] for b in self.builds if b.time_to_live_s.get(env) is not None]
        return round(statistics.median(values), 3) if values else None

    def median_ratio(self) -> float | None:
        ratios = [r for r in (b.ratio(self.a, self.b) for b in self.builds) if r is not None]
        return round(statistics.median(ratios), 3) if ratios else None

    def as_json(self) -> dict:
        return {
            "environments": [self.a, self.b],
            "builds": [b.as_json(self.a, self.b) for b in self.builds],
            "median_time_to_live_s": {self.a: self.median(self.a), self.b: self.median(self.b)},
            "median_ratio": self.median_ratio(),
        }


class TimeToLive(Part):
    """Time to live per release, and two environments side by side."""

    def compare(self, a: str, b: str, limit: int = 50) -> Comparison:
        self.project.loaded.environment(a)
        self.project.loaded.environment(b)
        builds: dict[str, BuildComparison] = {}

        def build(image_ids: str) -> BuildComparison:
            if image_ids not in builds:
                images = json.loads(image_ids)
                baked = [row.created_at for row in (self.store.image(i) for i in images.values()) if row is not None]
                builds[image_ids] = BuildComparison(images, max(baked).isoformat(timespec="seconds") + "Z" if baked else None)
            return builds[image_ids]

        for env in (a, b):
            for release in reversed(self.store.releases(env, limit=500)):  # oldest first: a build's first arrival counts
                entry = build(release.image_ids)
                if entry.time_to_live_s.get(env) is None and release.kind == "deploy":
                    entry.time_to_live_s[env] = time_to_live(release)
            for op in self.store.operations(env, limit=500):
                if op.kind == "deploy" and op.status == "failed" and op.image_ids:
                    build(op.image_ids).failed.setdefault(env, []).append(op.id)
        ordered = sorted(builds.values(), key=lambda b: b.baked_at or "", reverse=True)[:limit]
        for entry in ordered:
            for env in (a, b):
                entry.time_to_live_s.setdefault(env, None)
        return Comparison(a, b, ordered)
