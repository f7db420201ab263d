"""Logs pushed out of every server, with the real aggregator (rsyslogd from Debian's packages)
and real servers: what `phoenix logs` reads after rotations, a SIGKILL and an aggregator that
is down; its filters, --json and --follow; and a cloud role's user-data whose rsyslog
configuration, run by a real rsyslogd, ships into the aggregator.

One copy of the example with `ci` up is shared by the tests of this module, in order."""

from __future__ import annotations

import json
import os
import re
import socket
import shutil
import subprocess
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

import httpx
import psutil
import pytest
import yaml

from conftest import PHOENIX, copy_example, phoenix, wait_for
from phoenixctl.boot import userdata
from phoenixctl.deadline import Deadline
from phoenixctl.drivers.local.aggregator import PORT, Aggregator
from phoenixctl.drivers.local.records import Records
from phoenixctl.engine import Executor, Project
from phoenixctl.engine.operation import Reporter
from phoenixctl.example import init_example

pytestmark = pytest.mark.skipif(shutil.which("rsyslogd") is None, reason="rsyslogd is not installed (make setup)")


class Shared:
    def __init__(self, spec_path: Path, project: Project, executor: Executor):
        self.spec_path, self.project, self.executor = spec_path, project, executor
        self.logs_dir = spec_path.parent / ".phoenix" / "logs"

    def servers(self) -> list[dict]:
        return self.executor.status("ci")["servers"]

    def server(self, role: str) -> dict:
        return next(s for s in self.servers() if s["role"] == role)

    def logs(self, *args: str) -> list[str]:
        result = phoenix(self.spec_path, "logs", "ci", *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()

    def records(self, *args: str) -> list[dict]:
        return [json.loads(line) for line in self.logs("--json", *args)]

    def wait_records(self, count: int, *args: str) -> list[dict]:
        """Poll `phoenix logs --json ARGS` until it has `count` records (shipping is asynchronous)."""
        def enough() -> list[dict] | None:
            found = self.records(*args)
            return found if len(found) >= count else None

        return wait_for(enough, 20, f"{count} records for {args}")


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shared]:
    spec_path = copy_example(tmp_path_factory, "logs")
    project = Project(spec_path)
    executor = Executor(project, lock_timeout=60)
    try:
        executor.up("ci")
        yield Shared(spec_path, project, executor)
    finally:
        try:
            executor.destroy("ci")  # the project's last servers: the aggregator stops with them
        finally:
            project.close()


def get(url: str) -> int:
    return httpx.get(url, timeout=10).status_code


def test_every_server_ships_its_lines_tagged_with_its_release(ci):
    up = ci.executor.history("ci")[0]["id"]
    for server in ci.servers():
        records = ci.wait_records(1, "--server", server["id"], "--grep", "listening on")
        assert {(r["env"], r["role"], r["server"], r["release"]) for r in records} == {("ci", server["role"], server["id"], up)}


def test_filters_json_and_plain_text(ci):
    frontend = next(lb for lb in ci.executor.status("ci")["load_balancers"] if lb["role"] == "frontend")
    tag = uuid.uuid4().hex[:12]
    for n in range(5):
        assert get(f"http://{frontend['address']}/page/{n}?probe={tag}") == 200  # through the balancer
    records = ci.wait_records(5, "--grep", f"probe={tag}")
    assert sorted(r["msg"].split()[2] for r in records) == sorted(f"/page/{n}?probe={tag}" for n in range(5))
    assert all(r["msg"].startswith("access GET ") and " 200 " in r["msg"] for r in records)
    assert [r["time"] for r in records] == sorted(r["time"] for r in records)  # time order
    release = records[0]["release"]
    assert ci.records("--grep", f"probe={tag}", "--role", "backend") == []
    assert len(ci.records("--grep", f"probe={tag}", "--role", "frontend", "--release", release, "--since", "10m")) == 5
    assert ci.records("--grep", f"probe={tag}", "--release", "op-none") == []
    plain = ci.logs("--grep", f"probe={tag}")
    server = records[0]["server"]
    assert len(plain) == 5 and all(f" {server} frontend {release} access GET /page/" in line for line in plain)
    bad = phoenix(ci.spec_path, "logs", "ci", "--since", "ten minutes")
    assert bad.returncode == 2 and "--since" in bad.stderr and "Traceback" not in bad.stderr


