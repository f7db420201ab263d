r"""Per-environment secrets: resolved by reference at plan time, never stored, never shown.

A secret is declared in exactly one environment (`environments.E.secrets`), by a file, an
environment variable or a command. Its value is what the source holds, less one trailing
newline (`\n` or `\r\n`), whatever the source: `echo`, editors and secret stores' command
lines end a value with one, and in a variable it would break an HTTP header or a password.
Values live in memory only while servers are launched.
What Phoenix keeps is a keyed hash (HMAC with a per-project key in `.phoenix/secret.key`),
so a rotated secret changes the fingerprint of the servers that use it and a value copied
into another environment is caught, without the value ever being written down.

A command runs only when servers may be launched (and with `validate --resolve-secrets`),
in its own session: however it ends, its process group is killed and the shell reaped.
Read-only commands never run one (`Resolved.for_reading`): its keyed hash recorded at the
last real deploy stands in for its value, or, with none recorded, its hash is unknown."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import os
import secrets as stdlib_secrets
import selectors
import shlex
import signal
import stat
import subprocess
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Callable

from ..errors import SpecError
from ..paths import secret_file
from ..spec import LoadedSpec, SecretSource

COMMAND_TIMEOUT = 30.0
COMMAND_OUTPUT_LIMIT = 1 << 20  # a secret is far smaller; more is a command gone wrong
RECORDED = "not run; its keyed hash recorded at the last deploy stands in"
UNRECORDED = "not run; no keyed hash recorded for this command"


def project_key(workdir: Path) -> bytes:
    """The project's HMAC key, created on first use with mode 0600."""
    path = workdir / "secret.key"
    if not path.exists():
        workdir.mkdir(parents=True, exist_ok=True)
        staging = workdir / f".secret.key.{os.getpid()}.{stdlib_secrets.token_hex(4)}"
        descriptor = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(stdlib_secrets.token_bytes(32))
        try:
            # Published whole, once: two first commands at once (two environments deployed
            # side by side) agree on one key, and neither reads a half-written one.
            os.link(staging, path)
        except FileExistsError:
            pass  # another command made it first: its key is the project's
        finally:
            staging.unlink()
    return path.read_bytes()


def keyed_hash(key: bytes, value: bytes) -> str:
    return hmac.new(key, value, hashlib.sha256).hexdigest()[:32]


@dataclass(frozen=True)
class Resolved:
    """An environment's secrets as rendering needs them: `values` for the delivered
    user-data and `digests` (keyed hashes) for fingerprints. For reading only (`plan`, dry
    runs, `userdata`), a command secret is not run: its value is a stand-in (checked for
    size and schema, never delivered) and its digest the one recorded at the last deploy,
    or None when there is none."""

    values: dict[str, bytes]
    digests: dict[str, str | None]
    not_run: dict[str, str] = field(default_factory=dict)  # command secret -> RECORDED | UNRECORDED

    @property
    def complete(self) -> bool:
        """Every value is the real one: only then may the user-data be delivered."""
        return not self.not_run

    def unknown(self, names) -> list[str]:
        """Those of `names` whose keyed hash is unknown (a command not run, nothing recorded)."""
        return sorted({name for name in names if self.digests.get(name) is None})


