"""The models of `phoenix.yaml` (pydantic): images, roles, environments, rollout, deadlines,
secrets by reference, the provider. Everything else in Phoenix reads these, never raw YAML."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    field_validator,
    model_validator,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import core_schema as cs

from .recovery_models import BackupSpec, DrillSpec
from .simulated_models import SimulatedSpec
from .values import MAX_ROLE_COUNT, NAME_PATTERN, Duration, Name, Quantity, Share, ShipTo

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Fields of which a file gives exactly one (checked by the model's validator, and in its schema)
    exactly_one: ClassVar[tuple[str, ...]] = ()
    # A shorthand a before-validator expands into the mapping (`provider: local`), as JSON Schema
    shorthand: ClassVar[dict[str, Any] | None] = None

    def _exactly_one_given(self) -> bool:
        return sum(getattr(self, name) is not None for name in self.exactly_one) == 1

    @classmethod
    def __get_pydantic_json_schema__(cls, core_schema: cs.CoreSchema, handler: GetJsonSchemaHandler) -> JsonSchemaValue:
        schema = super().__get_pydantic_json_schema__(core_schema, handler)
        if cls.exactly_one:
            schema["oneOf"] = [
                {"required": [name], "properties": {name: {"not": {"type": "null"}}}} for name in cls.exactly_one
            ]
        if cls.shorthand is not None and handler.mode == "validation":
            title, description = schema.pop("title", None), schema.pop("description", None)
            schema = {"anyOf": [dict(cls.shorthand), schema]}
            schema.update({key: value for key, value in (("title", title), ("description", description)) if value})
        return schema


class ImageRef(Model):
    """An image built elsewhere: by id, by name pattern (the newest match wins), or the last
    build of a Packer `manifest.json` (cloud providers)."""

    id: str | None = Field(None, description="The image id, e.g. ami-0123456789abcdef0")
    name: str | None = Field(None, description="A name pattern (* and ?): the newest image matching it")
    owners: list[str] = Field(default_factory=list, description="With name: whose images (self, amazon, an account id)")
    packer_manifest: str | None = Field(None, description="A Packer manifest.json (relative to phoenix.yaml): its last build")

    exactly_one = ("id", "name", "packer_manifest")

    @model_validator(mode="after")
    def _exactly_one(self) -> "ImageRef":
        if not self._exactly_one_given():
            raise ValueError("give exactly one of id, name or packer_manifest")
        if self.owners and self.name is None:
            raise ValueError("owners goes with name")
        return self

    def describe(self) -> str:
        if self.id:
            return self.id
        if self.name:
            return f"the newest image named {self.name!r}" + (f" owned by {', '.join(self.owners)}" if self.owners else "")
        return f"the last build of {self.packer_manifest}"


class LayerSpec(Model):
    """One layer of an image: files copied in, then steps run, on top of the layer below. A
    layer whose inputs (the layer below, its files' content, its steps) are unchanged is
    reused from the cache without running anything."""

    name: Name | None = Field(None, description="A label shown by `phoenix bake` (default: its number)")
    files: list[str] = Field(default_factory=list, description="Paths relative to phoenix.yaml, copied into the image")
    steps: list[str] = Field(default_factory=list, description="Shell commands run inside the image at bake time")

    @field_validator("files")
    @classmethod
    def _relative(cls, files: list[str]) -> list[str]:
        return _inside_project(files)


def _inside_project(files: list[str]) -> list[str]:
    for path in files:
        if Path(path).is_absolute() or ".." in Path(path).parts:
            raise ValueError(f"{path!r} must be a path inside the project")
    return files


class ImageSpec(Model):
    """How to bake an image: files copied from the project, shell steps, the start command;
    or the same as a list of layers, each cached on its own (dependencies first, code last)."""

    base: ImageRef | None = Field(None, description="Cloud providers: the image `bake` starts its builder server from")
    prebuilt: ImageRef | None = Field(None, description="Cloud providers: use this image as it is (no bake)")
    files: list[str] = Field(default_factory=list, description="Paths relative to phoenix.yaml, copied into the image")
    steps: list[str] = Field(default_factory=list, description="Shell commands run inside the image at bake time")
    layers: list[LayerSpec] = Field(
        default_factory=list, description="Instead of files and steps: layers baked in order, each cached on its own"
    )
    runtime: str | None = Field(
        None, description="The interpreter the image is built for (a command on the system PATH, or an absolute path); "
        "recorded in the image's manifest, and a new version of it rebuilds every layer",
    )
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Variables for the bake's steps and the image's servers: nothing else is inherited from the shell",
        json_schema_extra={"propertyNames": {"pattern": r"^[A-Za-z_][A-Za-z0-9_]*$"}},
    )
    start: str = Field(description="The command that starts a server from this image (run in the server's root)")
    bake_timeout: Duration = 300.0

    @field_validator("files")
    @classmethod
    def _relative(cls, files: list[str]) -> list[str]:
        return _inside_project(files)

    @field_validator("env")
    @classmethod
    def _env_names(cls, env: dict[str, str]) -> dict[str, str]:
        for key in env:
            if not _ENV_KEY.match(key):
                raise ValueError(f"{key!r} is not a valid environment variable name")
        return env

    @model_validator(mode="after")
    def _layers_or_files(self) -> "ImageSpec":
        if self.layers and (self.files or self.steps):
            raise ValueError("give either layers or files and steps (the files and steps of one layer)")
        return self

    def all_layers(self) -> list[LayerSpec]:
        """The image's layers: the list given, or its files and steps as one layer."""
        return list(self.layers) or [LayerSpec(files=self.files, steps=self.steps)]

    def layer_files(self) -> list[tuple[tuple, list[str]]]:
        """Each layer's files with the place in the spec they come from (for error messages)."""
        if not self.layers:
            return [(("files",), self.files)]
        return [(("layers", index, "files"), layer.files) for index, layer in enumerate(self.layers)]


# An absolute URL path (and query) of RFC 3986 characters: no space, quote, '#', '$' or control
# character, since it is written into the balancer's configuration (where "$VAR" would expand)
# and sent in requests.
HEALTH_PATH_PATTERN = r"^/[A-Za-z0-9._~!&()*+,;=:@%/?-]{0,255}$"


class HealthSpec(Model):
    path: str = Field("/healthz", pattern=HEALTH_PATH_PATTERN, description="An absolute URL path such as /healthz")
    timeout: Duration = 2.0

    @field_validator("path", mode="before")
    @classmethod
    def _url_path(cls, value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(HEALTH_PATH_PATTERN, value):
            raise ValueError(
                f"{value!r} is not an absolute URL path (a '/' then letters, digits and -._~!&()*+,;=:@%/? only: "
                "no space, quote, '#', '$' or control character)"
            )
        return value


SecretName = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,62}$")]
_MODE = re.compile(r"^0?[0-7]{3}$")


class SecretRef(Model):
    """`{secret: NAME}`: the value of a secret of the server's own environment."""

    secret: SecretName


class SecretSource(Model):
    """Where an environment's secret comes from: never the value itself."""

    file: str | None = Field(None, description="A file (relative to phoenix.yaml) holding the secret")
    env: str | None = Field(None, description="An environment variable of the phoenix command holding the secret")
    command: str | None = Field(None, description="A shell command whose standard output is the secret")

    exactly_one = ("file", "env", "command")

    @model_validator(mode="after")
    def _exactly_one(self) -> "SecretSource":
        if not self._exactly_one_given():
            raise ValueError("give exactly one of file, env or command (never the secret's value)")
        return self

    def describe(self) -> str:
        if self.file is not None:
            return f"file {self.file}"
        if self.env is not None:
            return f"environment variable {self.env}"
        return f"command {self.command!r}"


class FileSpec(Model):
    """A file written into the server at boot (cloud-init `write_files`)."""

    path: str = Field(description="Relative to the server's root; it must stay inside the server")
    content: str | None = None
    secret: SecretName | None = Field(None, description="Write this secret of the environment (mode 0600)")
    source: str | None = Field(None, description="Copy this project file (relative to phoenix.yaml)")
    mode: Annotated[str, Field(pattern=_MODE.pattern)] | None = Field(None, description="Octal string such as '0644' (secrets: '0600')")
    owner: str = "root:root"

    exactly_one = ("content", "secret", "source")

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str) -> str:
        if Path(path).is_absolute() or ".." in Path(path).parts or not path.strip():
            raise ValueError(f"{path!r} is outside the server: use a path relative to its root, without '..'")
        return path

    @field_validator("mode", mode="before")
    @classmethod
    def _octal(cls, mode: Any) -> Any:
        if mode is not None and (not isinstance(mode, str) or not _MODE.match(mode)):
            raise ValueError("must be a quoted octal string such as '0600' (unquoted, YAML reads a number)")
        return mode

    @model_validator(mode="after")
    def _one_source(self) -> "FileSpec":
        if not self._exactly_one_given():
            raise ValueError("give exactly one of content, secret or source")
        if self.secret and self.mode and int(self.mode, 8) & 0o077:
            raise ValueError(f"secret files must not be readable by group or others (mode {self.mode}); use '0600'")
        return self

    @property
    def permissions(self) -> str:
        return "0" + (self.mode or ("600" if self.secret else "644")).lstrip("0").rjust(3, "0")


