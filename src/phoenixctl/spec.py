"""The declarative spec (`phoenix.yaml`), validated into typed models.

Everything else in Phoenix reads these models, never raw YAML. Errors name the file, the
line and the field: `phoenix.yaml:14: environments.ci.roles.frontnd: unknown role ...`."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetJsonSchemaHandler,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue, WithJsonSchema
from pydantic_core import core_schema as cs

from .errors import SpecError
from .paths import ImageFileError, check_image_files, inside_project, secret_file

SPEC_FILENAME = "phoenix.yaml"
# Bounds on what a spec may be, so a hostile or broken file is refused at once instead of
# exhausting memory or time: its size, its nodes once aliases are expanded, its nesting.
MAX_SPEC_BYTES = 1 << 20
MAX_EXPANDED_NODES = 50_000
MAX_DEPTH = 64
MAX_ROLE_COUNT = 10_000  # servers of one role in one environment
MAX_DURATION = 366 * 86400.0
NAME_PATTERN = r"^[a-z][a-z0-9-]{0,30}$"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}
_PERCENT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*$")

# What the parsers below accept, as JSON Schema for `phoenix schema` (what a file may say, not
# the number it becomes): _DURATION's spelling, a lookahead keeping zero out; percentages of at
# most 100%. tests/test_schema.py checks that each parser and its schema agree value by value.
_POSITIVE = r"(?=[0-9.]*[1-9])"
_UP_TO_100 = r"0*(?:100(?:\.0+)?|\d{1,2}(?:\.\d+)?)"
DURATION_JSON_SCHEMA = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0},
        {"type": "string", "pattern": rf"^\s*{_POSITIVE}\d+(?:\.\d+)?\s*(?:ms|s|m|h|d)?\s*$"},
    ],
    "description": "A duration: seconds, or a string such as 500ms, 30s, 2m, 1h or 7d",
}
QUANTITY_JSON_SCHEMA = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": rf"^\s*(?:\d+|{_UP_TO_100}%)\s*$"},
    ],
    "description": "A count (2) or a percentage of the role's size (25%)",
}
SHARE_JSON_SCHEMA = {
    "anyOf": [
        {"type": "number", "minimum": 0, "maximum": 1},
        {"type": "string", "pattern": rf"^\s*{_UP_TO_100}\s*%\s*$"},
    ],
    "description": "A share between 0 and 1, or a percentage (0.95 or 95%)",
}


def parse_duration(value: Any) -> float:
    """`500ms`, `30s`, `2m`, `1h`, `7d` or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as 30s, 500ms or 2m")
    if isinstance(value, (int, float)):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError(f"{value!r} is not a duration (use e.g. 30s, 500ms, 2m)")
        seconds = float(match.group(1)) * _UNITS[match.group(2)]
    if not math.isfinite(seconds):  # .nan and .inf: a deadline that never expires
        raise ValueError("a duration must be a finite number")
    if seconds <= 0:
        raise ValueError("a duration must be positive")
    if seconds > MAX_DURATION:
        raise ValueError("a duration must be at most 366d")
    return seconds


def parse_quantity(value: Any) -> int | str:
    """A count (`2`) or a percentage of the role's size (`25%`)."""
    if isinstance(value, bool):
        raise ValueError("expected a count or a percentage such as 25%")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("must not be negative")
        return value
    text = str(value).strip()
    if re.fullmatch(r"\d+", text):
        return int(text)
    if re.fullmatch(r"\d+(\.\d+)?%", text) and float(text[:-1]) <= 100:
        return text
    raise ValueError(f"{value!r} is not a count or a percentage between 0% and 100%")


def parse_share(value: Any) -> float:
    """`0.95` or `95%`."""
    if isinstance(value, str) and (match := _PERCENT.match(value)):
        value = float(match.group(1)) / 100
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"{value!r} is not a share between 0 and 1 (or 0% and 100%)")
    return float(value)


# Each shorthand carries its JSON Schema: the type after validation is not what a file says.
Duration = Annotated[float, BeforeValidator(parse_duration), WithJsonSchema(DURATION_JSON_SCHEMA, mode="validation")]
Quantity = Annotated[int | str, BeforeValidator(parse_quantity), WithJsonSchema(QUANTITY_JSON_SCHEMA, mode="validation")]
Share = Annotated[float, BeforeValidator(parse_share), WithJsonSchema(SHARE_JSON_SCHEMA, mode="validation")]
Name = Annotated[str, Field(pattern=NAME_PATTERN)]


def resolve_quantity(quantity: int | str, total: int, round_up: bool) -> int:
    """Turn a count or percentage into a number of servers (percentages round as asked)."""
    if isinstance(quantity, int):
        return quantity
    exact = float(quantity[:-1]) * total / 100
    return math.ceil(exact - 1e-9) if round_up else math.floor(exact + 1e-9)


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