class SecretResolver:
    """Resolves an environment's secrets; errors name the place, never the value."""

    def __init__(self, loaded: LoadedSpec, workdir: Path, key_source: Callable[[], bytes] | None = None):
        """`key_source`: where the key comes from when not `.phoenix/secret.key` (a shared
        state store's, which every runner of the project reads)."""
        self.loaded = loaded
        self.workdir = workdir
        self.key_source = key_source
        self._cache: dict[str, dict[str, bytes]] = {}

    @property
    def key(self) -> bytes:
        return self.key_source() if self.key_source else project_key(self.workdir)

    def resolve(self, env: str) -> dict[str, bytes]:
        if env not in self._cache:
            declared = self.loaded.spec.environments[env].secrets
            self._cache[env] = {name: self._resolve_one(env, name, source) for name, source in declared.items()}
        return self._cache[env]

    def hashes(self, env: str) -> dict[str, str]:
        key = self.key
        return {name: keyed_hash(key, value) for name, value in self.resolve(env).items()}

    def sources(self, env: str) -> dict[str, str]:
        """What each secret of `env` is read from (a reference, never a value): recorded
        beside its keyed hash, which stands in for a command's value only while the command
        is the same."""
        return {name: source.describe() for name, source in self.loaded.spec.environments[env].secrets.items()}

    def for_launch(self, env: str) -> Resolved:
        """Every secret resolved (commands run): what servers are launched with."""
        return Resolved(values=self.resolve(env), digests=dict(self.hashes(env)))

    def for_reading(self, env: str, recorded: dict[str, tuple[str, str | None]]) -> Resolved:
        """For read-only commands: files and variables are read (their hashes are exact);
        a command is never run. `recorded`: name -> (keyed hash, source) from the state
        store; a recorded hash stands in for a command's value when it was recorded for the
        same command."""
        if env in self._cache:  # already resolved by this process: exact, and nothing more runs
            return self.for_launch(env)
        key = self.key
        values: dict[str, bytes] = {}
        digests: dict[str, str | None] = {}
        not_run: dict[str, str] = {}
        for name, source in self.loaded.spec.environments[env].secrets.items():
            if source.command is None:
                values[name] = self._resolve_one(env, name, source)
                digests[name] = keyed_hash(key, values[name])
                continue
            digest, recorded_source = recorded.get(name, (None, None))
            if digest is not None and recorded_source != source.describe():
                digest = None  # recorded for another command: not this one's value
            values[name] = f"<secret {name}: command not run>".encode()
            digests[name] = digest
            not_run[name] = RECORDED if digest is not None else UNRECORDED
        return Resolved(values=values, digests=digests, not_run=not_run)

    def _resolve_one(self, env: str, name: str, source: SecretSource) -> bytes:
        place = secret_place(self.loaded, env, name)
        check_source(self.loaded, env, name, source)
        if source.file is not None:
            try:
                value = secret_path(self.loaded, env, name, source.file).read_bytes()
            except OSError as exc:
                raise SpecError(f"{place}: cannot read file {source.file}: {exc.strerror}") from None
        elif source.env is not None:
            value = os.environ[source.env].encode()
        else:
            # Its output is never shown: it may hold part of the secret.
            try:
                value = run_command(source.command, self.loaded.project_dir, COMMAND_TIMEOUT)
            except CommandFailed as exc:
                raise SpecError(f"{place}: {exc}") from None
        value = without_trailing_newline(value)
        if not value.strip():
            raise SpecError(f"{place}: the secret is empty")
        return value


class CommandFailed(Exception):
    """Why a secret command gave no value, in words that never include its output."""


def run_command(command: str, cwd: Path, timeout: float) -> bytes:
    """A secret command's standard output. It runs with /bin/sh in a session of its own
    (stdin /dev/null, stderr discarded); however it ends — its output read, a time-out, an
    error or an interrupt here — its whole process group is killed with SIGKILL before the
    shell is reaped, so nothing it started outlives it. (A process that leaves the group
    itself, by `setsid` or a job-control shell, is out of reach, as with any daemon.)"""
    process = subprocess.Popen(
        ["/bin/sh", "-c", command], cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, start_new_session=True,
    )
    try:
        output = _read_until_exit(process, time.monotonic() + timeout, timeout)
    finally:
        _kill_group(process)
    if process.returncode != 0:
        raise CommandFailed(f"command exited {process.returncode}")
    return output


def _read_until_exit(process: subprocess.Popen, deadline: float, timeout: float) -> bytes:
    """Its output until end of file, then until the shell exits — without reaping it, so
    the process group keeps its id until `_kill_group` has used it."""
    chunks: list[bytes] = []
    size = 0
    descriptor = process.stdout.fileno()
    with selectors.DefaultSelector() as selector:
        selector.register(descriptor, selectors.EVENT_READ)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise CommandFailed(f"command did not finish within {timeout:g}s (stopped: its whole process group killed)")
            if not selector.select(remaining):
                continue
            chunk = os.read(descriptor, 65536)
            if not chunk:
                break
            size += len(chunk)
            if size > COMMAND_OUTPUT_LIMIT:
                raise CommandFailed(f"command printed more than {COMMAND_OUTPUT_LIMIT} bytes (stopped: its whole process group killed)")
            chunks.append(chunk)
    while os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is None:
        if time.monotonic() >= deadline:
            raise CommandFailed(f"command did not finish within {timeout:g}s (stopped: its whole process group killed)")
        time.sleep(0.01)
    return b"".join(chunks)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to the command's process group (its id is the shell's pid, still unreaped),
    then reap the shell."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is empty: everything already ended
    process.wait()
    process.stdout.close()


