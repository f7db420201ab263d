"""cloud-init user-data: render it, check it, and read it back.

A deterministic MIME multipart document: a `text/cloud-config` part (`write_files` with
owner, permissions and encoding; `runcmd`; any extra modules the spec adds) and one
`text/x-shellscript` part per script. A cloud-config with modules beyond `write_files` and
`runcmd` (the spec's own, log shipping) is validated against cloud-init's published JSON
schema (shipped in `schemas/`), and the document must fit the 16 KB that EC2 accepts
(gzipped when needed, as cloud-init allows)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import json
import shlex
from dataclasses import dataclass
from email import message_from_bytes
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from functools import lru_cache
from importlib import resources
from typing import TYPE_CHECKING

import yaml

from ..errors import SpecError
from ..paths import inside_project
from ..spec import LoadedSpec, ship_to_address
from .syslog import cloud_forwarding
from .merged import MergedConfig, file_content, place, variable_value

if TYPE_CHECKING:
    import jsonschema

SERVER_ROOT = "/srv/phoenix"  # where a server's own copy of the image lives on a cloud server
ENV_FILE = "phoenix.env"  # the boot variables, shell-quoted KEY=value lines, mode 0600
USERDATA_LIMIT = 16384  # bytes: EC2's limit for user-data
RESERVED_KEYS = ("write_files", "runcmd")
# Built by Phoenix from fields the spec's models checked (paths, owners, octal modes, string
# commands): valid by construction, so a document of these alone skips the schema check, and
# the check's library is not even loaded (tests/test_config.py checks them against the schema).
VALID_BY_CONSTRUCTION = frozenset(RESERVED_KEYS)


@dataclass(frozen=True)
class RenderedUserData:
    cloud_config: dict
    document: bytes  # what the provider receives (gzipped when it had to be)
    raw_size: int
    gzipped: bool

    @property
    def text(self) -> str:
        return (gzip.decompress(self.document) if self.gzipped else self.document).decode()


class _BlockDumper(yaml.SafeDumper):
    """Multi-line strings as `|` blocks, so a rendered file reads like the file it writes."""


def _represent_str(dumper: yaml.SafeDumper, value: str):
    style = "|" if "\n" in value and not any(c in value for c in "\r\t") and value == value.rstrip(" ") else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _represent_str)


@lru_cache(maxsize=1)
def cloud_config_schema() -> dict:
    return json.loads((resources.files("phoenixctl") / "schemas" / "cloud-config-v1.json").read_text())


def _server_path(path: str) -> str:
    return f"{SERVER_ROOT}/{path}"


def env_file_content(merged: MergedConfig, secrets, mode: str, key) -> bytes:
    lines = [f"{name}={shlex.quote(variable_value(item, secrets, mode, key))}" for name, item in sorted(merged.variables.items())]
    return ("\n".join(lines) + "\n").encode()


def _file_entry(path: str, content: bytes, permissions: str, owner: str, force_b64: bool) -> dict:
    entry = {"path": _server_path(path), "owner": owner, "permissions": permissions}
    try:
        if force_b64:
            raise UnicodeDecodeError("utf-8", b"", 0, 1, "secrets travel base64-encoded")
        entry["content"] = content.decode("utf-8")
    except UnicodeDecodeError:
        entry["content"] = base64.b64encode(content).decode()
        entry["encoding"] = "b64"
    return entry


def render(loaded: LoadedSpec, merged: MergedConfig, secrets, mode: str, key, check: bool = True) -> RenderedUserData:
    """`mode`: deliver (`secrets` holds the values), redact (for people: no `secrets`),
    fingerprint (`secrets` holds their keyed hashes)."""
    origins: list[tuple] = []  # spec location of each write_files entry, for schema errors
    write_files = [
        _file_entry(ENV_FILE, env_file_content(merged, secrets, mode, key), "0600", "root:root", force_b64=False)
    ]
    origins.append(("environments", merged.env, "roles", merged.role))
    for path, item in sorted(merged.files.items()):
        spec = item.value
        content = file_content(loaded, item, secrets, mode, key)
        write_files.append(_file_entry(path, content, spec.permissions, spec.owner, force_b64=bool(spec.secret) and mode == "deliver"))
        origins.append(item.loc)
    document: dict = {}
    for name, item in sorted(merged.cloud_config.items()):
        if name in RESERVED_KEYS:
            raise SpecError(f"{place(loaded, item.loc)}: use `files` and `runcmd` of the layer instead of cloud_config.{name}")
        document[name] = item.value
    shipping = log_shipping(loaded, merged.env, merged.role)
    for name, value in shipping.items():  # merged with what the spec's own cloud_config says
        document[name] = _merge_module(value, document.get(name))
    document["write_files"] = write_files
    if merged.runcmd:
        document["runcmd"] = [item.value for item in merged.runcmd]
    if check and not VALID_BY_CONSTRUCTION.issuperset(document):
        _validate(loaded, merged, document, origins)
    text = "#cloud-config\n" + yaml.dump(
        document, Dumper=_BlockDumper, sort_keys=True, default_flow_style=False, width=4096, allow_unicode=True
    )
    parts = [("cloud-config", "cloud-config.yaml", text.encode())]
    for item in merged.scripts:
        try:
            script = inside_project(loaded.project_dir, item.value).read_bytes()
        except ValueError as exc:
            raise SpecError(f"{place(loaded, item.loc)}: {exc}") from None
        except OSError:
            raise SpecError(f"{place(loaded, item.loc)}: {item.value!r} does not exist next to {loaded.path.name}") from None
        parts.append(("x-shellscript", item.value.rsplit("/", 1)[-1], script))
    raw = mime_document(parts)
    rendered = RenderedUserData(document, raw, len(raw), gzipped=False)
    if len(raw) > USERDATA_LIMIT:
        packed = gzip.compress(raw, mtime=0)
        if len(packed) > USERDATA_LIMIT and check:
            biggest = max(merged.files.values(), key=lambda i: len(file_content(loaded, i, secrets, mode, key)), default=None)
            hint = f"; largest file: {place(loaded, biggest.loc)}" if biggest else ""
            raise SpecError(
                f"{loaded.path.name}: environments.{merged.env}.roles.{merged.role}: user-data is {len(raw)} bytes "
                f"({len(packed)} gzipped), over the {USERDATA_LIMIT}-byte limit of EC2{hint}"
            )
        rendered = RenderedUserData(document, packed, len(raw), gzipped=True)
    return rendered


def log_shipping(loaded: LoadedSpec, env: str, role: str) -> dict:
    """With `logs.ship_to`: the cloud-init `rsyslog` module (the system's log to the aggregator
    through `remotes`, the server's own output through a configuration of RFC 5424 records with
    its names) and the rsyslog package. The same text for every server of the role."""
    logs = loaded.spec.logs(env)
    ship_to = logs.ship_to if logs.enabled else None
    if not ship_to:
        return {}
    host, port = ship_to_address(ship_to)
    remote = f"[{host}]" if ":" in host else host
    return {
        "packages": ["rsyslog"],
        "rsyslog": {
            "remotes": {"phoenix": f"@@{remote}:{port}"},
            "configs": [{"filename": "30-phoenix-server.conf", "content": cloud_forwarding(env, role, host, port)}],
        },
    }


def _merge_module(ours, theirs):
    """Ours beside the spec's own: lists add up, mappings merge (the spec's keys win)."""
    if theirs is None:
        return ours
    if isinstance(ours, list) and isinstance(theirs, list):
        return theirs + [item for item in ours if item not in theirs]
    if isinstance(ours, dict) and isinstance(theirs, dict):
        return {**ours, **{key: _merge_module(ours.get(key), value) if key in ours else value for key, value in theirs.items()}}
    return theirs


def mime_document(parts: list[tuple[str, str, bytes]]) -> bytes:
    """A MIME multipart document that is byte-identical for identical parts."""
    boundary = "==phoenix-" + hashlib.sha256(b"".join(p[2] for p in parts)).hexdigest()[:24] + "=="
    message = MIMEMultipart(boundary=boundary)
    for subtype, filename, payload in parts:
        text = payload.decode("utf-8")
        charset = "us-ascii" if text.isascii() else "utf-8"
        part = MIMEText(text, subtype, charset)
        part.add_header("Content-Disposition", "attachment", filename=filename)
        message.attach(part)
    return message.as_bytes()


def _validate(loaded: LoadedSpec, merged: MergedConfig, document: dict, origins: list[tuple]) -> None:
    import jsonschema  # here, not at the top: it loads only when user-data is rendered and checked

    validator = jsonschema.Draft4Validator(cloud_config_schema())
    error = next(iter(sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))), None)
    if error is None:
        return
    path = list(error.absolute_path)
    if path and path[0] == "write_files" and len(path) > 1:
        loc = origins[path[1]]
    elif path and path[0] == "runcmd" and len(path) > 1:
        loc = merged.runcmd[path[1]].loc
    elif path and path[0] in merged.cloud_config:
        loc = merged.cloud_config[path[0]].loc + tuple(path[1:])
    else:
        loc = ("environments", merged.env, "roles", merged.role)
    # The message names the offending type, not the value: a value may be a secret.
    field = ".".join(str(p) for p in path) or "(document)"
    reason = error.message if error.validator not in ("type", "enum", "pattern", "format") else _describe(error)
    raise SpecError(f"{place(loaded, loc)}: cloud-init schema: {field}: {reason}")


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "type":
        expected = error.validator_value if isinstance(error.validator_value, str) else " or ".join(error.validator_value)
        return f"expected {expected}, got {type(error.instance).__name__}"
    if error.validator == "enum":
        return f"must be one of {', '.join(map(str, error.validator_value))}"
    return f"does not match the expected {error.validator}"


# --- reading it back (the local provider applies what a cloud would) -----------------------


@dataclass(frozen=True)
class ParsedUserData:
    cloud_config: dict
    scripts: list[tuple[str, bytes]]


def parse(document: bytes) -> ParsedUserData:
    if document[:2] == b"\x1f\x8b":
        document = gzip.decompress(document)
    message = message_from_bytes(document)
    cloud_config: dict = {}
    scripts = []
    for part in message.walk():
        if part.is_multipart():
            continue
        payload = part.get_payload(decode=True)
        if part.get_content_type() == "text/cloud-config":
            cloud_config = yaml.safe_load(payload) or {}
        elif part.get_content_type() == "text/x-shellscript":
            scripts.append((part.get_filename() or "script", payload))
    return ParsedUserData(cloud_config, scripts)


def decode_content(entry: dict) -> bytes:
    content = entry.get("content", "")
    if entry.get("encoding") in ("b64", "base64"):
        return base64.b64decode(content)
    return content.encode()


def read_env_file(content: bytes) -> dict[str, str]:
    variables = {}
    for token in shlex.split(content.decode()):
        name, _, value = token.partition("=")
        variables[name] = value
    return variables