class ImageSpec(Model):
    """How to bake an image: files copied from the project, shell steps, the start command."""

    base: ImageRef | None = Field(None, description="Cloud providers: the image `bake` starts its builder server from")
    prebuilt: ImageRef | None = Field(None, description="Cloud providers: use this image as it is (no bake)")
    files: list[str] = Field(default_factory=list, description="Paths relative to phoenix.yaml, copied into the image")
    steps: list[str] = Field(default_factory=list, description="Shell commands run inside the image at bake time")
    start: str = Field(description="The command that starts a server from this image (run in the server's root)")
    bake_timeout: Duration = 300.0

    @field_validator("files")
    @classmethod
    def _relative(cls, files: list[str]) -> list[str]:
        for path in files:
            if Path(path).is_absolute() or ".." in Path(path).parts:
                raise ValueError(f"{path!r} must be a path inside the project")
        return files


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
_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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


class DefaultsSpec(ConfigLayer):
    rollout: RolloutSpec = RolloutSpec()
    deadlines: DeadlinesSpec = DeadlinesSpec()


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


class EnvironmentSpec(ConfigLayer):
    roles: dict[str, EnvRoleSpec]
    max_age: Duration | None = Field(None, description="Servers older than this are replaced (e.g. 7d)")
    watch: WatchSpec = WatchSpec()
    secrets: dict[SecretName, SecretSource] = Field(
        default_factory=dict, description="This environment's secrets, by reference; they never reach another environment"
    )
    rollout: RolloutSpec | None = None
    deadlines: DeadlinesSpec | None = None
    placement: PlacementSpec = PlacementSpec()
    dns_zone: str | None = Field(None, description="The DNS zone (e.g. a Route 53 hosted zone) of the roles' dns records")


class ProviderSpec(Model):
    name: Name = "local"
    region: str | None = Field(None, description="Cloud region (default: the SDK's usual chain, e.g. AWS_DEFAULT_REGION)")
    endpoint_url: str | None = Field(None, description="The cloud API's address (default: the SDK's, e.g. AWS_ENDPOINT_URL)")
    instance_type: str = Field("t3.micro", description="Default instance type (placement may override it)")
    emulator: bool | Literal["auto"] = Field(
        "auto", description="The API is an emulator whose servers run nothing (auto: its endpoint is on loopback)"
    )
    server_checks: bool = Field(
        True, description="Phoenix connects to new servers itself (listen, health, warm-up); off: the balancer's check is the gate"
    )
    server_user: Literal["auto", "self"] = Field(
        "auto",
        description="local: auto runs each environment's servers as an unprivileged uid of their own (and HAProxy as nobody) "
        "when phoenix runs as root; self runs them as whoever runs phoenix",
    )

    shorthand = {"type": "string", "pattern": NAME_PATTERN, "description": "The name alone: `provider: local`"}

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value


class Spec(Model):
    """The whole `phoenix.yaml`."""

    project: Name = "phoenix"
    provider: ProviderSpec = ProviderSpec()
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

    def placement(self, env: str, role: str) -> PlacementSpec:
        merged = {"instance_type": self.provider.instance_type}
        for layer in (self.roles[role].placement, self.environments[env].placement, self.environments[env].roles[role].placement):
            merged.update(layer.model_dump(exclude_none=True))
        return PlacementSpec(**merged)


class LoadedSpec:
    """A validated spec plus where it came from, so later errors can still name lines."""

    def __init__(self, spec: Spec, path: Path, lines: dict[tuple, int], text: str = ""):
        self.spec = spec
        self.text = text
        self.path = path
        self.project_dir = path.parent
        self._lines = lines

    def where(self, *loc: Any) -> str:
        return f"{self.path.name}:{_line_for(self._lines, loc)}"

    def error(self, loc: tuple, message: str) -> SpecError:
        """`phoenix.yaml:LINE: field.path: message` for a place in this spec."""
        return SpecError(f"{self.where(*loc)}: {_dotted(loc)}: {message}")

    def environment(self, env: str) -> EnvironmentSpec:
        if env not in self.spec.environments:
            known = ", ".join(sorted(self.spec.environments))
            raise SpecError(f"{self.path.name}: unknown environment {env!r} (environments: {known})")
        return self.spec.environments[env]

    def check_role(self, role: str) -> None:
        if role not in self.spec.roles:
            known = ", ".join(sorted(self.spec.roles))
            raise SpecError(f"{self.path.name}: unknown role {role!r} (roles: {known})")


# --- loading with line numbers -------------------------------------------------------------