def secret_place(loaded: LoadedSpec, env: str, name: str) -> str:
    """`phoenix.yaml:LINE: environments.ENV.secrets.NAME`: where a secret is declared."""
    return f"{loaded.where('environments', env, 'secrets', name)}: environments.{env}.secrets.{name}"


def check_source(loaded: LoadedSpec, env: str, name: str, source: SecretSource) -> str | None:
    """What can be checked of a secret's source without reading its value (a command is not
    run). Raises SpecError; returns a warning, or None."""
    place = secret_place(loaded, env, name)
    if source.env is not None:
        if source.env not in os.environ:
            raise SpecError(f"{place}: environment variable {source.env} is not set")
        return None
    if source.file is None:
        return None
    path = secret_path(loaded, env, name, source.file)
    try:
        info = path.stat()
    except FileNotFoundError:
        raise SpecError(f"{place}: file {source.file} does not exist ({_missing_file_hint(env, name, source.file)})") from None
    except OSError as exc:
        raise SpecError(f"{place}: cannot read file {source.file}: {exc.strerror}") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
        raise SpecError(f"{place}: file {source.file} is {kind}; point the reference at the file holding the secret")
    if not os.access(path, os.R_OK):
        raise SpecError(f"{place}: cannot read file {source.file}: permission denied")
    if info.st_mode & 0o044:
        return (
            f"{place}: file {source.file} is readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
            f"chmod 600 {shlex.quote(source.file)}"
        )
    return None


def secret_path(loaded: LoadedSpec, env: str, name: str, file: str) -> Path:
    """The file a secret is read from: inside the project, or named by its absolute path."""
    try:
        return secret_file(loaded.project_dir, file)
    except ValueError as exc:
        raise SpecError(f"{secret_place(loaded, env, name)}: {exc}") from None


def check_sources(loaded: LoadedSpec) -> list[str]:
    """`check_source` for every secret of every environment: raises on the first error,
    returns the warnings."""
    warnings = []
    for env, environment in loaded.spec.environments.items():
        for name, source in environment.secrets.items():
            warning = check_source(loaded, env, name, source)
            if warning:
                warnings.append(warning)
    return warnings


def _missing_file_hint(env: str, name: str, file: str) -> str:
    if "tls" in name or "cert" in name or "tls" in Path(file).name or Path(file).suffix in (".crt", ".pem", ".cert"):
        return f"for a TLS pair: phoenix secrets tls {env} --host NAME"
    return "create it with mode 0600, or point the reference elsewhere"


def without_trailing_newline(value: bytes) -> bytes:
    r"""A secret's value: its source's bytes less one trailing newline (`\n` or `\r\n`)."""
    if value.endswith(b"\r\n"):
        return value[:-2]
    return value[:-1] if value.endswith(b"\n") else value


def same_source(a: SecretSource, b: SecretSource, project_dir: Path) -> bool:
    if a.file is not None and b.file is not None:
        return (project_dir / a.file).resolve() == (project_dir / b.file).resolve()
    return (a.env is not None and a.env == b.env) or (a.command is not None and a.command == b.command)


def create_tls_pair(directory: Path, host: str, days: int = 365, force: bool = False) -> tuple[Path, Path]:
    """A self-signed certificate and key for one environment, written with mode 0600."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    if not force and (cert_path.exists() or key_path.exists()):
        raise SpecError(f"{cert_path} or {key_path} already exists (pass --force to replace them)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)])
    alt_names: list[x509.GeneralName] = [x509.DNSName(host)]
    try:
        alt_names.append(x509.IPAddress(ipaddress.ip_address(host)))
    except ValueError:
        pass
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    _write_private(cert_path, certificate.public_bytes(serialization.Encoding.PEM))
    return cert_path, key_path


def _write_private(path: Path, data: bytes) -> None:
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
