"""Drivers are chosen by name from the spec; the engine never imports a concrete one."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from .base import ComputeDriver, LoadBalancerDriver
from ..spec import ProviderSpec

_COMPUTE = {
    "local": "phoenixctl.drivers.local.compute:LocalCompute",
    "simulated": "phoenixctl.drivers.simulated.drivers:SimulatedCompute",  # a rehearsal: nothing runs
    "aws": "phoenixctl.drivers.aws.compute:AWSCompute",
    "openstack": "phoenixctl.drivers.openstack.compute:OpenStackCompute",
}
_LOAD_BALANCERS = {
    "local": "phoenixctl.drivers.local.haproxy:HAProxyLoadBalancers",
    "simulated": "phoenixctl.drivers.simulated.drivers:SimulatedLoadBalancers",
    "aws": "phoenixctl.drivers.aws.balancers:AWSLoadBalancers",
    "openstack": "phoenixctl.drivers.openstack.balancers:OpenStackLoadBalancers",
}


def _load(table: dict[str, str], name: str):
    module, _, cls = table[name].partition(":")
    return getattr(import_module(module), cls)


def compute_driver(name: str, workdir: Path, project: str, settings: ProviderSpec | None = None) -> ComputeDriver:
    return _load(_COMPUTE, name)(workdir, project, settings)


def load_balancer_driver(name: str, workdir: Path, project: str, settings: ProviderSpec | None = None) -> LoadBalancerDriver:
    return _load(_LOAD_BALANCERS, name)(workdir, project, settings)


_UNLISTED: set[str] = set()  # registered by tests: usable by name, never offered


def register(kind: str, name: str, target: str, listed: bool = False) -> None:
    """Make another implementation available by name (`module:Class`), e.g. a test fake."""
    {"compute": _COMPUTE, "load_balancer": _LOAD_BALANCERS}[kind][name] = target
    if not listed:
        _UNLISTED.add(name)


def capabilities(name: str) -> frozenset[str]:
    """What a provider's drivers can do (KeyError for an unknown provider)."""
    return _load(_COMPUTE, name).capabilities | _load(_LOAD_BALANCERS, name).capabilities


def unavailable(name: str, settings: ProviderSpec) -> dict[str, str]:
    """What the provider's account lacks of its declared capabilities ({need: why}); asks the
    cloud where the provider can tell (an OpenStack catalogue)."""
    return _load(_LOAD_BALANCERS, name).unavailable(settings)


def names() -> list[str]:
    return sorted(name for name in _COMPUTE if name not in _UNLISTED)
