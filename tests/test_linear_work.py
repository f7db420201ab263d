"""The control plane's work per server does not grow with the fleet (issue 15): counted, not
timed (the timings live in bench/profile_control_plane.py).

With the in-memory drivers (no process, no network: a stand-in so that a fleet costs
nothing), a spy counts how often a balancer is read whole and SQLAlchemy's own event counts
the statements sent to the state store."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from sqlalchemy import event

from phoenixctl.engine import Executor, Project

from fakes import FakeLoadBalancers


def fleet(directory: Path, servers: int) -> Executor:
    spec = {
        "project": "linear",
        "provider": "fake",
        "images": {"app": {"start": "serve"}},
        "roles": {"web": {"image": "app", "port": 8080}},
        "environments": {"prod": {"roles": {"web": servers}, "rollout": {"max_surge": "25%", "max_unavailable": 0}}},
    }
    (directory / "phoenix.yaml").write_text(yaml.safe_dump(spec))
    executor = Executor(Project(directory / "phoenix.yaml"))
    executor.up("prod")
    return executor


class Counts:
    def __init__(self, executor: Executor, monkeypatch: pytest.MonkeyPatch):
        self.whole_reads = self.statements = 0
        members = FakeLoadBalancers.members

        def counted(driver, handle):
            self.whole_reads += 1
            return members(driver, handle)

        monkeypatch.setattr(FakeLoadBalancers, "members", counted)
        event.listen(executor.store.engine, "before_cursor_execute", self.statement)

    def statement(self, *_):
        self.statements += 1


@pytest.mark.parametrize("servers", [40, 120])
def test_a_rotation_reads_the_balancer_whole_a_few_times_and_journals_a_few_rows_per_server(
    servers: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    executor = fleet(tmp_path, servers)
    counts = Counts(executor, monkeypatch)
    result = executor.rotate("prod")
    assert len(result.retired) == servers
    # Each server used to read every member at each poll and at its retirement: 3 reads a
    # server at least. Now a waiting server asks for its own member, and the traffic guard
    # counts over one read, renewed once a second at most.
    assert counts.whole_reads <= 10, counts.whole_reads
    # Its journal: recorded, booting, checking, ready, joining, in service; draining,
    # stopping, read back, destroyed; plus the operation's own rows.
    assert counts.statements <= 11 * servers + 40, counts.statements / servers


def test_planning_queries_the_store_the_same_number_of_times_for_any_fleet(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    statements, reads = [], []
    for servers in (10, 50):
        directory = tmp_path / str(servers)
        directory.mkdir()
        executor = fleet(directory, servers)
        counts = Counts(executor, monkeypatch)
        plan = executor.reports.reconcile_plan("prod")
        assert not plan.needs_replacement
        statements.append(counts.statements)
        reads.append(counts.whole_reads)
        monkeypatch.undo()
    assert statements[0] == statements[1], statements  # no query per server
    assert reads == [1, 1], reads  # the balancer read once for the role, not once per server


def test_the_shared_view_of_members_renewed_after_a_drain_never_shows_the_drained_one_up(tmp_path: Path):
    """A driver may answer `members()` with a read-only view (the simulated one does): a read
    renewed after Phoenix drained a member marks it DRAIN in a copy of its own."""
    from phoenixctl.engine.members import SharedMembers

    executor = fleet(tmp_path, 3)
    lb = executor.store.load_balancer("prod", "web")
    web = sorted(row.id for row in executor.store.servers("prod", "web"))
    shared = SharedMembers(executor.project.load_balancers, stale=0.0)  # every look reads afresh
    assert shared.any_other_up(lb, web[0])
    shared.drained(lb, web[1])
    shared.drained(lb, web[2])
    assert not shared.any_other_up(lb, web[0])  # web[1] and web[2] are UP at the balancer, drained by Phoenix


def test_an_unfinished_operation_is_recovered_however_many_operations_came_after_it(tmp_path: Path):
    """Recovery used to look for unfinished operations among the newest 500 only: a crashed
    one older than that stayed `running` for ever. Now the store is asked for them by status."""
    executor = fleet(tmp_path, 2)
    store = executor.store
    store.start_operation("op-crashed", "prod", "rotate")  # a command killed before it finished
    store.set_operation_status("op-crashed", "running")
    for n in range(501):
        store.start_operation(f"op-later-{n:03d}", "prod", "status")
        store.finish_operation(f"op-later-{n:03d}", "succeeded", "")
    result = executor.recover("prod")
    assert any("op-crashed" in action for action in result.recovered), result.recovered
    assert {op.id: op.status for op in store.operations("prod", limit=1000)}["op-crashed"] == "interrupted"
