"""The narrow contracts between the engine and the providers.

The engine only sees these classes; concrete drivers are chosen by name from the spec
(see `drivers/__init__.py`) and never imported by the engine. A handle is the small dict
of provider data a driver needs to find its resource again in a later command (a pid and
a root directory locally, an instance id on a cloud); it is kept in the state store."""

from __future__ import annotations

import socket
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ..deadline import Deadline
from ..errors import PhoenixError
from ..spec import DiscoverySpec, ImageSpec, LogsSpec, PlacementSpec, ProviderSpec

if TYPE_CHECKING:
    import httpx


@dataclass(frozen=True)
class ImageSample:
    """One image of the spec, for the doctor's probes."""

    name: str
    recipe: ImageSpec
    project_dir: Path


@dataclass(frozen=True)
class LayerResult:
    """One layer of a bake: reused from the cache or built, how long it took, its size."""

    name: str
    key: str
    cached: bool
    seconds: float
    size: int | None = None  # bytes it adds to the layer below (None: the provider cannot tell)


@dataclass(frozen=True)
class BakeResult:
    image_id: str
    location: str
    cached: bool
    seconds: float
    layers: tuple[LayerResult, ...] = ()
    digest: str = ""  # the whole content address (the id holds its first 16 digits)


@dataclass(frozen=True)
class ImageDetails:
    """What a provider knows of one image it holds: its size, when it was made, its layers."""

    size: int | None
    created: float | None  # seconds since the epoch
    layers: tuple[LayerResult, ...] = ()
    runtime: dict | None = None


@dataclass(frozen=True)
class LaunchRequest:
    server_id: str
    env: str
    role: str
    image_id: str
    image_location: str
    port: int
    command: str
    userdata: bytes  # cloud-init user-data (MIME); holds secret values: never log or store it
    boot_env: dict[str, str] = field(default_factory=dict)  # per-server values: id, ...
    boot_timeout: float = 120.0  # for the user-data's boot commands
    tls_port: int | None = None  # a second port the server serves (TLS passed through)
    placement: PlacementSpec = PlacementSpec()  # instance type, subnets, security groups (clouds)
    discovery: DiscoverySpec = DiscoverySpec()  # how clients reach it: decides who may connect (clouds)
    tags: dict[str, str] = field(default_factory=dict)  # fingerprint, operation, release: written on the resource
    logs: LogsSpec = LogsSpec()  # where the server's output goes (the environment's `logs`)

    def __repr__(self) -> str:
        return f"LaunchRequest({self.server_id}, {self.env}/{self.role}, image {self.image_id})"


@dataclass(frozen=True)
class UpdateRequest:
    """One server of an in-place environment updated where it stands: the new image over its
    root (or the team's `script` run for it), its boot configuration applied again, its
    start command restarted. The server keeps its id, address and age."""

    launch: LaunchRequest  # what a fresh server of this build would be launched with
    previous_location: str  # the image the server runs now (what the update starts from)
    steps: tuple[str, ...] = ()  # the image's steps, run again in the server's root
    script: str | None = None  # `in_place.command`: the team's deployment script, instead of the built-in update
    project_dir: str = ""  # where the script runs

    def __repr__(self) -> str:
        return f"UpdateRequest({self.launch.server_id}, to image {self.launch.image_id})"


@dataclass(frozen=True)
class Launched:
    address: str
    port: int
    handle: dict


@dataclass(frozen=True)
class BalancerRequest:
    """One role's way in: a load balancer, or a floating IP (one server at a time)."""

    env: str
    role: str
    port: int
    health_path: str
    tls_port: int | None = None
    address: str | None = None  # where to listen, for providers that let Phoenix choose (loopback)
    kind: str = "load_balancer"  # or floating_ip
    public: bool = False  # internet-facing, where the provider distinguishes
    dns_name: str | None = None  # a record kept pointing at the balancer or the floating IP
    drain_seconds: float = 30.0  # how long the balancer may keep a retiring member's connections
    placement: PlacementSpec = PlacementSpec()


