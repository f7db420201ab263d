"""What a server receives at boot, and the fingerprint that says whether it is current.

The fingerprint covers the image, the role, the environment and everything the server is
given at boot (command, port, health path, environment variables, the addresses of the
environment's load balancers, persistent directories): change any of them and the server
is outdated, so `deploy` replaces it."""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from .spec import Spec


def env_key(name: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", name.upper())


@dataclass(frozen=True)
class BootConfig:
    env: str
    role: str
    image_id: str
    command: str
    port: int
    health_path: str
    variables: dict[str, str]

    @property
    def fingerprint(self) -> str:
        payload = json.dumps(
            {
                "image": self.image_id,
                "env": self.env,
                "role": self.role,
                "command": self.command,
                "port": self.port,
                "health": self.health_path,
                "variables": self.variables,
            },
            sort_keys=True,
        )
        return "fp-" + hashlib.sha256(payload.encode()).hexdigest()[:16]

    def for_server(self, server_id: str) -> dict[str, str]:
        return {**self.variables, "PHOENIX_SERVER_ID": server_id}


def persistent_dir(workdir: Path, env: str, name: str) -> Path:
    """The persistent layer: directories outside every server, kept across replacements."""
    return workdir / "persistent" / env / name


def boot_config(spec: Spec, workdir: Path, env: str, role: str, image_id: str, lb_addresses: dict[str, str]) -> BootConfig:
    role_spec = spec.roles[role]
    image = spec.images[role_spec.image]
    variables = {
        "PHOENIX_PROJECT": spec.project,
        "PHOENIX_ENV": env,
        "PHOENIX_ROLE": role,
        "PHOENIX_PORT": str(role_spec.port),
        **{f"PHOENIX_LB_{env_key(name)}": address for name, address in sorted(lb_addresses.items())},
    }
    for name in role_spec.persistent:
        directory = persistent_dir(workdir, env, name)
        directory.mkdir(parents=True, exist_ok=True)
        variables[f"PHOENIX_PERSISTENT_{env_key(name)}"] = str(directory)
    variables.update(role_spec.env)
    return BootConfig(
        env=env,
        role=role,
        image_id=image_id,
        command=role_spec.command or image.start,
        port=role_spec.port,
        health_path=role_spec.health.path,
        variables=variables,
    )