class ConfigLayer(Model):
    """What a server gets at boot. Layers, later wins: defaults -> role -> environment ->
    environment x role. `env` and `files` merge by name and path, `runcmd` and `scripts`
    add up, `cloud_config` merges by top-level key."""

    env: dict[str, str | SecretRef] = Field(
        default_factory=dict,
        description="Environment variables given at boot",
        json_schema_extra={"propertyNames": {"pattern": _ENV_KEY.pattern}},
    )
    files: list[FileSpec] = Field(default_factory=list, description="Files written into the server at boot")
    runcmd: list[str] = Field(default_factory=list, description="Commands run at boot, before the start command")
    scripts: list[str] = Field(default_factory=list, description="Project files delivered as shell parts of the user-data")
    cloud_config: dict[str, Any] = Field(
        default_factory=dict, description="More cloud-config modules (validated against cloud-init's schema)"
    )

    @field_validator("env", mode="before")
    @classmethod
    def _env_values(cls, env: Any) -> Any:
        if isinstance(env, dict):
            for key, value in env.items():
                if not isinstance(key, str) or not _ENV_KEY.match(key):
                    raise ValueError(f"{key!r} is not a valid environment variable name")
                if not isinstance(value, (str, dict)):
                    raise ValueError(f"{key}: value must be a string (quote it in YAML) or {{secret: NAME}}")
        return env


