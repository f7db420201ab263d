"""The declarative spec (`phoenix.yaml`), validated into typed models: `values` (durations,
counts, bounds), `models` (with `recovery_models` and `simulated_models`), `load` (reading, with file:line errors), `schema` (for editors).

Everything else in Phoenix reads these models, never raw YAML. Errors name the file, the
line and the field: `phoenix.yaml:14: environments.ci.roles.frontnd: unknown role ...`."""

from .load import LoadedSpec, load_spec, parse_spec, role_waves
from .models import (
    ConfigLayer, DeadlinesSpec, DefaultsSpec, DiscoverySpec, EnvironmentSpec, EnvRoleSpec, FileSpec, HealthSpec, ImageRef,
    ImageSpec, LayerSpec, LogsSpec, PlacementSpec, ProviderSpec, RoleSpec, RolloutSpec, SecretRef, SecretSource, Spec,
    WarmupSpec, WatchSpec,
)
from .simulated_models import SimulatedDurations, SimulatedSpec
from .schema import json_schema
from .values import (
    MAX_DEPTH, MAX_DURATION, MAX_EXPANDED_NODES, MAX_ROLE_COUNT, MAX_SPEC_BYTES, NAME_PATTERN, SPEC_FILENAME,
    parse_duration, parse_quantity, parse_share, resolve_quantity, ship_to_address,
)

__all__ = [
    "ConfigLayer", "DeadlinesSpec", "DefaultsSpec", "DiscoverySpec", "EnvironmentSpec", "EnvRoleSpec", "FileSpec", "HealthSpec",
    "ImageRef", "ImageSpec", "LayerSpec", "LoadedSpec", "LogsSpec", "MAX_DEPTH", "MAX_DURATION", "MAX_EXPANDED_NODES", "MAX_ROLE_COUNT", "MAX_SPEC_BYTES",
    "NAME_PATTERN", "PlacementSpec", "ProviderSpec", "RoleSpec", "RolloutSpec", "SPEC_FILENAME", "SecretRef", "SecretSource",
    "SimulatedDurations", "SimulatedSpec",
    "Spec", "WarmupSpec", "WatchSpec", "json_schema", "load_spec", "parse_duration", "parse_quantity", "parse_share",
    "parse_spec", "resolve_quantity", "role_waves", "ship_to_address",
]