@dataclass(frozen=True)
class Endpoint:
    address: str
    port: int
    handle: dict


@dataclass(frozen=True)
class MemberState:
    """A load balancer's own view of one member."""

    status: str  # UP, DOWN, DRAIN, MAINT, ... as the load balancer says it
    check_ok: bool  # the load balancer's own health check passed
    sessions: int  # requests currently in flight through this member

    @property
    def up(self) -> bool:
        return self.status == "UP" and self.check_ok

    @property
    def standing_by(self) -> bool:
        """Healthy by the balancer's check, but taking no new traffic (a kept group)."""
        return self.status == "DRAIN" and self.check_ok


@dataclass(frozen=True)
class MemberCounters:
    """Cumulative counters of one member, as the load balancer counted them."""

    requests: int
    errors: int  # 5xx answers, connection and response errors (retried elsewhere or not)


@dataclass(frozen=True)
class FileChanges:
    """A server's files against the root it booted with (paths relative to the root)."""

    modified: list[str]
    added: list[str]
    deleted: list[str]

    def without(self, ignored) -> "FileChanges":
        keep = lambda paths: [p for p in paths if not ignored(p)]  # noqa: E731
        return FileChanges(keep(self.modified), keep(self.added), keep(self.deleted))

    def __bool__(self) -> bool:
        return bool(self.modified or self.added or self.deleted)


def owned_path(workdir: Path, recorded: str, what: str) -> Path:
    """A path from the state store, to be deleted: only when it resolves strictly inside this
    project's `.phoenix/` (a copied project's store points at the original's folders)."""
    if not recorded:
        raise PhoenixError(f"refusing to delete a {what}: the record names none")
    path, own = Path(recorded).resolve(), workdir.resolve()
    if path == own or not path.is_relative_to(own):
        raise PhoenixError(f"refusing to delete {recorded}: a {what} outside this project's {own}")
    return path


@dataclass(frozen=True)
class LogExcerpt:
    """Where a server's output can be read, and the few lines of it that explain a failure
    (see `phoenixctl.excerpt`). Its text is one line, for a gate's error message."""

    source: str  # `.phoenix/logs/ci/web/web-1a2b3c.log`, `the console output of instance i-0abc`
    lines: tuple[str, ...] = ()

    def __str__(self) -> str:
        return f"see {self.source}" + (f": {' | '.join(self.lines)}" if self.lines else "")


@dataclass(frozen=True)
class LogDelivery:
    """How much of a server's output has not reached the aggregator yet."""

    where: str  # the server's own copy, where what was not delivered stays
    pending_lines: int
    reason: str = ""  # why nothing more is moving ('' while it is): `the aggregator is down`

    @property
    def complete(self) -> bool:
        return self.pending_lines == 0


