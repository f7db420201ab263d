"""Drivers are chosen by name from the spec; the engine never imports a concrete one."""

from __future__ import annotations

from importlib import import_module
from pathlib import Path

from .base import ComputeDriver, LoadBalancerDriver
from ..spec import ProviderSpec

_COMPUTE = {
    "local": "phoenixctl.drivers.local.compute:LocalCompute",
    "fake": "phoenixctl.drivers.fake:FakeCompute",  # in memory: engine tests and benchmarks only
    "aws": "phoenixctl.drivers.aws.compute:AWSCompute",
}
_LOAD_BALANCERS = {
    "local": "phoenixctl.drivers.local.haproxy:HAProxyLoadBalancers",
    "fake": "phoenixctl.drivers.fake:FakeLoadBalancers",
    "aws": "phoenixctl.drivers.aws.balancers:AWSLoadBalancers",
}


def _load(table: dict[str, str], name: str):
    module, _, cls = table[name].partition(":")
    return getattr(import_module(module), cls)


def compute_driver(name: str, workdir: Path, project: str, settings: ProviderSpec | None = None) -> ComputeDriver:
    return _load(_COMPUTE, name)(workdir, project, settings)


def load_balancer_driver(name: str, workdir: Path, project: str, settings: ProviderSpec | None = None) -> LoadBalancerDriver:
    return _load(_LOAD_BALANCERS, name)(workdir, project, settings)


def register(kind: str, name: str, target: str) -> None:
    """Make another implementation available by name (`module:Class`), e.g. a test fake."""
    {"compute": _COMPUTE, "load_balancer": _LOAD_BALANCERS}[kind][name] = target


def capabilities(name: str) -> frozenset[str]:
    """What a provider's drivers can do (KeyError for an unknown provider)."""
    return _load(_COMPUTE, name).capabilities | _load(_LOAD_BALANCERS, name).capabilities


def names() -> list[str]:
    return sorted(name for name in _COMPUTE if name != "fake")
