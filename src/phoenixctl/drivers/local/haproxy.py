"""Load balancers as real HAProxy processes, driven through the runtime API.

One `haproxy` per role per environment, started with an empty backend; members come and
go only through the admin socket (`add server`, `enable health`, `set server ... state`,
`del server`), so a swap never reloads or restarts the balancer."""

from __future__ import annotations

import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import psutil

from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from .identity import balancer_identity, private_dir
from .loopback import LoopbackPool
from ..base import BalancerRequest, Endpoint, LoadBalancerDriver, MemberCounters, MemberState, owned_path

BACKEND = "servers"

CONFIG = """\
# Written by phoenix for {env}/{role}. Members are managed through the runtime API.
global
    stats socket {socket} mode 600 level admin
    maxconn 4096{identity}

defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
    timeout queue 5s
    timeout http-keep-alive 10s
    option redispatch
    retries 3
    # A server that fails a GET (refused connection, empty or 5xx answer) has it retried on
    # another member: one bad server -- a dying one, a broken canary -- fails no client.
    retry-on conn-failure empty-response response-timeout 500 502 503 504

frontend public
    bind {address}:{port}
    default_backend {backend}

backend {backend}
    balance roundrobin
    option httpchk
    http-check send meth GET uri {health_path}
    http-request disable-l7-retry unless METH_GET or METH_HEAD
"""

# TLS passthrough: the servers hold their environment's certificate and terminate TLS
# themselves; the balancer never sees a key. Members are checked over TLS on that port.
TLS_CONFIG = """
frontend public_tls
    mode tcp
    bind {address}:{tls_port}
    default_backend {backend}

backend {backend}
    mode tcp
    balance roundrobin
    option httpchk
    http-check send meth GET uri {health_path}
"""
TLS_BACKEND = "servers_tls"

# `default-server` lines do not apply to servers added at run time: every option goes here.
# A new member starts DOWN, so `downinter` paces its first checks: it is UP within ~50ms of
# passing one; `inter` then keeps steady-state checking light.
MEMBER_OPTIONS = "check inter 1s fastinter 100ms downinter 50ms rise 1 fall 2"

_OK_REPLIES = ("", "New server registered.", "Server deleted.")


def config_quote(value: str) -> str:
    """A value for haproxy.cfg as one double-quoted word. The spec already validated it; this
    refuses anything that could end the word or the line, whatever the caller passed."""
    if not value.isprintable() or any(c in value for c in '"\\#\'$'):
        raise PhoenixError(f"refusing to write {value!r} into a haproxy configuration")
    return f'"{value}"'


