"""The local provider's boundaries (issue 13): Phoenix signals only processes it can prove
are its own and deletes only paths inside its own `.phoenix/`; a store copied with a
project is refused. Real processes, a real state store, the real `phoenix` command."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
from pathlib import Path

import psutil
import pytest

from conftest import phoenix
from phoenixctl.example import init_example
from phoenixctl.state import ServerRow, StateStore


@pytest.fixture
def project(tmp_path: Path) -> Path:
    init_example(tmp_path / "site")
    return tmp_path / "site" / "phoenix.yaml"


def record_server(spec: Path, server_id: str, handle: dict) -> None:
    """A server row as a launch would have written it (the state of a crashed or copied project)."""
    store = StateStore(spec.parent / ".phoenix" / "state.db")
    try:
        store.claim(spec.parent)
        store.add_server(
            ServerRow(id=server_id, env="ci", role="frontend", image_id="img-x", fingerprint="fp-x", address="127.0.0.9",
                      port=8080, state="in_service", in_service=True, handle=json.dumps(handle))
        )
    finally:
        store.close()


@pytest.fixture
def foreign_group():
    """Somebody else's process group on this machine: `setsid sleep`, as another user's job."""
    process = subprocess.Popen(["setsid", "sleep", "300"], start_new_session=False)
    try:
        leader = psutil.Process(process.pid)
        yield leader
    finally:
        process.kill()
        process.wait(timeout=10)


def test_destroy_never_signals_a_process_whose_pid_was_recycled(project: Path, foreign_group: psutil.Process):
    """The record says frontend-dead ran as pid P, started at T; P now belongs to another
    process group whose leader started later. `destroy` must leave it alone."""
    server_dir = project.parent / ".phoenix" / "servers" / "ci" / "frontend-dead"
    (server_dir / "root").mkdir(parents=True)
    handle = {"pid": foreign_group.pid, "started": foreign_group.create_time() - 100.0, "root": str(server_dir / "root"), "dir": str(server_dir)}
    record_server(project, "frontend-dead", handle)
    result = phoenix(project, "destroy", "ci")
    assert result.returncode == 0, result.stderr
    assert foreign_group.is_running() and foreign_group.status() != psutil.STATUS_ZOMBIE
    assert not server_dir.exists()  # its own folder is gone, inside .phoenix/


def test_destroy_refuses_a_recorded_path_outside_phoenix(project: Path, tmp_path: Path):
    precious = tmp_path / "precious"
    (precious / "root").mkdir(parents=True)
    (precious / "data.txt").write_text("not phoenix's")
    record_server(project, "frontend-elsewhere", {"pid": None, "started": 0.0, "root": str(precious / "root"), "dir": str(precious)})
    result = phoenix(project, "destroy", "ci")
    assert result.returncode == 1
    assert f"refusing to delete {precious}" in result.stderr and "outside this project's" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert (precious / "data.txt").read_text() == "not phoenix's"


def test_a_project_copied_with_its_phoenix_folder_is_refused(project: Path, tmp_path: Path):
    assert phoenix(project, "status", "ci").returncode == 0  # binds the store to this project
    copy = tmp_path / "copy"
    shutil.copytree(project.parent, copy)
    for command in (["destroy", "ci"], ["status", "ci"], ["up", "ci"]):
        result = phoenix(copy / "phoenix.yaml", *command)
        assert result.returncode == 1, (command, result.stderr)
        assert f"belongs to the project at {project.parent.resolve()}" in result.stderr, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1
    assert not (copy / ".phoenix" / "servers").exists()


def test_phoenix_state_is_readable_by_its_owner_only(project: Path):
    assert phoenix(project, "status", "ci").returncode == 0
    workdir = project.parent / ".phoenix"
    assert stat.S_IMODE(workdir.stat().st_mode) == 0o711  # servers pass through to their own folders; nothing listed
    for path in workdir.glob("state.db*"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path


def test_a_project_deep_in_the_file_system_gets_its_balancers(tmp_path: Path):
    """A Unix socket's path is limited to 107 bytes; a CI runner's workspace is often deeper.
    The balancers' admin sockets must work wherever the project is."""
    deep = tmp_path / ("workspace-" * 8) / "site"
    init_example(deep)
    spec = deep / "phoenix.yaml"
    assert len(str(deep / ".phoenix" / "lb" / "ci" / "frontend" / "admin.sock")) > 107
    try:
        result = phoenix(spec, "up", "ci")
        assert result.returncode == 0, result.stderr
        status = json.loads(phoenix(spec, "status", "ci", "--json").stdout)
        assert all(lb["alive"] and lb["members_up"] == 1 for lb in status["load_balancers"]), status
    finally:
        assert phoenix(spec, "destroy", "ci").returncode == 0