def test_a_server_killed_with_sigkill_has_its_lines_up_to_the_kill(ci):
    edit = ci.server("edit")
    tag = uuid.uuid4().hex[:12]
    for n in range(20):
        assert get(f"http://{edit['address']}/healthz?kill={tag}&n={n}") == 200
    handle = ci.project.store.server(edit["id"]).handle_data
    ci.project.compute.terminate(handle)  # SIGKILL, as a machine failing (chaos)
    written = [line for line in Path(handle["log"]).read_text().splitlines() if f"kill={tag}" in line]
    assert len(written) == 20
    shipped = ci.wait_records(20, "--server", edit["id"], "--grep", f"kill={tag}")
    assert [r["msg"] for r in shipped] == written  # every line, in order, up to the last one written


def test_cloud_user_data_ships_with_rsyslog_and_validates(ci, tmp_path):
    project_dir = tmp_path / "website-aws"
    init_example(project_dir, "website-aws")
    spec = yaml.safe_load((project_dir / "phoenix.yaml").read_text())
    address = Aggregator(ci.logs_dir).address()
    spec["environments"]["ci"]["logs"] = {"ship_to": f"syslog+tcp://{address[0]}:{address[1]}"}
    (project_dir / "phoenix.yaml").write_text(yaml.safe_dump(spec))
    rendered = phoenix(project_dir / "phoenix.yaml", "userdata", "ci", "frontend")
    assert rendered.returncode == 0, rendered.stderr
    assert "schema: valid" in rendered.stderr + rendered.stdout
    assert f"phoenix: '@@{address[0]}:{PORT}'" in rendered.stdout
    # The rsyslog configuration it carries, run by a real rsyslogd as the cloud server would
    # (its journal stood in for by a socket), delivers the server's lines into the aggregator.
    cloud = tmp_path / "cloud"
    cloud.mkdir()
    project = Project(project_dir / "phoenix.yaml")
    try:
        from phoenixctl.boot.syslog import cloud_forwarding

        document = userdata.log_shipping(project.loaded, "ci", "frontend")
        assert document["rsyslog"]["configs"][0]["content"] == cloud_forwarding("ci", "frontend", address[0], PORT)
    finally:
        project.close()
    (cloud / "rsyslog.conf").write_text(
        f'global(workDirectory="{cloud}")\nmodule(load="imuxsock" SysSock.Use="off")\n'
        f'input(type="imuxsock" Socket="{cloud}/log.sock")\n' + document["rsyslog"]["configs"][0]["content"]
    )
    daemon = subprocess.Popen(["rsyslogd", "-n", "-f", str(cloud / "rsyslog.conf"), "-i", str(cloud / "pid")], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: (cloud / "log.sock").exists(), 10, "the cloud rsyslogd's socket")
        tag = uuid.uuid4().hex[:12]
        subprocess.run(["logger", "-u", str(cloud / "log.sock"), "-t", "frontend-c10d00@op-cloud", f"cloud line {tag}"], check=True)
        [record] = ci.wait_records(1, "--server", "frontend-c10d00")
        assert (record["role"], record["release"], record["msg"]) == ("frontend", "op-cloud", f"cloud line {tag}")
    finally:
        daemon.terminate()
        daemon.wait(timeout=10)