class WarmupSpec(Model):
    """Crawl each new server on its own address before it takes traffic (a gate)."""

    enabled: bool = True
    paths: list[str] = Field(
        default_factory=lambda: ["/"],
        description="Where the crawl starts",
        json_schema_extra={"items": {"type": "string", "pattern": "^/"}},
    )
    sitemap: str | None = Field(None, description="A sitemap (or sitemap index) whose pages are warmed too")
    max_pages: int = Field(500, ge=1, description="Pages at most")
    concurrency: int = Field(4, ge=1, le=64)
    timeout: Duration = Field(60.0, description="The whole crawl's time limit")
    request_timeout: Duration = 10.0
    success_codes: list[int] = Field(default_factory=lambda: [200, 203, 204, 301, 302, 304])
    min_success: Share = Field(
        0.95, description="Share of the planned pages that must succeed in time (0.95 or 95%)"
    )

    @field_validator("paths")
    @classmethod
    def _absolute_paths(cls, paths: list[str]) -> list[str]:
        for path in paths:
            if not path.startswith("/"):
                raise ValueError(f"{path!r} must start with /")
        return paths


class PlacementSpec(Model):
    """Where a cloud provider puts servers; later layers win: provider -> role -> environment
    -> environment x role. Servers are spread across the subnets' availability zones."""

    instance_type: str | None = Field(None, description="e.g. t3.small")
    subnets: list[str] | None = Field(None, description="Subnet ids (default: the default VPC's subnets)")
    security_groups: list[str] | None = Field(None, description="Security group ids (default: one Phoenix creates per role)")
    flavor: str | None = Field(None, description="OpenStack: the Nova flavour's name or id, e.g. m1.small")
    networks: list[str] | None = Field(None, description="OpenStack: Neutron network names or ids (default: the project's only private network)")


