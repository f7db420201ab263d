"""The project's log aggregator: one rsyslogd of Phoenix's own per project (never the
system's), in the persistent layer, under `.phoenix/logs/.aggregator/`.

It is also the shipper. Each local server writes its output to its own log file
(`.phoenix/logs/ENV/ROLE/SERVER.log`, as before); rsyslog's imfile reads what is new in those
files every second (polling in bulk: 0.1 CPU-second per 10,000 lines here, against 1.7 s
with inotify waking it per line) and keeps its offset in each one on disk. So the shipping
outlives every `phoenix` command (a CLI exits between commands, rsyslog does not), a server
killed with SIGKILL has every line it wrote shipped (the file is complete, whoever dies), a
line written while the aggregator was down is shipped when it is back (from the offset it
kept), and a retirement can tell whether all of a server's file arrived: its records counted
against its lines (or, forwarded to `ship_to`, imfile's offset against the file's size).

Each record gets the server's environment, role and id from its file's path, and its
release from a lookup table Phoenix writes before the server starts (rsyslog reloads it on
SIGHUP). The aggregator writes JSON lines per environment / role / server / day under
`records/` (see `records.py`), and listens with imtcp on a loopback address for RFC 5424
messages (octet-counted) from anything else that ships to it. An environment with
`logs.ship_to` has its servers' lines forwarded there instead (omfwd, the same RFC 5424
records, queued while the receiver is down).

The daemon is signalled only when its recorded identity (pid and start time) is the one
Phoenix started, and stops when the project's last server is gone (its records stay)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from ...boot.syslog import SD_ID, forward_action, rfc5424_template
from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from ...spec import ship_to_address
from .identity import private_dir
from .loopback import LoopbackPool

PORT = 10514  # imtcp, on the project's own loopback address
_CHILDREN: list[subprocess.Popen] = []
HOME = ".aggregator"  # under .phoenix/logs/: a dot name is never an environment, never matched by imfile's `*`

RECORD_TEMPLATE = """\
template(name="phoenix_record" type="list") {
  constant(value="{") property(name="timereported" dateFormat="rfc3339" format="jsonf" outname="time")
  constant(value=",") property(name="$.env" format="jsonf" outname="env")
  constant(value=",") property(name="$.role" format="jsonf" outname="role")
  constant(value=",") property(name="$.server" format="jsonf" outname="server")
  constant(value=",") property(name="$.release" format="jsonf" outname="release")
  constant(value=",") property(name="msg" format="jsonf" outname="msg" droplastlf="on")
  constant(value="}\\n")
}
template(name="phoenix_record_file" type="list") {
  constant(value="{records}/") property(name="$.env" securepath="replace")
  constant(value="/") property(name="$.role" securepath="replace")
  constant(value="/") property(name="$.server" securepath="replace")
  constant(value="/") property(name="timereported" dateFormat="year") constant(value="-")
  property(name="timereported" dateFormat="month") constant(value="-")
  property(name="timereported" dateFormat="day") constant(value=".jsonl")
}
"""

CONFIG = """\
# Written by phoenix: the project's log aggregator. Rewritten (and rsyslogd restarted) when an
# environment's route changes; the releases table is reloaded on SIGHUP.
global(workDirectory="{work}" maxMessageSize="64k")
module(load="imfile" mode="polling" PollingInterval="1")
module(load="imtcp")
module(load="mmpstrucdata")
module(load="mmrm1stspace")
lookup_table(name="releases" file="{releases}" reloadOnHUP="on")
{templates}
ruleset(name="write") {{
  action(type="omfile" dynaFile="phoenix_record_file" template="phoenix_record" dirCreateMode="0700" fileCreateMode="0600"
         dynaFileCacheSize="1000")  # a file per server: never closed and opened again per batch
}}
ruleset(name="received") {{
  action(type="mmpstrucdata")
  action(type="mmrm1stspace")  # a syslog message starts with a space: not part of the line
  set $.env = $!rfc5424-sd!{sd}!env;
  set $.role = $!rfc5424-sd!{sd}!role;
  set $.server = $!rfc5424-sd!{sd}!server;
  set $.release = $!rfc5424-sd!{sd}!release;
  call write
}}
input(type="imtcp" address="{address}" port="{port}" ruleset="received")
"""

# One per environment: its servers' files, named by the path, sent to where the environment's logs go.
FILES = """
ruleset(name="files-{env}") {{
  set $.env = "{env}";
  set $.role = re_extract($!metadata!filename, '/([^/]+)/([^/]+)\\\\.log$', 0, 1, "");
  set $.server = re_extract($!metadata!filename, '/([^/]+)/([^/]+)\\\\.log$', 0, 2, "");
  set $.release = lookup("releases", $.server);
  {action}
}}
input(type="imfile" File="{logs}/{env}/*/*.log" Tag="phoenix" addMetadata="on" ruleset="files-{env}"
      {persist} reopenOnTruncate="on")
