"""A server's logs on their way out: which release its lines are tagged with, and a
retirement that waits (within the drain deadline) until its last line reached the
aggregator, or says where the undelivered ones are kept."""

from __future__ import annotations

import json

from ..deadline import Deadline, DeadlineExceeded
from ..drivers.base import ComputeDriver, LogDelivery
from ..state import StateStore


def release_of(store: StateStore, env: str, role: str, fingerprint: str, default: str) -> str:
    """The release a new server serves: the latest recorded one whose role runs this
    fingerprint (a healed server serves what its peers do), else `default` (the operation
    that launches it: a deploy records its release under its own id, as `history` shows)."""
    for release in store.releases(env):
        if json.loads(release.fingerprints).get(role) == fingerprint:
            return release.operation_id
    return default


def await_delivery(compute: ComputeDriver, handle: dict, deadline: Deadline) -> LogDelivery | None:
    """Wait until the stopped server's output has all reached the aggregator; the delivery
    as it stands at the end (None: the provider ships from the server itself). Not a moment
    longer than needed: an aggregator that is down ends the wait at once."""
    seen: list[LogDelivery | None] = []

    def settled() -> bool:
        seen.append(compute.log_delivery(handle))
        return seen[-1] is None or seen[-1].complete or bool(seen[-1].reason)

    try:
        deadline.poll(settled, interval=0.02, max_interval=0.1)
    except DeadlineExceeded:
        pass
    return seen[-1]


def undelivered(server_id: str, delivery: LogDelivery | None) -> str:
    """'' when every line arrived, else the sentence a retirement reports."""
    if delivery is None or delivery.complete:
        return ""
    why = delivery.reason or "the aggregator had not read them by the drain deadline"
    return f"{server_id}: {delivery.pending_lines} line(s) not delivered ({why}), kept in {delivery.where}"
