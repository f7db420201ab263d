"""The local provider's balancer (real HAProxy) knows its own processes: one per role, even
after a command was killed between starting a balancer and recording it, and a clock step
never makes a live balancer look dead."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest

from conftest import passable, wait_for
from phoenixctl.deadline import Deadline
from phoenixctl.drivers.base import BalancerRequest
from phoenixctl.drivers.local.haproxy import HAProxyLoadBalancers


def haproxies_of(config: Path) -> list[int]:
    return [
        p.pid for p in psutil.process_iter(["cmdline", "status"])
        if p.info["status"] != psutil.STATUS_ZOMBIE and str(config) in (p.info["cmdline"] or [])
    ]


@pytest.fixture
def balancers(tmp_path: Path):
    workdir = passable(tmp_path) / ".phoenix"
    workdir.mkdir(mode=0o711)
    driver = HAProxyLoadBalancers(workdir, "balancer-test")
    made: list[dict] = []
    yield driver, made
    for handle in made:
        driver.destroy(handle, Deadline(10, "test balancer to stop"))


def test_a_balancer_started_but_never_recorded_is_stopped_when_the_role_gets_its_balancer(balancers):
    """A command killed right after starting a balancer, before recording it, left it running:
    the next `up` started a second one on the same address (SO_REUSEPORT) and `destroy`
    never stopped the first. Now `create` stops what runs with the role's config first."""
    driver, made = balancers
    request = BalancerRequest(env="ci", role="web", port=18080, health_path="/healthz")
    lost = driver.create(request)  # the record of this one is lost with the killed command
    config = Path(lost.handle["dir"]) / "haproxy.cfg"
    made.append(driver.create(BalancerRequest(**{**request.__dict__, "address": lost.address})).handle)
    assert haproxies_of(config) == [made[0]["pid"]]
    assert not driver.is_alive(lost.handle)


def test_a_live_balancer_stays_alive_whatever_the_recorded_start_time_says(balancers):
    """The start time read back moves with a stepped wall clock: identity is the process
    started with the balancer's own config file, not a timestamp within 0.05 s."""
    driver, made = balancers
    handle = driver.create(BalancerRequest(env="ci", role="api", port=18081, health_path="/healthz")).handle
    made.append(handle)
    assert driver.is_alive({**handle, "started": handle["started"] - 1.0})
    driver.destroy(handle, Deadline(10, "balancer to stop"))
    wait_for(lambda: not driver.is_alive(handle), 10, "the balancer to be gone")
    assert haproxies_of(Path(handle["dir"]) / "haproxy.cfg") == []