"""
# Written into the project's records, delivery is counted there, so the offsets are kept every
# 1000 lines (and when rsyslogd stops): after each batch, with a dozen files, costs it ten
# times the CPU. Forwarded elsewhere, the offset is the only measure: kept after each batch.
PERSIST_RECORDED = 'persistStateInterval="1000"'
PERSIST_FORWARDED = 'persistStateAfterSubmission="on"'


class Aggregator:
    """The project's rsyslogd: started, configured and signalled by Phoenix alone."""

    def __init__(self, logs_dir: Path):
        self.logs_dir = logs_dir.absolute()
        self.home = self.logs_dir / HOME
        self.records = self.home / "records"
        self.work = self.home / "work"
        self.config = self.home / "rsyslog.conf"
        self.releases = self.home / "releases.json"
        self.routes = self.home / "routes.json"  # env -> ship_to (None: these records)
        self.identity = self.home / "rsyslogd.json"  # the pid and start time of the daemon we started

    @staticmethod
    def installed() -> bool:
        return shutil.which("rsyslogd") is not None

    # --- before a server starts -------------------------------------------------------------
    def register(self, env: str, server_id: str, release: str, ship_to: str | None) -> None:
        """The server's release in the lookup table and its environment's route in the
        configuration, before it writes a line; the daemon running with both."""
        private_dir(self.logs_dir)
        private_dir(self.home)
        with self._locked():
            table = self._read(self.releases, {}).get("table", [])
            table = [row for row in table if row["index"] != server_id] + [{"index": server_id, "value": release}]
            self._write(self.releases, {"version": 1, "nomatch": "", "type": "string", "table": table})
            routes = self._read(self.routes, {})
            rerouted = env not in routes or routes[env] != ship_to
            routes[env] = ship_to
            self._write(self.routes, routes)
            pid = self.running_pid()
            if pid is not None and rerouted:
                self._stop(pid)  # a new input or route needs a new configuration: imfile keeps its offsets
                pid = None
            if pid is None:
                self._start(routes)
            else:
                os.kill(pid, signal.SIGHUP)  # the lookup table again (proven ours just above)

    def unroute(self, env: str) -> None:
        """An environment whose logs are off (`logs.enabled: false`): its files no longer read."""
        if not self.routes.exists():
            return
        with self._locked():
            routes = self._read(self.routes, {})
            if env not in routes:
                return
            del routes[env]
            self._write(self.routes, routes)
            pid = self.running_pid()
            if pid is not None:
                self._stop(pid)
                self._start(routes)

    # --- the daemon -----------------------------------------------------------------------
    def start_if_down(self) -> bool:
        """Start the daemon with the routes it had, if it is not running (then it reads on
        from the offsets it kept: lines written while it was down are shipped). True: started."""
        with self._locked():
            if self.running_pid() is not None:
                return False
            self._start(self._read(self.routes, {}))
            return True

    def running_pid(self) -> int | None:
        """The daemon's pid when it is the one we started and alive: its pid with its start
        time, or with its exact command line (our own configuration's path: a start time read
        across a clock step of this machine differs, the command does not)."""
        recorded = self._read(self.identity, {})
        try:
            process = psutil.Process(recorded["pid"])
            same = abs(process.create_time() - recorded["started"]) <= 0.05 or process.cmdline() == self.command()
            if not same or process.status() == psutil.STATUS_ZOMBIE:
                return None
        except (psutil.Error, KeyError, TypeError):
            return None
        return recorded["pid"]

    def command(self) -> list[str]:
        return ["rsyslogd", "-n", "-f", str(self.config), "-i", str(self.home / "rsyslogd.pid")]

    def _stop_unrecorded(self) -> bool:
        """A daemon of this project that the record misses (a command killed while starting
        one): known by its command line, which names this project's own configuration."""
        found = False
        for process in psutil.process_iter(["cmdline", "status"]):
            if process.info["cmdline"] == self.command() and process.info["status"] != psutil.STATUS_ZOMBIE:
                found = True
                process.terminate()
                try:
                    process.wait(timeout=10)
                except psutil.TimeoutExpired:
                    process.kill()
        return found

    def read_routes(self) -> dict[str, str | None]:
        """Each environment whose servers' files the aggregator reads, and where it sends them."""
        return self._read(self.routes, {})

    def address(self) -> tuple[str, int] | None:
        recorded = self._read(self.identity, {})
        return (recorded["address"], PORT) if recorded.get("address") else None

    def _start(self, routes: dict[str, str | None]) -> None:
        if not self.installed():
            raise PhoenixError("rsyslogd is not installed (run `make setup`, or apt-get install rsyslog)")
        private_dir(self.work)
        private_dir(self.records)
        self._stop_unrecorded()  # never two daemons reading the same files
        address = self._read(self.identity, {}).get("address") or ""
        if not address or not _free(address, PORT):
            address = LoopbackPool(self.logs_dir.parent).reserve(PORT)
        self.config.write_text(self._config(address, routes))
        pid_file = self.home / "rsyslogd.pid"
        pid_file.unlink(missing_ok=True)
        with open(self.home / "rsyslogd.out", "ab") as out:
            # In the foreground (-n) but in a session of its own, so it outlives this command: a
            # forked rsyslogd loses the thread that reloads lookup tables on SIGHUP.
            process = subprocess.Popen(
                self.command(), stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT, cwd=self.home, start_new_session=True,
            )
        _CHILDREN.append(process)  # ours while this command runs: reaped when stopped (then init's)
        try:
            Deadline(10, f"rsyslogd to write {pid_file}").poll(lambda: process.poll() is not None or pid_file.exists())
        except DeadlineExceeded:
            pass
        if process.poll() is not None:
            raise PhoenixError(f"rsyslogd did not start (exit {process.returncode}; see {self.home / 'rsyslogd.out'})")
        pid = process.pid
        self._write(self.identity, {"pid": pid, "started": psutil.Process(pid).create_time(), "address": address})
        Deadline(10, f"the aggregator to listen on {address}:{PORT}").poll(lambda: not _free(address, PORT), interval=0.02)

    def stop(self, deadline: Deadline) -> bool:
        """Stop the daemon (and any of this project's that the record misses); True: one ran."""
        if not self.home.is_dir():
            return False
        with self._locked():
            pid = self.running_pid()
            if pid is not None:
                self._stop(pid, deadline)
            return self._stop_unrecorded() or pid is not None

    def _stop(self, pid: int, deadline: Deadline | None = None) -> None:
        """SIGTERM (rsyslog writes its offsets and queues), SIGKILL at the deadline."""
        deadline = deadline or Deadline(10, f"rsyslogd {pid} to stop")
        os.kill(pid, signal.SIGTERM)
        try:
            deadline.poll(lambda: self.running_pid() is None, interval=0.02)
        except DeadlineExceeded:
            if self.running_pid() == pid:
                os.kill(pid, signal.SIGKILL)
            Deadline(5, f"rsyslogd {pid} to die").poll(lambda: self.running_pid() is None, interval=0.02)
        for child in _CHILDREN:
            child.poll()  # reap it, if it was started by this command

    def _config(self, address: str, routes: dict[str, str | None]) -> str:
        records_template = RECORD_TEMPLATE.replace("{records}", str(self.records))
        text = CONFIG.format(
            work=self.work, releases=self.releases, templates=records_template + rfc5424_template(), sd=SD_ID, address=address, port=PORT
        )
        for env, ship_to in sorted(routes.items()):
            if ship_to:
                host, port = ship_to_address(ship_to)
                action, persist = forward_action(host, port, f"forward-{env}"), PERSIST_FORWARDED
            else:
                action, persist = "call write", PERSIST_RECORDED
            text += FILES.format(env=env, logs=self.logs_dir, action=action, persist=persist)
        return text

    # --- what reached it --------------------------------------------------------------------
    def shipped(self, log_path: Path) -> int | None:
        """How many bytes of a forwarded server's log file the aggregator has read (None: not
        known: no state written yet, or the file is gone)."""
        try:
            inode = log_path.stat().st_ino
        except OSError:
            return None
        for state in self.work.glob(f"imfile-state:{inode}*"):
            recorded = self._read(state, {})
            if recorded.get("filename") == str(log_path.absolute()):
                return int(recorded.get("curr_offs", 0))
        return None

    def recorded_lines(self, env: str, role: str, server_id: str) -> int:
        """How many records the project's aggregator holds of one server (one per line)."""
        total = 0
        for day in (self.records / env / role / server_id).glob("*.jsonl"):
            try:
                with day.open("rb") as records:
                    total += sum(chunk.count(b"\n") for chunk in iter(lambda: records.read(1 << 20), b""))
            except OSError:
                continue
        return total

    # --- files ----------------------------------------------------------------------------
    @contextmanager
    def _locked(self):
        """One change at a time: the launches of one command (threads) and of others."""
        with open(self.home / "lock", "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    @staticmethod
    def _read(path: Path, default):
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return default

    @staticmethod
    def _write(path: Path, value) -> None:
        """Whole or not at all: rsyslog may read the table while we write it."""
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}")
        temporary.write_text(json.dumps(value, sort_keys=True))
        os.replace(temporary, path)


def _free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((address, port))
            return True
        except OSError:
            return False
