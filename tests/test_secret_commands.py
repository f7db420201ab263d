"""Secret commands (issue 13): run in their own session, and nothing they start outlives
them; read-only commands never run them.

A secret `{command: ...}` runs with /bin/sh in a new session: however it ends (its output
read, a time-out, an interrupt), its whole process group is killed and the shell reaped.
`plan`, `userdata`, `config`, `status`, `history`, `drift` and the `--dry-run` of
`deploy`, `rotate` and `rollback` do not run it: they use the keyed hash the last real
deploy recorded in its place, and say so when there is none."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import psutil
import pytest
import yaml

from conftest import PHOENIX, copy_example, destroy_quietly, phoenix, process_gone, wait_for
from phoenixctl import cli
from phoenixctl.boot import secrets as secrets_module


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
    # SIGINT at its default in phoenix even when this suite runs as a background job of a
    # non-interactive shell, which starts everything under it with SIGINT ignored.
    process = subprocess.Popen(
        [PHOENIX, "validate", "--resolve-secrets", "-f", str(project)], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
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


# --- read-only commands never run a secret command -----------------------------------------------


READ_ONLY = (
    ("plan", "ci"),
    ("plan", "ci", "--json"),
    ("deploy", "ci", "--dry-run"),
    ("deploy", "ci", "--dry-run", "--json"),
    ("rotate", "ci", "--dry-run"),
    ("rollback", "ci", "--dry-run"),
    ("config", "ci", "frontend"),
    ("userdata", "ci", "frontend"),
    ("status", "ci"),
    ("history", "ci"),
    ("drift", "ci"),
)


def by_command(project: Path) -> Path:
    """ci's certificate through a command that leaves a marker each time it runs."""
    declare(project, "ci", tls_cert={"command": "touch command-ran; cat secrets/ci/tls.crt"})
    return project.parent / "command-ran"


def assert_never_run(project: Path, marker: Path) -> dict[tuple[str, ...], subprocess.CompletedProcess]:
    results = {}
    for command in READ_ONLY:
        result = phoenix(project, *command)
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, (command, result.stderr)
        assert not marker.exists(), f"`phoenix {' '.join(command)}` ran the secret command"
        results[command] = result
    return results


def test_read_only_commands_never_run_a_secret_command(project: Path):
    marker = by_command(project)
    results = assert_never_run(project, marker)
    userdata = results[("userdata", "ci", "frontend")]
    assert userdata.returncode == 0, userdata.stderr
    assert "<redacted secret tls_cert>" in userdata.stdout
    assert "tls_cert" in userdata.stderr and "not run" in userdata.stderr  # the size counts a stand-in, and says so
    # Nothing recorded yet, and no server to judge: every server is missing, nothing to tell.
    plan = json.loads(results[("plan", "ci", "--json")].stdout)
    assert plan["secret_commands"] == {"tls_cert": "not run; no keyed hash recorded for this command"}
    assert {r["role"]: (r["missing"], r["cannot_tell"]) for r in plan["roles"]} == {role: (1, None) for role in ("frontend", "backend", "edit")}


def test_after_up_the_recorded_hash_stands_in_for_the_command(project: Path):
    marker = by_command(project)
    try:
        up = phoenix(project, "up", "ci")
        assert up.returncode == 0, up.stderr
        assert marker.exists()  # a real deploy runs it
        marker.unlink()

        plan = phoenix(project, "plan", "ci")
        assert not marker.exists(), "`phoenix plan ci` ran the secret command"
        assert plan.returncode == 0, plan.stdout + plan.stderr  # nothing to replace: the recorded hash is the value's
        assert set(plan.stdout.splitlines()) == {"frontend: up to date", "backend: up to date", "edit: up to date"}, plan.stdout
        report = json.loads(phoenix(project, "plan", "ci", "--json").stdout)
        assert report["secret_commands"] == {"tls_cert": "not run; its keyed hash recorded at the last deploy stands in"}
        assert not report["needs_replacement"] and not any(r.get("cannot_tell") for r in report["roles"])
        dry = json.loads(phoenix(project, "deploy", "ci", "--dry-run", "--json").stdout)
        assert all(not (r["replace"] or r["remove"] or r["retire_extra"]) for r in dry["roles"]), dry
        assert_never_run(project, marker)

        # Another command (the same output, but Phoenix cannot know that without running it):
        # the recorded hash was of the other one, so plan cannot tell for the role carrying it.
        declare(project, "ci", tls_cert={"command": "touch command-ran && cat secrets/ci/tls.crt"})
        plan = phoenix(project, "plan", "ci")
        assert plan.returncode == 1, plan.stdout + plan.stderr  # act on it: a deploy runs the command and decides
        assert "frontend: cannot tell whether the servers' boot configuration changed: secret command(s) tls_cert" in plan.stdout
        assert "backend: up to date" in plan.stdout and "edit: up to date" in plan.stdout  # they do not carry it
        report = json.loads(phoenix(project, "plan", "ci", "--json").stdout)
        assert (report["needs_replacement"], report["undetermined"]) == (False, True)
        assert report["secret_commands"] == {"tls_cert": "not run; no keyed hash recorded for this command"}
        dry = phoenix(project, "deploy", "ci", "--dry-run")
        assert dry.returncode == 0 and "  frontend: cannot tell" in dry.stdout, dry.stdout
        rotate = json.loads(phoenix(project, "rotate", "ci", "--dry-run", "--json").stdout)
        assert not any(r["cannot_tell"] for r in rotate["roles"])  # every server is replaced anyway
        assert not marker.exists()
    finally:
        destroy_quietly(project, "ci")
