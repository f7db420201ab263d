"""The example website that ships inside the package (`phoenix init`, `phoenix demo`)."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path


EXAMPLES = ("website", "website-aws", "website-openstack")  # the local site, and the same site on AWS and OpenStack


def example_dir(name: str = "website") -> Path:
    return Path(str(resources.files("phoenixctl") / "examples" / name))


def init_example(directory: Path, name: str = "website") -> list[Path]:
    """Copy an example to `directory` (links followed), fill its `wheels/` with its
    dependencies (repacked from Phoenix's own) and give each environment its own TLS pair
    (what `phoenix secrets tls ENV` does), so it runs as it is. Returns the files made."""
    # here, not at the top: `phoenix init --help` lists EXAMPLES
    from .boot.secrets import create_tls_pair
    from .spec import load_spec
    from .wheels import ship_wheels

    shutil.copytree(example_dir(name), directory, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".phoenix", "secrets"))
    loaded = load_spec(directory / "phoenix.yaml")
    made: list[Path] = []
    if (directory / "requirements.txt").is_file() and (directory / "wheels").is_dir():
        made += ship_wheels(directory / "requirements.txt", directory / "wheels")  # bakes with no network
    for env in loaded.spec.environments:
        if not (directory / "secrets" / env / "tls.crt").exists():
            made += create_tls_pair(directory / "secrets" / env, f"{env}.{loaded.spec.project}.test")
    return made