class DiscoverySpec(Model):
    """How clients find a role's servers."""

    type: Literal["load_balancer", "floating_ip"] = Field(
        "load_balancer", description="A load balancer per role, or a floating IP moved to the new server (one server)"
    )
    public: bool = Field(False, description="Cloud providers: an internet-facing load balancer (default: internal)")
    dns: str | None = Field(
        None, description="A DNS record kept pointing at the role, relative to the environment's dns_zone (where it names one)"
    )


class RoleSpec(ConfigLayer):
    image: str
    port: int = Field(ge=1, le=65535)
    tls_port: int | None = Field(
        None, ge=1, le=65535, description="A TLS port the servers serve themselves; the load balancer passes it through"
    )
    command: str | None = Field(None, description="Overrides the image's start command")
    health: HealthSpec = HealthSpec()
    warmup: WarmupSpec | None = Field(None, description="Warm each new server before it takes traffic")
    depends_on: list[str] = Field(
        default_factory=list, description="Roles converged before this one (e.g. the backend a frontend calls)"
    )
    scratch: list[str] = Field(
        default_factory=list, description="Paths in the server (fnmatch patterns) that may change freely: caches, temporary files"
    )
    on_server_state: Literal["refuse", "discard"] = Field(
        "refuse", description="Retiring a server that holds files written outside scratch and persistent mounts"
    )
    persistent: list[Name] = Field(
        default_factory=list,
        description="Named directories of the persistent layer (outside every server) attached at boot; "
        "roles of one environment that name the same directory share it",
    )
    discovery: DiscoverySpec = DiscoverySpec()
    placement: PlacementSpec = PlacementSpec()


Strategy = Literal["rolling", "blue-green", "canary"]


class RolloutSpec(Model):
    """How a deploy replaces servers: rolling, blue-green or canary."""

    strategy: Strategy = "rolling"
    max_surge: Quantity = 1
    max_unavailable: Quantity = 0
    keep_previous: Duration = Field(600.0, description="blue-green: how long the previous group stays ready to switch back to")
    canary: Quantity = Field(1, description="canary: new servers put beside the old ones first (count or percentage)")
    canary_time: Duration = Field(30.0, description="canary: how long they are watched")
    canary_tolerance: Share = Field(
        0.01, description="canary: how much higher the canaries' error rate may be than the old servers' (0.01 or 1%)"
    )
    on_failure: Literal["rollback", "keep"] = Field(
        "rollback",
        description="a deploy that fails: roll the roles it already moved back to the previous release (a release is the unit), or keep them",
    )


class DeadlinesSpec(Model):
    """How long each wait may take before the server (or the step) is given up."""

    boot: Duration = 30.0
    health: Duration = 30.0
    swap: Duration = 20.0
    drain: Duration = 30.0
    stop: Duration = 10.0