def _index_lines(node: yaml.Node, path: tuple, lines: dict[tuple, int], filename: str, seen_nodes: set[int] | None = None) -> None:
    """Map each field's path to its line. A node reached again through an alias is not walked
    again (its fields keep the lines of where it was written), so aliases cost nothing here."""
    seen_nodes = set() if seen_nodes is None else seen_nodes
    lines[path] = node.start_mark.line + 1
    if id(node) in seen_nodes:
        return
    seen_nodes.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            key = key_node.value
            if key in seen:
                raise SpecError(
                    f"{filename}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}: duplicate key"
                )
            seen.add(key)
            _index_lines(value_node, path + (key,), lines, filename, seen_nodes)
            lines[path + (key,)] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _index_lines(item, path + (index,), lines, filename, seen_nodes)


def _check_bounds(root: yaml.Node, name: str) -> None:
    """Refuse a document nested too deeply, with a recursive alias, or whose aliases expand it
    beyond MAX_EXPANDED_NODES (a "billion laughs"). Each node's expanded size is counted once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size(node: yaml.Node, depth: int) -> int:
        if depth > MAX_DEPTH:
            raise SpecError(f"{name}:{node.start_mark.line + 1}: nested deeper than {MAX_DEPTH} levels")
        if id(node) in sizes:
            return sizes[id(node)]
        if id(node) in on_path:
            raise SpecError(f"{name}:{node.start_mark.line + 1}: an alias refers to the node that contains it")
        on_path.add(id(node))
        children = [n for pair in node.value for n in pair] if isinstance(node, yaml.MappingNode) else (
            node.value if isinstance(node, yaml.SequenceNode) else []
        )
        total = 1
        for child in children:
            total += size(child, depth + 1)
            if total > MAX_EXPANDED_NODES:
                raise SpecError(
                    f"{name}:{node.start_mark.line + 1}: the document expands to more than {MAX_EXPANDED_NODES} values "
                    "(aliases repeating aliases?)"
                )
        on_path.discard(id(node))
        sizes[id(node)] = total
        return total

    size(root, 0)


def _parse_yaml(text: str, name: str) -> tuple[yaml.Node | None, Any]:
    """Compose the document once, check its bounds, then build it from the same nodes."""
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        raise SpecError(f"{name}:{line}: contains a NUL byte (is it a text file?)")
    loader = yaml.SafeLoader(text)
    try:
        try:
            root = loader.get_single_node()
        except RecursionError:
            raise SpecError(f"{name}: nested deeper than {MAX_DEPTH} levels") from None
        if root is None:
            return None, None
        _check_bounds(root, name)
        return root, loader.construct_document(root)
    finally:
        loader.dispose()


def _line_for(lines: dict[tuple, int], loc: tuple) -> int:
    loc = tuple(loc)
    while loc and loc not in lines:
        loc = loc[:-1]
    return lines.get(loc, 1)


def _dotted(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _clean_loc(loc: tuple) -> tuple:
    # pydantic inserts validator names such as 'function-before[...]' and 'int' into locations
    return tuple(part for part in loc if not (isinstance(part, str) and ("[" in part or part in ("int", "str"))))


def load_spec(path: str | Path | None = None) -> LoadedSpec:
    """Find, parse and validate the spec. Raises SpecError with file:line: field: reason."""
    spec_path = Path(path) if path else Path.cwd() / SPEC_FILENAME
    name = spec_path.name if path is None else str(path)
    try:
        with spec_path.open("rb") as file:
            raw = file.read(MAX_SPEC_BYTES + 1)
    except FileNotFoundError:
        raise SpecError(f"{name}: no such file (create one with `phoenix init DIR`, or pass -f PATH)") from None
    except OSError as exc:
        raise SpecError(f"{name}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(f"{name}: larger than {MAX_SPEC_BYTES // 1024} KiB; a spec that size is not a spec")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SpecError(f"{name}:{line}: not UTF-8 text (byte {exc.start}); save the file as UTF-8") from None
    return parse_spec(text, spec_path, name)


def parse_spec(text: str, spec_path: Path, name: str) -> LoadedSpec:
    """Validate spec text (a file's, or one kept with a release) as if it were at spec_path."""
    try:
        root, data = _parse_yaml(text, name)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else 1
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(f"{name}:{line}: invalid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise SpecError(f"{name}:1: expected a mapping with images, roles and environments")
    lines: dict[tuple, int] = {}
    _index_lines(root, (), lines, name)
    try:
        spec = Spec.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = _clean_loc(error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        raise SpecError(f"{name}:{_line_for(lines, loc)}: {_dotted(loc)}: {message}") from None
    loaded = LoadedSpec(spec, spec_path.resolve(), lines, text)
    _check_references(loaded, name)
    return loaded


def _check_references(loaded: LoadedSpec, name: str) -> None:
    spec = loaded.spec

    def fail(loc: tuple, message: str) -> None:
        raise SpecError(f"{name}:{_line_for(loaded._lines, loc)}: {_dotted(loc)}: {message}")

    for role_name, role in spec.roles.items():
        if role.image not in spec.images:
            fail(("roles", role_name, "image"), f"unknown image {role.image!r} (images: {', '.join(sorted(spec.images))})")
    for role_name, role in spec.roles.items():
        for index, other in enumerate(role.depends_on):
            if other not in spec.roles:
                fail(("roles", role_name, "depends_on", index), f"unknown role {other!r} (roles: {', '.join(sorted(spec.roles))})")
    try:
        role_waves(spec, list(spec.roles))
    except ValueError as exc:
        fail(("roles",), str(exc))
    for env_name, env in spec.environments.items():
        for role_name in env.roles:
            if role_name not in spec.roles:
                fail(
                    ("environments", env_name, "roles", role_name),
                    f"unknown role {role_name!r} (roles: {', '.join(sorted(spec.roles))})",
                )
    for image_name, image in spec.images.items():
        for index, file in enumerate(image.files):
            try:
                inside_project(loaded.project_dir, file)
            except ValueError as exc:
                fail(("images", image_name, "files", index), str(exc))
            if not (loaded.project_dir / file).exists():
                fail(("images", image_name, "files", index), f"{file!r} does not exist next to {name}")
        try:
            check_image_files(loaded.project_dir, image.files)
        except ImageFileError as exc:
            fail(("images", image_name, "files", exc.index), str(exc))
        for ref in ("base", "prebuilt"):
            manifest = getattr(image, ref) and getattr(image, ref).packer_manifest
            if manifest and not (loaded.project_dir / manifest).exists():
                fail(("images", image_name, ref, "packer_manifest"), f"{manifest!r} does not exist next to {name}")
    _check_boot_paths(loaded, fail)
    for role_name, role in spec.roles.items():
        for env_name, env in spec.environments.items():
            env_role = env.roles.get(role_name)
            if env_role is None:
                continue
            if role.discovery.type == "floating_ip" and env_role.count > 1:
                fail(
                    ("environments", env_name, "roles", role_name),
                    f"a floating IP points at one server; role {role_name} has discovery type floating_ip but {env_role.count} servers",
                )


def _check_boot_paths(loaded: LoadedSpec, fail) -> None:
    """Boot file sources and scripts are project files; secret files are inside the project
    or named by their absolute path (see paths.py)."""
    spec = loaded.spec
    layers: list[tuple[tuple, ConfigLayer]] = [(("defaults",), spec.defaults)]
    layers += [(("roles", role_name), role) for role_name, role in spec.roles.items()]
    for env_name, env in spec.environments.items():
        layers.append((("environments", env_name), env))
        layers += [(("environments", env_name, "roles", role_name), env_role) for role_name, env_role in env.roles.items()]
    for prefix, layer in layers:
        for index, file in enumerate(layer.files):
            if file.source is not None:
                try:
                    inside_project(loaded.project_dir, file.source)
                except ValueError as exc:
                    fail(prefix + ("files", index, "source"), str(exc))
        for index, script in enumerate(layer.scripts):
            try:
                inside_project(loaded.project_dir, script)
            except ValueError as exc:
                fail(prefix + ("scripts", index), str(exc))
    for env_name, env in spec.environments.items():
        for secret_name, source in env.secrets.items():
            if source.file is not None:
                try:
                    secret_file(loaded.project_dir, source.file)
                except ValueError as exc:
                    fail(("environments", env_name, "secrets", secret_name, "file"), str(exc))


def role_waves(spec: Spec, roles: list[str]) -> list[list[str]]:
    """Roles in waves: each after the roles it depends on (those among `roles`)."""
    remaining, done, waves = [r for r in spec.roles if r in roles], set(), []
    while remaining:
        wave = [r for r in remaining if all(d in done or d not in roles for d in spec.roles[r].depends_on)]
        if not wave:
            raise ValueError(f"depends_on forms a cycle among {', '.join(remaining)}")
        waves.append(wave)
        done.update(wave)
        remaining = [r for r in remaining if r not in done]
    return waves


class _SpecJsonSchema(GenerateJsonSchema):
    """Mappings keyed by a constrained name (`images`, `secrets`) accept no other key, as the
    models do: pydantic emits only patternProperties for them."""

    def dict_schema(self, schema: cs.DictSchema) -> JsonSchemaValue:
        json_schema = super().dict_schema(schema)
        if "patternProperties" in json_schema and "additionalProperties" not in json_schema:
            json_schema["additionalProperties"] = False
        return json_schema


def json_schema() -> dict:
    """The JSON Schema of what a `phoenix.yaml` may say (every shorthand the models accept)."""
    schema = Spec.model_json_schema(mode="validation", schema_generator=_SpecJsonSchema)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "phoenix.yaml"
    return schema
