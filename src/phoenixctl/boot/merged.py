"""One server's merged boot configuration, and its values as delivered, redacted or fingerprinted.

`config.py` builds it from the spec's layers and `userdata.py` renders it: what rendering
needs lives here, so `userdata.py` never imports `config.py`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import SpecError
from ..paths import inside_project
from ..spec import FileSpec, LoadedSpec, SecretRef


@dataclass(frozen=True)
class Item:
    """One merged value and the place in the spec it came from."""

    value: Any
    loc: tuple

    @property
    def origin(self) -> str:
        return ".".join(str(part) for part in self.loc)


@dataclass
class MergedConfig:
    env: str
    role: str
    variables: dict[str, Item] = field(default_factory=dict)
    files: dict[str, Item] = field(default_factory=dict)  # by path in the server
    runcmd: list[Item] = field(default_factory=list)
    scripts: list[Item] = field(default_factory=list)
    cloud_config: dict[str, Item] = field(default_factory=dict)

    def secret_refs(self) -> list[tuple[str, tuple]]:
        refs = [(item.value.secret, item.loc) for item in self.variables.values() if isinstance(item.value, SecretRef)]
        refs += [(item.value.secret, item.loc) for item in self.files.values() if item.value.secret]
        return refs


def place(loaded: LoadedSpec, loc: tuple) -> str:
    """`phoenix.yaml:LINE: dotted.field`, for errors about a merged value."""
    return f"{loaded.where(*loc)}: {'.'.join(str(part) for part in loc)}"


def file_content(loaded: LoadedSpec, item: Item, secrets: dict | None, mode: str, key: bytes | None) -> bytes:
    """A file's bytes for delivery; for `redact` and `fingerprint`, a stand-in for secrets.
    `secrets`: the values for `deliver`, the keyed hashes for `fingerprint`, None for `redact`."""
    spec: FileSpec = item.value
    if spec.secret:
        return secret_repr(spec.secret, secrets, mode, key).encode() if mode != "deliver" else secrets[spec.secret]
    if spec.content is not None:
        return spec.content.encode()
    try:
        path = inside_project(loaded.project_dir, spec.source)
    except ValueError as exc:
        raise SpecError(f"{place(loaded, item.loc + ('source',))}: {exc}") from None
    try:
        return path.read_bytes()
    except OSError:
        raise SpecError(f"{place(loaded, item.loc + ('source',))}: {spec.source!r} does not exist next to {loaded.path.name}") from None


def secret_repr(name: str, secrets: dict | None, mode: str, key: bytes | None) -> str:
    if mode == "redact":
        return f"<redacted secret {name}>"
    if mode == "fingerprint":  # `secrets` holds keyed hashes: the value is not needed
        return f"<secret {name} {secrets[name]}>"
    return secrets[name].decode()


def variable_value(item: Item, secrets: dict | None, mode: str, key: bytes | None) -> str:
    return secret_repr(item.value.secret, secrets, mode, key) if isinstance(item.value, SecretRef) else item.value