class RuntimeAPI:
    """A minimal client for HAProxy's admin socket: one command per connection."""

    def __init__(self, path: str, timeout: float = 5.0):
        self.path = path
        self.timeout = timeout

    _locks: dict[str, threading.Lock] = {}
    _locks_guard = threading.Lock()

    def send(self, command: str) -> str:
        # One command at a time per balancer: twenty threads connecting at once overflow the
        # admin socket's backlog (EAGAIN), and HAProxy runs commands one by one anyway.
        with self._locks_guard:
            lock = self._locks.setdefault(self.path, threading.Lock())
        if not lock.acquire(timeout=30):
            raise PhoenixError(f"haproxy admin socket {self.path}: busy for 30s")
        try:
            deadline = Deadline(self.timeout, f"haproxy admin socket {self.path}")
            while True:
                try:
                    return self._send_once(command)
                except (BlockingIOError, ConnectionRefusedError) as exc:
                    if deadline.expired():
                        raise PhoenixError(f"haproxy admin socket {self.path}: {exc.strerror}") from None
                    time.sleep(0.01)
                except OSError as exc:
                    raise PhoenixError(f"haproxy admin socket {self.path}: {exc.strerror or exc}") from None
        finally:
            lock.release()

    def _send_once(self, command: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(self.timeout)
            self._connect(conn)
            conn.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := conn.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace").strip()

    def _connect(self, conn: socket.socket) -> None:
        """A Unix socket's path may not exceed 107 bytes, and a project's may well (a CI
        runner's workspace): reach a long one through its folder's descriptor instead."""
        if len(os.fsencode(self.path)) < 100:
            conn.connect(self.path)
            return
        folder = os.open(os.path.dirname(self.path), os.O_RDONLY | os.O_DIRECTORY)
        try:
            conn.connect(f"/proc/self/fd/{folder}/{os.path.basename(self.path)}")
        finally:
            os.close(folder)

    def command(self, command: str) -> str:
        """Send a command that must succeed; HAProxy answers errors as free text."""
        reply = self.send(command)
        if reply not in _OK_REPLIES:
            raise PhoenixError(f"haproxy refused `{command}`: {reply.splitlines()[0]}")
        return reply

    def server_stats(self, proxy: str) -> list[dict[str, str]]:
        # `<proxy> 4 -1`: that proxy's servers only
        text = self.send(f"show stat {proxy} 4 -1").lstrip("# ")
        return list(csv.DictReader(io.StringIO(text)))


class HAProxyLoadBalancers(LoadBalancerDriver):
    name = "local"
    # floating_ip: a role's one address that follows its current server; a balancer does that here
    capabilities = frozenset({"standby", "counters", "floating_ip"})

    def capability_report(self) -> list[dict]:
        binary = shutil.which("haproxy")
        version = subprocess.run([binary, "-v"], capture_output=True, text=True).stdout.splitlines()[0] if binary else ""
        return [
            {"capability": "load balancer", "ok": bool(binary), "detail": version or "haproxy is not installed (make setup)"},
            {"capability": "floating IP", "ok": True, "detail": "stood in for by the role's balancer: one address, moved to each new server"},
            {"capability": "DNS", "ok": False, "detail": "not on this provider"},
        ]

    def _dir(self, env: str, role: str) -> Path:
        return self.workdir / "lb" / env / role

    def create(self, request: BalancerRequest) -> Endpoint:
        env, role, port = request.env, request.role, request.port
        health_path, tls_port = request.health_path, request.tls_port
        if shutil.which("haproxy") is None:
            raise PhoenixError("haproxy is not installed (run `make setup`, or apt-get install haproxy)")
        address = request.address or LoopbackPool(self.workdir).reserve(port)  # pinned, back where it was, or a new one
        private_dir(self.workdir / "lb")
        directory = self._dir(env, role)
        directory.mkdir(parents=True, exist_ok=True)
        socket_path, pid_path, config_path = directory / "admin.sock", directory / "haproxy.pid", directory / "haproxy.cfg"
        # One balancer per role: one left running by a command killed before it recorded it
        # would share the address (SO_REUSEPORT) with an empty backend, and outlive `destroy`.
        self._stop_all(config_path, Deadline(10, f"the {env}/{role} balancer left running to stop"))
        for stale in (socket_path, pid_path):
            stale.unlink(missing_ok=True)
        # The socket by a path relative to the balancer's folder (haproxy starts there): a
        # Unix socket's path is limited to 107 bytes, a project's path is not.
        values = dict(socket=config_quote(f"unix@{socket_path.name}"), address=address, health_path=config_quote(health_path))
        run_as = balancer_identity(self.settings.server_user)  # root binds, then it drops to nobody
        identity = f"\n    uid {run_as.uid}\n    gid {run_as.gid}" if run_as else ""
        config = CONFIG.format(env=env, role=role, port=port, backend=BACKEND, identity=identity, **values)
        if tls_port:
            config += TLS_CONFIG.format(tls_port=tls_port, backend=TLS_BACKEND, **values)
        config_path.write_text(config)
        # -D: daemonize, so the balancer outlives this command like a cloud load balancer does.
        result = subprocess.run(
            ["haproxy", "-D", "-q", "-f", str(config_path), "-p", str(pid_path)], cwd=directory, capture_output=True, text=True, timeout=30
        )
        if result.returncode != 0:
            lines = [line for line in (result.stderr or result.stdout).splitlines() if "ALERT" in line] or ["no output"]
            raise PhoenixError(f"haproxy for {env}/{role} on {address}:{port} did not start: {lines[0].strip()}")
        pid = int(Deadline(10, f"haproxy pid file {pid_path}").poll(lambda: pid_path.exists() and pid_path.read_text().strip()))
        api = RuntimeAPI(str(socket_path))
        Deadline(10, f"haproxy admin socket for {env}/{role}").poll(lambda: self._answers(api))
        handle = {
            "pid": pid,
            "started": psutil.Process(pid).create_time(),
            "socket": str(socket_path),
            "dir": str(directory),
            "tls_port": tls_port,
        }
        return Endpoint(address, port, handle)

    def discover(self, env: str) -> dict[str, dict]:
        """The environment's HAProxy processes, by role, whatever the record says: each runs in
        its balancer's folder (kept as its working directory even when the folder was deleted,
        as after a disaster), which names the environment and the role."""
        base = str((self._dir(env, "x").parent).resolve()) + os.sep
        found: dict[str, dict] = {}
        for process in psutil.process_iter(["pid", "name", "cwd", "create_time"]):
            cwd = (process.info["cwd"] or "").removesuffix(" (deleted)")
            if process.info["name"] == "haproxy" and cwd.startswith(base) and os.sep not in cwd[len(base):]:
                found[cwd[len(base):]] = {"pid": process.info["pid"], "started": process.info["create_time"], "dir": cwd}
        return found

    @staticmethod
    def _backends(handle: dict) -> list[str]:
        return [BACKEND, TLS_BACKEND] if handle.get("tls_port") else [BACKEND]

    @staticmethod
    def _answers(api: RuntimeAPI) -> bool:
        try:
            return "Name: HAProxy" in api.send("show info")
        except PhoenixError:
            return False

    def is_alive(self, handle: dict) -> bool:
        """The recorded pid is a haproxy started with this balancer's own config file: proof
        it is ours whatever the clock did (a start time read against /proc/stat's boot time
        moves when the wall clock is stepped), and no recycled pid passes."""
        try:
            process = psutil.Process(handle["pid"])
            return process.status() != psutil.STATUS_ZOMBIE and _started_with(process.cmdline(), _config_of(handle))
        except (psutil.Error, KeyError):
            return False

    def add_member(
        self, handle: dict, name: str, address: str, port: int, tls_port: int | None = None, standby: bool = False, server: dict | None = None
    ) -> None:
        api = RuntimeAPI(handle["socket"])
        targets = [(BACKEND, port, "")]
        if handle.get("tls_port"):
            targets.append((TLS_BACKEND, tls_port or handle["tls_port"], " check-ssl verify none"))
        for backend, member_port, extra in targets:
            api.command(f"add server {backend}/{name} {address}:{member_port} {MEMBER_OPTIONS}{extra}")
            api.command(f"enable health {backend}/{name}")
            api.command(f"set server {backend}/{name} state {'drain' if standby else 'ready'}")

    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        # One connection, one line of `;`-separated commands: HAProxy applies them back to
        # back, so no request sees a state in between.
        commands = [
            f"set server {backend}/{name} state {state}"
            for backend in self._backends(handle)
            for names, state in ((enable, "ready"), (disable, "drain"))
            for name in names
        ]
        if commands:
            reply = RuntimeAPI(handle["socket"]).send(";".join(commands))
            if reply:
                raise PhoenixError(f"haproxy refused the switch: {reply.splitlines()[0]}")

    def counters(self, handle: dict) -> dict[str, MemberCounters]:
        api = RuntimeAPI(handle["socket"])
        totals: dict[str, MemberCounters] = {}
        for backend in self._backends(handle):
            for row in api.server_stats(backend):
                number = lambda key: int(row.get(key) or 0)  # noqa: E731
                # stot: every request sent to it; a 5xx or failed connection that was retried on
                # another member shows as wretr (the client never saw it), the others as 5xx/econ/eresp.
                requests = number("stot")
                errors = min(requests, number("hrsp_5xx") + number("econ") + number("eresp") + number("wretr"))
                seen = totals.get(row["svname"], MemberCounters(0, 0))
                totals[row["svname"]] = MemberCounters(seen.requests + requests, seen.errors + errors)
        return totals

    def members(self, handle: dict) -> dict[str, MemberState]:
        """Each member as the balancer sees it; with TLS passthrough, UP only when UP on both
        ports, and its sessions counted on both."""
        api = RuntimeAPI(handle["socket"])
        members: dict[str, MemberState] = {}
        for backend in self._backends(handle):
            for row in api.server_stats(backend):
                state = MemberState(
                    status=row.get("status", ""),
                    # "* L7OK": a new check is running, the last one passed
                    check_ok=row.get("check_status", "").removeprefix("* ").startswith("L7OK"),
                    sessions=int(row.get("scur") or 0),
                )
                seen = members.get(row["svname"])
                if seen is not None:
                    state = MemberState(
                        status=seen.status if not seen.up else state.status,
                        check_ok=seen.check_ok and state.check_ok,
                        sessions=seen.sessions + state.sessions,
                    )
                members[row["svname"]] = state
        return members

    def hold_checks(self, handle: dict, name: str, held: bool) -> None:
        # With its checks off, a member keeps its state: a restart's refused connections are
        # retried (`retries`, a turn-around of a second each) instead of it being marked DOWN.
        api = RuntimeAPI(handle["socket"])
        for backend in self._backends(handle):
            api.command(f"{'disable' if held else 'enable'} health {backend}/{name}")

    def drain_member(self, handle: dict, name: str) -> None:
        api = RuntimeAPI(handle["socket"])
        for backend in self._backends(handle):
            api.command(f"set server {backend}/{name} state drain")

    def remove_member(self, handle: dict, name: str, deadline: Deadline) -> None:
        api = RuntimeAPI(handle["socket"])
        for backend in self._backends(handle):
            if not any(row["svname"] == name for row in api.server_stats(backend)):
                continue
            api.command(f"set server {backend}/{name} state maint")

            def deleted(backend: str = backend) -> bool:
                reply = api.send(f"del server {backend}/{name}")
                if reply == "Server deleted." or "No such server" in reply:
                    return True
                # Connections still attached (idle keep-alive ones included): cut them and retry.
                api.send(f"shutdown sessions server {backend}/{name}")
                return False

            try:
                deadline.poll(deleted, interval=0.05, max_interval=0.25)
            except DeadlineExceeded:
                raise PhoenixError(f"haproxy would not delete member {name}: {api.send(f'del server {backend}/{name}')}") from None

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        directory = owned_path(self.workdir, handle.get("dir", ""), "load balancer directory")
        self._stop_all(directory / "haproxy.cfg", deadline)  # the recorded one, and any left beside it
        shutil.rmtree(directory, ignore_errors=True)

    def _stop_all(self, config_path: Path, deadline: Deadline) -> None:
        """Stop every haproxy started with `config_path` (this project's own file: the only
        processes this touches): SIGTERM, then SIGKILL at the deadline."""
        running = [
            process for process in psutil.process_iter(["cmdline", "status"])
            if process.info["status"] != psutil.STATUS_ZOMBIE and _started_with(process.info["cmdline"] or [], config_path)
        ]
        for process in running:
            _signal(process, signal.SIGTERM)
        try:
            deadline.poll(lambda: all(map(_gone, running)), interval=0.02)
        except DeadlineExceeded:
            for process in running:
                _signal(process, signal.SIGKILL)
            Deadline(5, "haproxy to die").poll(lambda: all(map(_gone, running)), interval=0.02)


def _config_of(handle: dict) -> Path:
    return Path(handle["dir"]) / "haproxy.cfg"


def _started_with(cmdline: list[str], config_path: Path) -> bool:
    """`haproxy ... -f CONFIG_PATH ...`: how `create` starts a balancer."""
    return bool(cmdline) and Path(cmdline[0]).name == "haproxy" and any(
        flag == "-f" and value == str(config_path) for flag, value in zip(cmdline, cmdline[1:])
    )


def _gone(process: psutil.Process) -> bool:
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _signal(process: psutil.Process, signum: int) -> None:
    try:
        process.send_signal(signum)  # psutil checks the pid still names the process it found
    except psutil.NoSuchProcess:
        pass