class ComputeDriver(ABC):
    """Images and servers."""

    name: str
    poll_interval = 0.0  # the least time between two looks at a server while waiting (an API's pace)
    capabilities: frozenset[str] = frozenset()  # "persistent_layer", "image_refs" (prebuilt and base images)

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        self.workdir = workdir  # the project's `.phoenix/`
        self.project = project
        self.settings = settings or ProviderSpec()
        self._http: httpx.Client | None = None

    @property
    def reaches_servers(self) -> bool:
        """Phoenix may connect to servers itself (boot, health and warm-up gates)."""
        return self.settings.server_checks

    @property
    def unreachable(self) -> str:
        """Why Phoenix does not connect to the servers, said where a step is skipped for it."""
        return "the provider's servers cannot be reached from here (an emulator, or provider.server_checks off)"

    @abstractmethod
    def image_id(self, name: str, recipe: ImageSpec, project_dir: Path) -> str:
        """The content address of an image: same inputs, same id. No side effects."""

    @abstractmethod
    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline, no_cache: bool = False) -> BakeResult:
        """Build the image unless an image with the same id exists (then `cached`); `no_cache`
        builds it, and every layer of it, again."""

    @abstractmethod
    def image_available(self, image_id: str, location: str) -> bool: ...

    def image_details(self, image_id: str, location: str) -> ImageDetails | None:
        """Size, age and layers of an image (None where the provider cannot tell)."""
        return None

    def forget_image(self, image_id: str, location: str) -> None:
        """Remove an image (`phoenix images prune`); the engine decided nothing needs it."""
        raise PhoenixError(f"provider {self.name} cannot remove images")

    def prune_layers(self) -> list[str]:
        """Remove cached layers no image holds any more; returns their names."""
        return []

    @abstractmethod
    def launch(self, request: LaunchRequest) -> Launched:
        """Start a fresh server from the image, at an address the provider chooses."""

    def update_in_place(self, handle: dict, request: UpdateRequest, deadline: Deadline) -> dict:
        """In-place environments (capability "in_place"): update the server where it stands
        and start it again; returns its new handle. What it ran before is kept until
        `forget_previous`, so `restore_previous` can put it back."""
        raise PhoenixError(f"provider {self.name} cannot update servers in place")

    def restore_previous(self, handle: dict, deadline: Deadline) -> dict:
        """After a failed `update_in_place`: the server back on what it ran before, started again."""
        raise PhoenixError(f"provider {self.name} cannot update servers in place")

    def forget_previous(self, handle: dict) -> None:
        """A successful update: what the server ran before is no longer needed."""

    @abstractmethod
    def is_alive(self, handle: dict) -> bool: ...

    @abstractmethod
    def destroy(self, handle: dict, deadline: Deadline) -> None:
        """Stop the server (gracefully, then by force at the deadline) and delete it."""

    @abstractmethod
    def terminate(self, handle: dict) -> None:
        """End the server abruptly, leaving everything else as it is (chaos: a machine failing)."""

    @abstractmethod
    def discover(self, env: str) -> dict[str, dict]:
        """What really runs for the environment, by server id, whatever the state store
        says: recovery adopts what the record missed and removes orphans."""

    def label(self, handle: dict) -> str:
        """How people know the server: `process 1234`, `instance i-0abc`."""
        return "server"

    def adopt(self, recorded: dict, found: dict) -> dict:
        """The handle of a server whose launch was not recorded, from what `discover` found."""
        return {**recorded, **found}

    def teardown(self, env: str, deadline: Deadline) -> list[str]:
        """After the environment's last server is gone: remove what the provider created for
        it (security groups, ...); returns what was removed."""
        return []

    def capability_report(self, probe: bool, deadline: Deadline, sample: "ImageSample | None" = None) -> list[dict]:
        """`phoenix doctor`: what this provider and account can do (name, ok, detail[, seconds]);
        `probe` times making an image (the spec's first, as `sample`) and launching a server."""
        return []

    def file_changes(self, handle: dict) -> FileChanges | None:
        """What changed in the server since it booted; None where the provider cannot tell."""
        return None

    # Gates that need a live server. The defaults probe it for real over the network;
    # a provider may answer otherwise (a fake from memory, a cloud through its agent).
    def listening(self, handle: dict, address: str, port: int) -> bool:
        try:
            with socket.create_connection((address, port), timeout=0.5):
                return True
        except OSError:
            return False

    def health(self, handle: dict, address: str, port: int, path: str, timeout: float) -> str:
        """'' when GET path answers 2xx or 3xx, else what it answered."""
        import httpx  # here: only the health gate needs it, and it costs every command at start

        if self._http is None:
            # One client for every check: building one per request costs a TLS context each time.
            self._http = httpx.Client(limits=httpx.Limits(max_keepalive_connections=0))
        try:
            response = self._http.get(f"http://{address}:{port}{path}", timeout=timeout)
        except httpx.HTTPError as exc:
            return type(exc).__name__
        return "" if 200 <= response.status_code < 400 else f"HTTP {response.status_code}"

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def describe(self, handle: dict) -> dict:
        """Provider-specific fields for `status` (pid and root for local servers)."""
        return {}

    def log_delivery(self, handle: dict) -> LogDelivery | None:
        """How much of a stopped server's output has been shipped (None: the provider ships
        from the server itself, or not at all: nothing to wait for here)."""
        return None

    def log_excerpt(self, handle: dict) -> LogExcerpt | None:
        """Where the server's output is and what in it explains a failed gate (read while
        the gate fails: a log that outlives the server, a console); None: nowhere known."""
        return None


