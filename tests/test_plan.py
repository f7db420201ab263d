"""The plan is pure: surge/unavailable arithmetic and replacement reasons, no I/O."""

from datetime import datetime, timedelta

import pytest

from phoenixctl.plan import ObservedServer, ideal_batches, plan_role, rollout_limits, rolling_batches
from phoenixctl.spec import RolloutSpec

T0 = datetime(2026, 1, 1)


def server(i, fingerprint="fp-new", image="img-new", alive=True, in_service=True, age=0):
    return ObservedServer(f"s{i}", "frontend", image, fingerprint, alive, in_service, T0 + timedelta(seconds=i - age))


@pytest.mark.parametrize(
    "n, surge, unavailable, expected",
    [
        (1, 1, 0, (1, 0)),
        (1, "25%", 0, (1, 0)),  # 0.25 rounds up to one: never zero new servers
        (1, 0, 0, (1, 0)),  # both zero: surge becomes one
        (1, 0, "50%", (1, 0)),  # unavailability rounds down to zero, so surge must be one
        (2, "50%", "50%", (1, 1)),
        (3, "25%", "25%", (1, 0)),
        (3, "100%", 0, (3, 0)),
        (3, 0, 1, (0, 1)),
        (20, "25%", "10%", (5, 2)),
        (20, "100%", 0, (20, 0)),
        (20, 2, 3, (2, 3)),
        (20, "33%", 0, (7, 0)),  # 6.6 rounds up
    ],
)
def test_rollout_limits(n, surge, unavailable, expected):
    assert rollout_limits(n, RolloutSpec(max_surge=surge, max_unavailable=unavailable)) == expected


@pytest.mark.parametrize("n", [1, 2, 3, 20])
@pytest.mark.parametrize("surge, unavailable", [(1, 0), (0, 1), (2, 1), ("100%", 0), ("25%", "25%"), (0, "100%")])
def test_rolling_batches_respect_limits(n, surge, unavailable):
    """Replace every one of n servers: never more than n+surge running, never fewer than
    n-unavailable serving (and never zero), every batch launches, all are replaced."""
    s, u = rollout_limits(n, RolloutSpec(max_surge=surge, max_unavailable=unavailable))
    outdated = [f"s{i}" for i in range(n)]
    batches = rolling_batches(outdated, serving=n, surge=s, unavailable=u)
    serving, running = n, n
    retired = []
    for batch in batches:
        assert batch.launch >= 1
        serving -= len(batch.retire_first)
        running -= len(batch.retire_first)
        assert serving >= max(1, n - u)
        running += batch.launch
        # at most `surge` extra, plus any early retirement the traffic guard held back
        held_back = min(u, batch.launch) - len(batch.retire_first)
        assert running <= n + s + held_back
        serving += batch.launch
        serving -= len(batch.retire_after)
        running -= len(batch.retire_after)
        retired += [*batch.retire_first, *batch.retire_after]
    assert sorted(retired) == sorted(outdated)
    assert serving == n and running == n
    assert len(batches) == ideal_batches(n, s, u)


def test_traffic_guard_keeps_one_serving_when_everything_may_be_unavailable():
    batches = rolling_batches(["a"], serving=1, surge=0, unavailable=1)
    assert batches[0].retire_first == () and batches[0].retire_after == ("a",)


def test_max_surge_100_percent_is_one_batch_of_twenty():
    plan = plan_role("frontend", 20, "fp-new", "img-new", [server(i) for i in range(20)], RolloutSpec(max_surge="100%"), replace_all=True)
    assert len(plan.batches) == 1 and plan.batches[0].launch == 20 and len(plan.batches[0].retire_after) == 20


def test_reasons_for_replacement():
    observed = [
        server(1, fingerprint="fp-old", image="img-old"),
        server(2, fingerprint="fp-old", image="img-new"),
        server(3),
        server(4, alive=False),
        server(5, in_service=False),
    ]
    plan = plan_role("frontend", 3, "fp-new", "img-new", observed, RolloutSpec())
    assert {(r.server_id, r.reason) for r in plan.replace} == {("s1", "image changed"), ("s2", "boot configuration changed")}
    assert {r.server_id: r.reason for r in plan.remove_dead} == {
        "s4": "dead: its process is gone",
        "s5": "not in service (left over by an unfinished operation)",
    }
    assert plan.retire_extra == []
    # one batch per outdated server with surge 1; nothing missing since 3 live remain
    assert [b.launch for b in plan.batches] == [1, 1]


def test_up_does_not_replace_outdated_but_fills_missing():
    plan = plan_role("frontend", 3, "fp-new", "img-new", [server(1, fingerprint="fp-old")], RolloutSpec(), replace_outdated=False)
    assert plan.replace == [] and [b.launch for b in plan.batches] == [2]


def test_complete_and_current_role_changes_nothing():
    plan = plan_role("frontend", 2, "fp-new", "img-new", [server(1), server(2)], RolloutSpec())
    assert plan.changes_nothing


def test_extra_servers_retire_outdated_first():
    observed = [server(1), server(2, fingerprint="fp-old"), server(3)]
    plan = plan_role("frontend", 2, "fp-new", "img-new", observed, RolloutSpec())
    assert [r.server_id for r in plan.retire_extra] == ["s2"]
    assert plan.replace == [] and plan.batches == []


def test_rotate_replaces_every_live_server():
    plan = plan_role("frontend", 3, "fp-new", "img-new", [server(i) for i in range(3)], RolloutSpec(), replace_all=True)
    assert [r.reason for r in plan.replace] == ["rotation requested"] * 3
    assert len(plan.batches) == 3


def test_kept_servers_are_neither_replaced_nor_retired():
    """A server whose retirement was refused (state on it) stays; the others are still planned."""
    observed = [server(1, fingerprint="fp-old"), server(2, fingerprint="fp-old"), server(3, alive=False)]
    plan = plan_role("frontend", 3, "fp-new", "img-new", observed, RolloutSpec(), keep=frozenset({"s1"}))
    assert [r.server_id for r in plan.replace] == ["s2"]
    assert [r.server_id for r in plan.remove_dead] == ["s3"]
    assert sum(b.launch for b in plan.batches) == 1 + 1  # the dead one's place, then s2's replacement
    extra = plan_role("frontend", 1, "fp-new", "img-new", [server(1), server(2)], RolloutSpec(), keep=frozenset({"s1"}))
    assert [r.server_id for r in extra.retire_extra] == ["s2"]  # the kept one is never the one retired