class LogsSpec(Model):
    """Where servers' output goes: the project's own aggregator (local), or `ship_to` one of yours."""

    enabled: bool = Field(True, description="Off: servers' output stays in their own log files, shipped nowhere")
    ship_to: ShipTo | None = Field(None, description="An RFC 5424 receiver, syslog+tcp://HOST:PORT (default: the project's own)")
    keep: Duration = Field(7 * 86400.0, description="How long the project's aggregator keeps each line (e.g. 7d)")


class DefaultsSpec(ConfigLayer):
    rollout: RolloutSpec = RolloutSpec()
    deadlines: DeadlinesSpec = DeadlinesSpec()
    logs: LogsSpec = LogsSpec()


class EnvRoleSpec(ConfigLayer):
    count: int = Field(ge=0, le=MAX_ROLE_COUNT, description=f"Servers of the role (at most {MAX_ROLE_COUNT})")
    max_age: Duration | None = Field(None, description="Replaces the environment's max_age for this role")
    warmup: WarmupSpec | None = Field(None, description="Replaces the role's warm-up in this environment")
    lb_address: str | None = Field(
        None, pattern=r"^127\.\d{1,3}\.\d{1,3}\.\d{1,3}:\d{1,5}$", description="Fixed host:port on loopback"
    )
    placement: PlacementSpec = PlacementSpec()

    shorthand = {"type": "integer", "minimum": 0, "maximum": MAX_ROLE_COUNT, "description": "The count alone: `frontend: 3`"}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        # `frontend: 3` is short for `frontend: {count: 3}`
        return {"count": value} if isinstance(value, int) and not isinstance(value, bool) else value


class WatchSpec(Model):
    """`phoenix watch`: the reconcile loop that keeps an environment phoenix."""

    interval: Duration = 30.0
    max_replacements_per_hour: int = Field(20, ge=0, description="Budget for planned replacements; dead and unhealthy ones do not wait")


class InPlaceSpec(Model):
    """`environments.E.in_place`: how an in-place environment's servers are updated."""

    command: str | None = Field(
        None,
        description=(
            "The team's own deployment script, run once per server from the project directory with PHOENIX_SERVER_ID, "
            "PHOENIX_SERVER_ADDRESS, PHOENIX_SERVER_ROOT, PHOENIX_ROLE, PHOENIX_ENV, PHOENIX_IMAGE and PHOENIX_PREVIOUS_IMAGE "
            "in its environment (default: the provider's built-in update)"
        ),
    )


class EnvironmentSpec(ConfigLayer):
    roles: dict[str, EnvRoleSpec]
    mode: Literal["phoenix", "in-place"] = Field(
        "phoenix",
        description="phoenix: deploys replace servers; in-place: servers are created once and each deploy updates them where they stand",
    )
    in_place: InPlaceSpec | None = Field(None, description="in-place environments: the deployment script (default: the built-in update)")
    max_age: Duration | None = Field(None, description="Servers older than this are replaced (e.g. 7d)")
    watch: WatchSpec = WatchSpec()
    secrets: dict[SecretName, SecretSource] = Field(
        default_factory=dict, description="This environment's secrets, by reference; they never reach another environment"
    )
    rollout: RolloutSpec | None = None
    deadlines: DeadlinesSpec | None = None
    logs: LogsSpec | None = Field(None, description="Replaces defaults.logs for this environment")
    placement: PlacementSpec = PlacementSpec()
    dns_zone: str | None = Field(None, description="The DNS zone (e.g. a Route 53 hosted zone) of the roles' dns records")
    backup: BackupSpec = Field(BackupSpec(), description="Backups of the persistent layer (`phoenix backup`)")
    drill: DrillSpec | None = Field(None, description="How often a rebuild is rehearsed (`phoenix drill`)")

    @model_validator(mode="after")
    def _in_place_only(self) -> "EnvironmentSpec":
        if self.in_place is not None and self.mode != "in-place":
            raise ValueError("in_place is for environments with mode: in-place")
        return self


