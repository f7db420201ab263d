"""The step-by-step invariants of a rotation, against real HAProxy (tests/test_executor.py
checks them with the in-memory drivers).

A thread samples every balancer of the environment through the balancer driver's
`members()` (HAProxy's `show stat` on its admin socket) for the whole of a real rotation of
the example's production environment, and records each member's state at every sample.
Then, role by role: the UP members never fell below the desired count (max_unavailable 0)
nor rose above it plus the surge, and in order, every old member was seen leaving (DRAIN,
MAINT or gone) only once a new member was already UP in its place: the k-th old member to
leave did so no earlier than the k-th new member came UP. One `show stat` is one moment of
a backend, so "no earlier" is at the resolution of a sample: a change between two samples
shows in the later one."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import pytest

from conftest import PRODUCTION_COUNTS, Environment
from phoenixctl.spec import resolve_quantity

pytestmark = pytest.mark.slow

MAX_SECONDS = 300  # the sampler stops by itself
MAX_SAMPLES = 100_000
INTERVAL = 0.005
LEFT = ("DRAIN", "MAINT")


@dataclass
class Sampler:
    """Samples {role: {member: (status, up)}} until stopped (bounded in time and count)."""

    lbs: object
    handles: dict[str, dict]
    samples: list[dict[str, dict[str, tuple[str, bool]]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        ends = time.monotonic() + MAX_SECONDS
        while not self.stop.is_set() and time.monotonic() < ends and len(self.samples) < MAX_SAMPLES:
            try:
                sample = {}
                for role, handle in self.handles.items():
                    sample[role] = {name: (m.status, m.up) for name, m in self.lbs.members(handle).items()}
                self.samples.append(sample)
            except Exception as exc:  # noqa: BLE001 - a sample that could not be taken is a failure
                self.errors.append(repr(exc))
            time.sleep(INTERVAL)


def first_index(samples: list[dict], role: str, name: str, predicate) -> int | None:
    return next((i for i, sample in enumerate(samples) if predicate(sample[role].get(name))), None)


def test_rotation_keeps_min_serving_and_launches_before_it_drains_on_real_haproxy(production: Environment):
    rollout = production.project.spec.rollout("production")
    assert rollout.strategy == "rolling" and rollout.max_unavailable == 0, rollout  # the example's: what is held to here
    handles = {row.role: row.handle_data for row in production.project.store.load_balancers("production")}
    assert set(handles) == set(PRODUCTION_COUNTS)
    sampler = Sampler(production.executor.lbs, handles)
    thread = threading.Thread(target=sampler.run, daemon=True)
    thread.start()
    try:
        wait_for_samples(sampler, 5)
        result = production.executor.rotate("production")
        wait_for_samples(sampler, len(sampler.samples) + 5)  # a few of the state it left
    finally:
        sampler.stop.set()
        thread.join(30)
    assert not thread.is_alive() and sampler.errors == [] and len(sampler.samples) > 50
    samples = sampler.samples

    for role, desired in PRODUCTION_COUNTS.items():
        old = {name for name, (_, up) in samples[0][role].items() if up}
        new = {name for name, (_, up) in samples[-1][role].items() if up}
        assert len(old) == len(new) == desired and not old & new, (role, old, new)
        assert old <= set(result.retired) and new <= set(result.launched), role
        ups = [sum(1 for _, up in sample[role].values() if up) for sample in samples]
        surge = resolve_quantity(rollout.max_surge, desired, round_up=True)  # the example's 100%: a whole new set beside the old
        assert min(ups) >= desired, (role, min(ups), ups.index(min(ups)), samples[ups.index(min(ups))][role])
        assert max(ups) <= desired + surge, (role, max(ups))
        came_up = sorted(first_index(samples, role, name, lambda m: m is not None and m[1]) for name in new)
        left = sorted(first_index(samples, role, name, lambda m: m is None or m[0].startswith(LEFT)) for name in old)
        assert None not in came_up and None not in left, (role, came_up, left)  # the sampler saw every change
        assert all(up <= gone for up, gone in zip(came_up, left)), (role, came_up, left)
    status = production.status()
    assert {s["id"] for s in status["servers"] if s["in_service"]} == set(result.launched)


def wait_for_samples(sampler: Sampler, count: int) -> None:
    ends = time.monotonic() + 30
    while len(sampler.samples) < count:
        assert time.monotonic() < ends and not sampler.errors, (len(sampler.samples), sampler.errors)
        time.sleep(0.01)
