"""What a server gets at boot, where each value came from, and its fingerprint.

Layers, later wins: defaults -> role -> environment -> environment x role. The merged
result is rendered as cloud-init user-data (see `userdata.py`), the format real clouds
consume; the local provider applies the same document. The fingerprint covers the image,
the role, the environment and the rendered user-data, with each secret replaced by its
keyed hash: change any value, or rotate a secret, and exactly the affected servers are
outdated."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecError
from .merged import Item, MergedConfig, place
from .secrets import Resolved, same_source
from .userdata import render
from ..spec import ConfigLayer, LoadedSpec

PLACEHOLDER_LB = "127.255.255.255:65535"  # the longest address, for checks made before balancers exist


def env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


def layers(loaded: LoadedSpec, env: str, role: str) -> list[tuple[tuple, ConfigLayer]]:
    spec = loaded.spec
    environment = spec.environments[env]
    return [
        (("defaults",), spec.defaults),
        (("roles", role), spec.roles[role]),
        (("environments", env), environment),
        (("environments", env, "roles", role), environment.roles[role]),
    ]


def system_variables(loaded: LoadedSpec, workdir: Path, env: str, role: str, lb_addresses: dict[str, str]) -> dict[str, str]:
    """What Phoenix itself tells every server: who it is and where the rest is."""
    spec = loaded.spec
    role_spec = spec.roles[role]
    variables = {
        "PHOENIX_PROJECT": spec.project,
        "PHOENIX_ENV": env,
        "PHOENIX_ROLE": role,
        "PHOENIX_PORT": str(role_spec.port),
    }
    if role_spec.tls_port:
        variables["PHOENIX_TLS_PORT"] = str(role_spec.tls_port)
    for name in spec.environments[env].roles:
        variables[f"PHOENIX_LB_{env_key(name)}"] = lb_addresses.get(name, PLACEHOLDER_LB)
    for name in role_spec.persistent:
        variables[f"PHOENIX_PERSISTENT_{env_key(name)}"] = str(persistent_dir(workdir, env, name))
    return variables


def persistent_dir(workdir: Path, env: str, name: str) -> Path:
    """The persistent layer: directories outside every server, kept across replacements."""
    return workdir / "persistent" / env / name


def merge(loaded: LoadedSpec, workdir: Path, env: str, role: str, lb_addresses: dict[str, str]) -> MergedConfig:
    merged = MergedConfig(env=env, role=role)
    for name, value in system_variables(loaded, workdir, env, role, lb_addresses).items():
        merged.variables[name] = Item(value, ("phoenix",))
    for prefix, layer in layers(loaded, env, role):
        for name, value in layer.env.items():
            merged.variables[name] = Item(value, prefix + ("env", name))
        for index, file in enumerate(layer.files):
            merged.files[file.path] = Item(file, prefix + ("files", index))
        merged.runcmd += [Item(command, prefix + ("runcmd", index)) for index, command in enumerate(layer.runcmd)]
        merged.scripts += [Item(script, prefix + ("scripts", index)) for index, script in enumerate(layer.scripts)]
        for key, value in layer.cloud_config.items():
            merged.cloud_config[key] = Item(value, prefix + ("cloud_config", key))
    return merged


def check_isolation(loaded: LoadedSpec, env: str, merged: list[MergedConfig]) -> None:
    """Before anything is resolved or launched: a secret belongs to exactly one environment."""
    spec = loaded.spec
    declared = spec.environments[env].secrets
    for config in merged:
        for name, loc in config.secret_refs():
            if name in declared:
                continue
            owners = [other for other, environment in spec.environments.items() if name in environment.secrets]
            if owners:
                raise SpecError(
                    f"{place(loaded, loc)}: secret {name!r} belongs to environment {owners[0]}; "
                    f"it would reach the {config.role} servers of environment {env} (declare {env}'s own in environments.{env}.secrets)"
                )
            known = ", ".join(sorted(declared)) or "none"
            raise SpecError(f"{place(loaded, loc)}: unknown secret {name!r} (environment {env} declares: {known})")
    for name, source in declared.items():
        for other, environment in spec.environments.items():
            if other == env:
                continue
            for other_name, other_source in environment.secrets.items():
                if same_source(source, other_source, loaded.project_dir):
                    raise SpecError(
                        f"{place(loaded, ('environments', env, 'secrets', name))}: secret {name!r} of environment {env} "
                        f"reads the same {source.describe()} as secret {other_name!r} of environment {other}: "
                        "a secret belongs to exactly one environment"
                    )


def check_references(loaded: LoadedSpec, workdir: Path) -> None:
    """`check_isolation` for every environment and its roles (for `validate`): each secret a
    layer uses is declared by every environment the layer reaches, and by that one only."""
    for env, environment in loaded.spec.environments.items():
        check_isolation(loaded, env, [merge(loaded, workdir, env, role, {}) for role in environment.roles])


def check_values_isolated(env: str, own: dict[str, str], recorded: dict[tuple[str, str], str]) -> None:
    """A value (by keyed hash) already used by another environment must not be reused here."""
    by_hash = {digest: (other_env, name) for (other_env, name), digest in recorded.items() if other_env != env}
    for name, digest in own.items():
        if digest in by_hash:
            other_env, other_name = by_hash[digest]
            raise SpecError(
                f"secret {name!r} of environment {env} has the same value as secret {other_name!r} of environment "
                f"{other_env}: a secret belongs to exactly one environment"
            )


@dataclass(frozen=True)
class BootConfig:
    """Everything one role's servers in one environment get at boot."""

    env: str
    role: str
    image_id: str
    command: str
    port: int
    tls_port: int | None
    health_path: str
    userdata: bytes  # delivered as is: holds secret values, never stored or shown
    digest: str  # of the user-data with secrets as keyed hashes
    deliverable: bool = True  # False: made for reading, stand-ins for secret commands not run
    unknown: tuple[str, ...] = ()  # secrets it carries whose keyed hash is unknown (commands not run)

    @property
    def fingerprint(self) -> str | None:
        """None when a secret it carries has an unknown keyed hash (read-only: a command not
        run and none recorded): what its servers should carry cannot be told then."""
        if self.unknown:
            return None
        payload = json.dumps(
            {
                "image": self.image_id,
                "env": self.env,
                "role": self.role,
                "command": self.command,
                "port": self.port,
                "tls_port": self.tls_port,
                "health": self.health_path,
                "userdata": self.digest,
            },
            sort_keys=True,
        )
        return "fp-" + hashlib.sha256(payload.encode()).hexdigest()[:16]

    def __repr__(self) -> str:  # never print the user-data: it holds secrets
        return f"BootConfig({self.env}/{self.role}, {self.fingerprint})"


def boot_config(
    loaded: LoadedSpec,
    workdir: Path,
    secrets: Resolved,
    env: str,
    role: str,
    image_id: str,
    lb_addresses: dict[str, str],
) -> BootConfig:
    """`secrets`: for launching, every value (`SecretResolver.for_launch`); for reading,
    stand-ins for commands not run (`for_reading`): checked the same, never delivered."""
    spec = loaded.spec
    role_spec = spec.roles[role]
    merged = merge(loaded, workdir, env, role, lb_addresses)
    check_isolation(loaded, env, [merged])  # every secret it uses is this environment's own
    delivered = render(loaded, merged, secrets.values, "deliver", None)
    fingerprinted = render(loaded, merged, secrets.digests, "fingerprint", None, check=False)
    return BootConfig(
        env=env,
        role=role,
        image_id=image_id,
        command=role_spec.command or spec.images[role_spec.image].start,
        port=role_spec.port,
        tls_port=role_spec.tls_port,
        health_path=role_spec.health.path,
        userdata=delivered.document,
        digest=hashlib.sha256(fingerprinted.document).hexdigest(),
        deliverable=secrets.complete,
        unknown=tuple(secrets.unknown(name for name, _ in merged.secret_refs())),
    )