class ProviderSpec(Model):
    name: Name = "local"
    region: str | None = Field(None, description="Cloud region (default: the SDK's usual chain, e.g. AWS_DEFAULT_REGION)")
    endpoint_url: str | None = Field(None, description="The cloud API's address (default: the SDK's, e.g. AWS_ENDPOINT_URL)")
    instance_type: str = Field("t3.micro", description="Default instance type (placement may override it)")
    cloud: str | None = Field(None, description="OpenStack: the clouds.yaml entry (default: the OS_* variables, or OS_CLOUD)")
    flavor: str | None = Field(None, description="OpenStack: the default Nova flavour (placement may override it)")
    emulator: bool | Literal["auto"] = Field(
        "auto", description="The API is an emulator whose servers run nothing (auto: its endpoint is on loopback)"
    )
    server_checks: bool = Field(
        True, description="Phoenix connects to new servers itself (listen, health, warm-up); off: the balancer's check is the gate"
    )
    server_user: Literal["auto", "isolated", "self"] = Field(
        "auto",
        description="local, when phoenix runs as root: auto runs each environment's servers as an unprivileged uid of their "
        "own (and HAProxy as nobody) where that uid can reach the interpreter and the project, else as root (said in each "
        "server's log and by doctor); isolated refuses to launch then; self runs them as whoever runs phoenix",
    )

    simulated: SimulatedSpec | None = Field(
        None, description="simulated: modelled boot, health and drain durations (a rehearsal: nothing runs)"
    )

    shorthand = {"type": "string", "pattern": NAME_PATTERN, "description": "The name alone: `provider: local`"}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @field_validator("simulated")
    @classmethod
    def _simulated_only(cls, simulated: SimulatedSpec | None, info) -> SimulatedSpec | None:
        if simulated is not None and info.data.get("name", "simulated") != "simulated":
            raise ValueError(f"is for provider simulated, not {info.data['name']}")
        return simulated


class StateSpec(Model):
    url: str | None = Field(None, description="Where the state lives: postgresql://user@host/db (libpq's form); default .phoenix/state.db")

    @field_validator("url")
    @classmethod
    def _no_password(cls, url: str | None) -> str | None:
        if url and re.search(r"://[^/@?]*:[^/@?]*@|[?&]password=", url):
            raise ValueError("a password here would be stored with every release: give it with PHOENIX_STATE_URL, PGPASSWORD or ~/.pgpass")
        return url


class Spec(Model):
    """The whole `phoenix.yaml`."""

    project: Name = "phoenix"
    provider: ProviderSpec = ProviderSpec()
    state: StateSpec = StateSpec()
    defaults: DefaultsSpec = DefaultsSpec()
    images: dict[Name, ImageSpec]
    roles: dict[Name, RoleSpec]
    environments: dict[Name, EnvironmentSpec]

    def rollout(self, env: str) -> RolloutSpec:
        return self.environments[env].rollout or self.defaults.rollout

    def max_age(self, env: str, role: str) -> float | None:
        return self.environments[env].roles[role].max_age or self.environments[env].max_age

    def warmup(self, env: str, role: str) -> WarmupSpec | None:
        chosen = self.environments[env].roles[role].warmup or self.roles[role].warmup
        return chosen if chosen and chosen.enabled else None

    def deadlines(self, env: str) -> DeadlinesSpec:
        return self.environments[env].deadlines or self.defaults.deadlines

    def logs(self, env: str) -> LogsSpec:
        return self.environments[env].logs or self.defaults.logs

    def placement(self, env: str, role: str) -> PlacementSpec:
        merged = {"instance_type": self.provider.instance_type, "flavor": self.provider.flavor}
        for layer in (self.roles[role].placement, self.environments[env].placement, self.environments[env].roles[role].placement):
            merged.update(layer.model_dump(exclude_none=True))
        return PlacementSpec(**merged)

