"""Secret commands (issue 13): run in their own session, and nothing they start outlives
them.

A secret `{command: ...}` runs with /bin/sh in a new session: however it ends (its output
read, a time-out, an interrupt), its whole process group is killed and the shell reaped."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import PHOENIX, copy_example, process_gone, wait_for
from phoenixctl import cli
from phoenixctl import secrets as secrets_module


def edit_spec(spec_path: Path, change) -> None:
    data = yaml.safe_load(spec_path.read_text())
    change(data)
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))


def declare(spec_path: Path, env: str, **secrets) -> None:
    edit_spec(spec_path, lambda data: data["environments"][env]["secrets"].update(secrets))


def pids_in(path: Path, count: int) -> list[int]:
    """The pids a command wrote, once it wrote `count` of them."""
    def read() -> list[int]:
        pids = [int(p) for p in path.read_text().split()] if path.exists() else []
        return pids if len(pids) >= count else []

    return wait_for(read, 10, f"{count} pids in {path.name}")


def kill_leftovers(path: Path) -> None:
    """Whatever a failing test left running: only the pids the test's own command wrote."""
    for pid in [int(p) for p in path.read_text().split()] if path.exists() else []:
        try:
            if not process_gone(pid):
                psutil.Process(pid).kill()
        except psutil.Error:
            pass


def assert_all_gone(pids: list[int]) -> None:
    wait_for(lambda: all(process_gone(pid) for pid in pids), 5, f"processes {pids} to be gone")


@pytest.fixture
def project(tmp_path_factory) -> Path:
    return copy_example(tmp_path_factory, "secret-commands")


# --- a command's processes: none outlives it -------------------------------------------------

# The shell, two children (one a subshell that becomes `sleep` by `exec`, keeping its pid)
# and a grandchild: each writes its own pid. The shell waits for them, so it hangs.
HANGING = (
    "echo $$ > pids; echo s3cret-partial; echo s3cret-on-stderr >&2; "
    "sleep 300 & echo $! >> pids; "
    "sh -c 'echo $$ >> pids; exec sleep 300' & "
    "sh -c 'sleep 300 & echo $! >> pids; wait' & "
    "wait"
)


def test_a_secret_command_that_times_out_leaves_no_process_behind(project: Path, capsys, monkeypatch):
    monkeypatch.setattr(secrets_module, "COMMAND_TIMEOUT", 1.0)
    declare(project, "ci", api_token={"command": HANGING})
    try:
        code = cli.main(["validate", "--resolve-secrets", "-f", str(project)])
        captured = capsys.readouterr()
        pids = pids_in(project.parent / "pids", 4)
        assert code == 2, captured.err
        lines = captured.err.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
        assert "environments.ci.secrets.api_token: command did not finish within 1s" in lines[0]
        assert "s3cret" not in (captured.out + captured.err).replace(HANGING, "")  # its output is never shown
        assert_all_gone(pids)
    finally:
        kill_leftovers(project.parent / "pids")


def test_what_a_finished_secret_command_left_running_is_stopped(project: Path, capsys):
    # The value is printed and the shell exits 0, but a child it put in the background
    # (its output elsewhere, so the pipe closes) would keep running.
    command = "sleep 300 > /dev/null 2>&1 & echo $! > pids; echo s3cret-value"
    declare(project, "ci", api_token={"command": command})
    try:
        code = cli.main(["validate", "--resolve-secrets", "-f", str(project)])
        captured = capsys.readouterr()
        assert code == 0, captured.err
        assert "s3cret" not in (captured.out + captured.err).replace(command, "")
        pids = pids_in(project.parent / "pids", 1)
        assert_all_gone(pids)
    finally:
        kill_leftovers(project.parent / "pids")


def test_an_interrupted_secret_command_leaves_no_process_behind(project: Path):
    command = "echo $$ > pids; sleep 300 & echo $! >> pids; sh -c 'sleep 300 & echo $! >> pids; wait' & wait"
    declare(project, "ci", api_token={"command": command})
    env = {k: v for k, v in os.environ.items() if k != "PHOENIX_FAILPOINT"}
    process = subprocess.Popen(
        [PHOENIX, "validate", "--resolve-secrets", "-f", str(project)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pids = pids_in(project.parent / "pids", 3)
        process.send_signal(signal.SIGINT)  # to phoenix alone, as a supervisor would
        _, err = process.communicate(timeout=30)
        assert process.returncode == 130, err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert_all_gone(pids)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        kill_leftovers(project.parent / "pids")