def whole_or_nothing(driver: "LoadBalancerDriver", handle: dict, what: str, make):
    """`make()` a balancer into `handle`; when it fails, nothing half-made stays behind: what it
    made is destroyed (best effort: `destroy` of the environment finds the rest by its tags)."""
    try:
        return make()
    except BaseException:
        try:
            driver.destroy(handle, Deadline(300, f"removal of the half-made {what}"))
        except PhoenixError:
            pass
        raise


class LoadBalancerDriver(ABC):
    """One load balancer per role per environment; members are swapped through its API."""

    name: str
    poll_interval = 0.0  # the least time between two looks at the balancer while waiting
    assigns_addresses = False  # True: the provider chooses the address (a cloud's DNS name or IP)
    capabilities: frozenset[str] = frozenset()  # "standby", "counters", "floating_ip", "dns"

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        self.workdir = workdir
        self.project = project
        self.settings = settings or ProviderSpec()

    @abstractmethod
    def create(self, request: BalancerRequest) -> Endpoint:
        """Start the balancer; with `tls_port`, it also passes TLS through to the members."""

    @classmethod
    def unavailable(cls, settings: ProviderSpec) -> dict[str, str]:
        """Needs ("load_balancer", "floating_ip", "dns") this account cannot meet, each with the
        line saying why; `validate` refuses a spec that has them. Default: none."""
        return {}

    def discover(self, env: str) -> dict[str, dict]:
        """The environment's balancers that really exist, by role, whatever the state store says."""
        return {}

    def capability_report(self) -> list[dict]:
        """`phoenix doctor`: the balancer API, floating IPs, DNS (name, ok, detail)."""
        return []

    @abstractmethod
    def is_alive(self, handle: dict) -> bool: ...

    @abstractmethod
    def add_member(
        self, handle: dict, name: str, address: str, port: int, tls_port: int | None = None, standby: bool = False, server: dict | None = None
    ) -> None:
        """Register the member and ask for traffic once the balancer's own check passes
        (with `standby`, checked but given no traffic until `switch`). `server` is the
        member's compute handle (a cloud registers the instance it names)."""

    @abstractmethod
    def members(self, handle: dict) -> dict[str, MemberState]: ...

    def member(self, handle: dict, name: str) -> MemberState | None:
        """One member's state (None: not a member). A server waiting to come UP asks this at
        every poll: a driver that can ask for one member alone overrides it."""
        return self.members(handle).get(name)

    @abstractmethod
    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        """In one step: traffic to the `enable` members, none new to the `disable` ones."""

    @abstractmethod
    def counters(self, handle: dict) -> dict[str, MemberCounters]: ...

    def hold_checks(self, handle: dict, name: str, held: bool) -> None:
        """Hold (or resume) the balancer's checks of a member, so a short restart of the only
        server of a role (an in-place update) is retried rather than marked down. Where the
        provider cannot, the member is checked as always."""

    @abstractmethod
    def drain_member(self, handle: dict, name: str) -> None:
        """Stop new traffic to the member; requests in flight finish."""

    @abstractmethod
    def remove_member(self, handle: dict, name: str, deadline: Deadline) -> None:
        """Take the member out for good (idempotent: a missing member is fine)."""

    @abstractmethod
    def destroy(self, handle: dict, deadline: Deadline) -> None: ...

    def close(self) -> None:
        """The command is over: release what the driver holds."""


def checker(report: list[dict]):
    """`check(name, action)`: run one capability check into the report; an error is a row, not a failure."""

    def check(name: str, action) -> None:
        try:
            report.append({"capability": name, "ok": True, "detail": action()})
        except PhoenixError as exc:
            report.append({"capability": name, "ok": False, "detail": str(exc)})

    return check