def test_follow_shows_a_server_launched_after_it_started_and_destroyed_servers_stay_readable(ci):
    before = {s["id"]: s for s in ci.servers()}
    follow = subprocess.Popen(
        [PHOENIX, "logs", "ci", "--follow", "--json", "--grep", "listening on", "-f", str(ci.spec_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        result = ci.executor.rotate("ci")  # the killed edit server removed, every server replaced
        new = {s["id"] for s in ci.servers()} - set(before)
        assert len(new) == 3 and not result.logs_kept
        seen: set[str] = set()
        deadline = Deadline(20, "--follow to show the new servers")
        while not new <= seen and not deadline.expired():
            line = follow.stdout.readline()
            if line:
                seen.add(json.loads(line)["server"])
        assert new <= seen
    finally:
        follow.terminate()
        follow.wait(timeout=10)
    for server_id, server in before.items():  # destroyed by the rotation, still there to read
        records = ci.records("--server", server_id)
        assert records and {r["role"] for r in records} == {server["role"]}


class StopAggregatorOnceServing(Reporter):
    """Takes the aggregator down the moment the new frontend is in service, then sends the
    old frontend requests: lines written while nothing reads them."""

    def __init__(self, logs_dir: Path, old: dict, tag: str):
        self.logs_dir, self.old, self.tag = logs_dir, old, tag

    def info(self, message: str) -> None:
        if message.startswith("frontend: ") and message.endswith(" in service"):
            Aggregator(self.logs_dir).stop(Deadline(10, "the aggregator to stop"))
            for n in range(3):
                assert get(f"http://{self.old['address']}/healthz?down={self.tag}&n={n}") == 200


def test_aggregator_down_during_a_rotation_keeps_the_lines_locally_and_says_so(ci):
    old = ci.server("frontend")
    tag = uuid.uuid4().hex[:12]
    executor = Executor(ci.project, StopAggregatorOnceServing(ci.logs_dir, old, tag), lock_timeout=60)
    result = executor.rotate("ci", "frontend")
    assert result.retired == [old["id"]]
    [kept] = result.logs_kept
    assert kept.startswith(f"{old['id']}: ") and "not running" in kept and f".phoenix/logs/ci/frontend/{old['id']}.log" in kept
    assert int(kept.split(": ")[1].split()[0]) >= 3
    local = Path(ci.project.store.server(old["id"]).handle_data["log"]).read_text()
    assert local.count(f"down={tag}") == 3  # kept in the server's own log file
    # Back up (as the next launch would start it): it reads on from where it stopped.
    assert Aggregator(ci.logs_dir).start_if_down()
    assert len(ci.wait_records(3, "--server", old["id"], "--grep", f"down={tag}")) == 3


def test_a_daemon_the_record_misses_is_stopped_before_another_starts(ci):
    aggregator = Aggregator(ci.logs_dir)
    first = aggregator.running_pid()
    aggregator.identity.write_text(json.dumps({"pid": None}))  # the record lost: a command killed while starting one
    assert aggregator.running_pid() is None and aggregator.start_if_down()
    ours = [p.pid for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] == aggregator.command()]
    assert ours == [aggregator.running_pid()] and first not in ours  # one daemon, never two reading the same files


class Receiver:
    """An aggregator of yours, as far as Phoenix can tell: a TCP listener on loopback that
    reads RFC 5424 messages in octet-counted framing (`LEN SP MSG`)."""

    def __init__(self):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.messages: list[str] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._read, args=(connection,), daemon=True).start()

    def _read(self, connection: socket.socket) -> None:
        buffer = b""
        with connection:
            while chunk := connection.recv(65536):
                buffer += chunk
                while b" " in buffer and len(buffer) >= int(buffer.split(b" ", 1)[0]) + len(buffer.split(b" ", 1)[0]) + 1:
                    length, rest = buffer.split(b" ", 1)
                    self.messages.append(rest[: int(length)].decode())
                    buffer = rest[int(length):]


def test_ship_to_sends_an_environment_s_lines_to_your_aggregator(ci):
    receiver = Receiver()
    try:
        spec = yaml.safe_load(ci.spec_path.read_text())
        spec["environments"]["ci"]["logs"] = {"ship_to": f"syslog+tcp://127.0.0.1:{receiver.port}"}
        ci.spec_path.write_text(yaml.safe_dump(spec, sort_keys=False))
        project = Project(ci.spec_path)
        try:
            Executor(project, lock_timeout=60).deploy("ci")  # the configuration changed: every server replaced
            servers = {s["id"]: s["role"] for s in Executor(project).status("ci")["servers"]}
        finally:
            project.close()

        def listening() -> dict[str, str]:
            found = {}
            for message in list(receiver.messages):
                match = re.match(r'<\d+>1 \S+ \S+ phoenix - - \[phoenix@32473 env="ci" role="(\w+)" server="([\w-]+)" release="(op-[\w-]+)"\] (.*)', message)
                if match and "listening on" in match.group(4):
                    found[match.group(2)] = match.group(1)
            return found if set(found) >= set(servers) else {}

        assert wait_for(listening, 20, "every new server's first line at your aggregator").items() >= servers.items()
        refused = phoenix(ci.spec_path, "logs", "ci")
        assert refused.returncode == 1 and f"shipped to syslog+tcp://127.0.0.1:{receiver.port}" in refused.stderr
    finally:
        receiver.listener.close()


def test_bad_ship_to_names_the_file_line_and_field(tmp_path):
    init_example(tmp_path / "bad")
    spec = tmp_path / "bad" / "phoenix.yaml"
    text = spec.read_text().replace("  ci:\n", "  ci:\n    logs: {ship_to: 'udp://logs:514'}\n", 1)
    spec.write_text(text)
    result = phoenix(spec, "validate")
    line = text.splitlines().index("    logs: {ship_to: 'udp://logs:514'}") + 1
    assert result.returncode == 2 and f"phoenix.yaml:{line}: environments.ci.logs.ship_to:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not os.path.exists(tmp_path / "bad" / ".phoenix" / "logs")


def test_retention_removes_old_days_and_retired_servers_files_only(tmp_path):
    logs = tmp_path / ".phoenix" / "logs"
    records = Records(logs)
    now = datetime(2026, 6, 20, 12, tzinfo=timezone.utc).timestamp()
    for day in ("2026-06-01", "2026-06-12", "2026-06-19", "2026-06-20"):
        path = records.root / "ci" / "web" / "web-aaaaaa" / f"{day}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("{}\n")
    for server in ("web-aaaaaa", "web-bbbbbb"):  # both quiet for 10 days; web-bbbbbb still runs
        own = logs / "ci" / "web" / f"{server}.log"
        own.parent.mkdir(parents=True, exist_ok=True)
        own.write_text("a line\n")
        os.utime(own, (now - 10 * 86400, now - 10 * 86400))
    (tmp_path / ".phoenix" / "servers" / "ci" / "web-bbbbbb" / "root").mkdir(parents=True)
    removed = records.prune({"ci": 7 * 86400}, now=now)
    assert sorted(p.name for p in removed) == ["2026-06-01.jsonl", "2026-06-12.jsonl", "web-aaaaaa.log"]
    assert sorted(p.name for p in (records.root / "ci" / "web" / "web-aaaaaa").iterdir()) == ["2026-06-19.jsonl", "2026-06-20.jsonl"]
    assert (logs / "ci" / "web" / "web-bbbbbb.log").exists()


def test_logs_turned_off_take_the_environment_out_of_the_aggregator(tmp_path):
    aggregator = Aggregator(tmp_path / ".phoenix" / "logs")
    aggregator.home.mkdir(parents=True)
    aggregator.routes.write_text(json.dumps({"ci": None, "production": None}))
    aggregator.unroute("ci")  # what a launch with logs.enabled: false does (the daemon is down here)
    assert aggregator.read_routes() == {"production": None}
    assert "/ci/*/*.log" not in aggregator._config("127.0.0.1", aggregator.read_routes())
