"""The OpenStack API as both OpenStack drivers use it: one openstacksdk connection per
provider section, errors as one line, tags, the catalogue, paced waits.

openstacksdk is imported on first use (`phoenix --help` and `validate` of a spec whose cloud
is not configured never load it). The connection comes from a `clouds.yaml` entry
(`provider.cloud`) or the standard `OS_*` variables, as every OpenStack tool reads them;
credentials are never stored or printed."""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import threading
from urllib.parse import urlparse

from ...deadline import Deadline
from ...errors import PhoenixError
from ...spec import ProviderSpec

TAG = "phoenix:"
# Which catalogue service each of a spec's needs takes, and its project name for messages.
SERVICES = {"load_balancer": ("load-balancer", "Octavia"), "dns": ("dns", "Designate"), "floating_ip": ("network", "Neutron")}


def tag_list(tags: dict[str, str]) -> list[str]:
    """Neutron, Octavia and Nova tags are plain strings: `phoenix:env=ci`."""
    return sorted(f"{key}={value}" for key, value in tags.items())


def tag_dict(tags: list[str] | None) -> dict[str, str]:
    return dict(tag.split("=", 1) for tag in tags or [] if "=" in tag)


def configured(settings: ProviderSpec) -> bool:
    """A cloud is named (clouds.yaml entry, OS_CLOUD) or the OS_* variables give an auth URL."""
    return bool(settings.cloud or os.environ.get("OS_CLOUD") or os.environ.get("OS_AUTH_URL"))


class OpenStack:
    """One connection for a provider section, made on first use and shared by both drivers."""

    _shared: dict[tuple, "OpenStack"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, settings: ProviderSpec):
        self.settings = settings
        self._conn = None
        self._fast: bool | None = None
        self._lock = threading.Lock()
        self._named_locks: dict[str, threading.Lock] = {}

    @classmethod
    def of(cls, settings: ProviderSpec) -> "OpenStack":
        key = (settings.cloud, settings.region, os.environ.get("OS_CLOUD"), os.environ.get("OS_AUTH_URL"), os.environ.get("OS_PROJECT_NAME"))
        with cls._shared_lock:
            return cls._shared.setdefault(key, cls(settings))

    def lock_for(self, name: str) -> threading.Lock:
        with self._lock:
            return self._named_locks.setdefault(name, threading.Lock())

    @property
    def conn(self):
        with self._lock:
            if self._conn is None:
                self._conn = self._connect()
            return self._conn

    def _connect(self):
        try:
            import openstack
            from openstack import exceptions
        except ImportError:
            raise PhoenixError("provider openstack needs openstacksdk: pip install 'phoenixctl[openstack]'") from None
        if not configured(self.settings):
            raise PhoenixError("provider openstack: no cloud; set provider.cloud (a clouds.yaml entry) or the OS_* variables (OS_AUTH_URL, ...)")
        kwargs = {"region_name": self.settings.region} if self.settings.region else {}
        # keystoneauth logs its discovery attempts as warnings: the error below says it in one line
        logging.getLogger("keystoneauth").setLevel(logging.ERROR)
        try:
            conn = openstack.connect(cloud=self.settings.cloud or os.environ.get("OS_CLOUD"), **kwargs)
            conn.authorize()  # fail here, in one line, rather than in the first call
        except exceptions.SDKException as exc:
            raise PhoenixError(f"provider openstack: cannot sign in to {self.settings.cloud or 'the OS_* cloud'}: {one_line(exc)}") from None
        return conn

    @property
    def fast(self) -> bool:
        """The cloud answers on loopback (the tests' emulator): look often, nothing is throttled."""
        if self._fast is None:
            host = urlparse(self.conn.config.get_auth_args().get("auth_url", "")).hostname or ""
            try:
                self._fast = ipaddress.ip_address(host).is_loopback
            except ValueError:
                self._fast = host == "localhost"
        return self._fast

    def interval(self, real: float = 2.0) -> float:
        return 0.05 if self.fast else real

    def services(self) -> set[str]:
        """The service types the catalogue of this project lists."""
        access = self.conn.session.auth.get_access(self.conn.session)
        return {entry.get("type") for entry in access.service_catalog.catalog}

    def call(self, what: str, function, *args, **kwargs):
        """One API call; an OpenStack error becomes one line naming what was done."""
        from openstack import exceptions

        try:
            return function(*args, **kwargs)
        except exceptions.HttpException as exc:
            raise OpenStackError(what, exc.status_code, one_line(exc)) from None
        except exceptions.SDKException as exc:
            raise PhoenixError(f"OpenStack {what}: {one_line(exc)}") from None

    def found(self, what: str, function, *args):
        """A show call's resource, or None when it is gone (404)."""
        try:
            return self.call(what, function, *args)
        except OpenStackError as exc:
            if exc.status == 404:
                return None
            raise

    def tagged(self, what: str, lister, tags: dict[str, str]) -> list:
        """Every resource a Neutron or Octavia list call finds carrying all of the tags."""
        return self.call(f"list {what}", lambda: list(lister(tags=",".join(tag_list(tags)))))

    def wait(self, check, deadline: Deadline, real_interval: float = 2.0):
        """Poll `check` until the deadline: every `real_interval` backing off to 5 times it on a
        cloud (throttling), every 0.05-0.1 s on loopback."""
        if self.fast:
            return deadline.poll(check, interval=0.05, max_interval=0.1)
        return deadline.poll(check, interval=real_interval, max_interval=real_interval * 5)

    def network(self, names: list[str] | None) -> list:
        """The placement's networks, else the project's only private network."""
        net = self.conn.network
        if names:
            found = []
            for name in names:
                network = self.call(f"find network {name}", net.find_network, name)
                if network is None:
                    raise PhoenixError(f"no network {name!r} in this project (placement.networks)")
                found.append(network)
            return found
        private = [n for n in self.call("list networks", lambda: list(net.networks())) if not n.is_router_external]
        if len(private) != 1:
            names = ", ".join(sorted(n.name for n in private)) or "none"
            raise PhoenixError(f"name the servers' network in placement.networks (this project has {names})")
        return private

    def external_network(self):
        external = [n for n in self.call("list networks", lambda: list(self.conn.network.networks(is_router_external=True)))]
        if not external:
            raise PhoenixError("this cloud has no external network to take floating IPs from")
        return sorted(external, key=lambda n: n.name)[0]


class OpenStackError(PhoenixError):
    def __init__(self, what: str, status: int | None, message: str):
        self.status = status
        super().__init__(f"OpenStack {what}: {message}")


def one_line(exc: Exception) -> str:
    """An SDK error's message on one line, without urllib3's retry chain."""
    text = " ".join(str(getattr(exc, "details", None) or exc).split())
    return text.split(": HTTPConnectionPool(")[0][:300]


def missing_services(settings: ProviderSpec) -> dict[str, str]:
    """Which of the spec's needs the catalogue cannot meet: {need: the one line saying so}.
    A cloud that is not configured is not asked (validate then checks the spec alone)."""
    if not configured(settings):
        return {}
    present = OpenStack.of(settings).services()
    return {
        need: f"the catalogue of this OpenStack cloud has no {service} service ({project})"
        for need, (service, project) in SERVICES.items() if service not in present
    }


def short_name(*parts: str, limit: int = 63) -> str:
    """A readable resource name with a short hash, within the limit."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:6]
    return f"phoenix-{'-'.join(parts)}"[: limit - 7] + f"-{digest}"
