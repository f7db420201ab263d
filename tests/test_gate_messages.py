"""What a failed boot or health gate tells the user: where the server's log is and the few
lines of it that explain the failure, in the one line of `phoenix: error:`.

Three levels: the excerpt extraction over sample logs (no process), the executor with the
in-memory drivers (the message is put together from what the driver returns), and real
server processes behind real HAProxy on the local provider, through the `phoenix` command."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from phoenixctl.drivers.base import LogExcerpt
from fakes import FakeWorld
from phoenixctl.errors import GateFailed
from phoenixctl.excerpt import MAX_LINES, WIDTH, error_lines
from phoenixctl.engine import Executor, Project

from conftest import phoenix

# --- the excerpt, from sample logs --------------------------------------------------------------

ROOT = "/home/me/site/.phoenix/servers/ci/backend-1a2b3c/root/"

PYTHON_AT_IMPORT = f"""\
phoenix: runcmd 1
Traceback (most recent call last):
  File "{ROOT}app/server.py", line 24, in <module>
    from settings import load
  File "{ROOT}app/settings.py", line 9, in <module>
    SETTINGS = load()
               ^^^^^^
  File "{ROOT}app/settings.py", line 6, in load
    raise KeyError(name)
KeyError: 'DATABASE_URL'
"""

PYTHON_CHAINED = f"""\
Traceback (most recent call last):
  File "{ROOT}app/server.py", line 5, in read
    return open(path).read()
           ^^^^^^^^^^
FileNotFoundError: [Errno 2] No such file or directory: '{ROOT}config.yaml'

The above exception was the direct cause of the following exception:

Traceback (most recent call last):
  File "{ROOT}app/server.py", line 9, in <module>
    CONFIG = read("config.yaml")
  File "{ROOT}app/server.py", line 7, in read
    raise RuntimeError("no configuration") from exc
RuntimeError: no configuration
"""

# gunicorn is not a dependency of Phoenix: these are samples of its real output (gunicorn
# 22/23, default log format), written from its arbiter's and util's messages.
GUNICORN_APP_NOT_FOUND = """\
[2024-05-02 10:11:12 +0000] [4321] [INFO] Starting gunicorn 23.0.0
[2024-05-02 10:11:12 +0000] [4321] [INFO] Listening at: http://127.0.0.5:8081 (4321)
[2024-05-02 10:11:12 +0000] [4321] [INFO] Using worker: sync
[2024-05-02 10:11:12 +0000] [4322] [INFO] Booting worker with pid: 4322
Failed to find attribute 'app' in 'x'.
[2024-05-02 10:11:12 +0000] [4322] [INFO] Worker exiting (pid: 4322)
[2024-05-02 10:11:13 +0000] [4321] [ERROR] Worker (pid:4322) exited with code 4.
[2024-05-02 10:11:13 +0000] [4321] [ERROR] Shutting down: Master
[2024-05-02 10:11:13 +0000] [4321] [ERROR] Reason: App failed to load.
"""

GUNICORN_WORKER_BOOT = """\
[2024-05-02 10:11:12 +0000] [4321] [INFO] Starting gunicorn 23.0.0
[2024-05-02 10:11:12 +0000] [4321] [INFO] Listening at: http://127.0.0.5:8081 (4321)
[2024-05-02 10:11:12 +0000] [4321] [INFO] Using worker: sync
[2024-05-02 10:11:12 +0000] [4322] [INFO] Booting worker with pid: 4322
[2024-05-02 10:11:12 +0000] [4322] [ERROR] Exception in worker process
Traceback (most recent call last):
  File "/srv/venv/lib/python3.11/site-packages/gunicorn/arbiter.py", line 608, in spawn_worker
    worker.init_process()
  File "/srv/venv/lib/python3.11/site-packages/gunicorn/workers/base.py", line 135, in init_process
    self.load_wsgi()
  File "/srv/venv/lib/python3.11/site-packages/gunicorn/util.py", line 371, in import_app
    mod = importlib.import_module(module)
          ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module
    return _bootstrap._gcd_import(name[level:], package, level)
           ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^
  File "/srv/app/wsgi.py", line 3, in <module>
    import flask_sqlalchemy
ModuleNotFoundError: No module named 'flask_sqlalchemy'
No module named 'flask_sqlalchemy'
[2024-05-02 10:11:12 +0000] [4322] [INFO] Worker exiting (pid: 4322)
[2024-05-02 10:11:13 +0000] [4321] [ERROR] Worker (pid:4322) exited with code 3
[2024-05-02 10:11:13 +0000] [4321] [ERROR] Shutting down: Master
[2024-05-02 10:11:13 +0000] [4321] [ERROR] Reason: Worker failed to boot.
"""

NOISE_WITH_ERRORS = """\
starting on 127.0.0.5:8081
loading 40 articles
warning: cache directory missing, creating it
error: cannot connect to 127.0.0.9:5432: connection refused
retrying in 1s
error: cannot connect to 127.0.0.9:5432: connection refused
FATAL: giving up after 2 attempts
"""

PLAIN_NOISE = "".join(f"request {n} served in 3 ms\n" for n in range(50))


def test_a_python_traceback_gives_its_last_frames_and_the_exception():
    assert error_lines(PYTHON_AT_IMPORT, strip=(ROOT,)) == [
        'File "app/settings.py", line 9, in <module>: SETTINGS = load()',
        'File "app/settings.py", line 6, in load: raise KeyError(name)',
        "KeyError: 'DATABASE_URL'",
    ]


def test_a_chained_traceback_gives_what_was_raised_and_what_caused_it():
    assert error_lines(PYTHON_CHAINED, strip=(ROOT,)) == [
        'File "app/server.py", line 9, in <module>: CONFIG = read("config.yaml")',
        'File "app/server.py", line 7, in read: raise RuntimeError("no configuration") from exc',
        "RuntimeError: no configuration",
        "caused by: FileNotFoundError: [Errno 2] No such file or directory: 'config.yaml'",
    ]


def test_a_syntax_error_without_a_traceback_header():
    log = f'  File "{ROOT}app/server.py", line 12\n    def handler(request:\n               ^\nSyntaxError: \'(\' was never closed\n'
    assert error_lines(log, strip=(ROOT,)) == ['File "app/server.py", line 12: def handler(request:', "SyntaxError: '(' was never closed"]


def test_gunicorn_that_cannot_find_the_app_gives_its_reason_lines():
    assert error_lines(GUNICORN_APP_NOT_FOUND) == ["Failed to find attribute 'app' in 'x'.", "Reason: App failed to load."]


def test_gunicorn_whose_worker_fails_to_boot_gives_the_traceback_and_its_reason():
    assert error_lines(GUNICORN_WORKER_BOOT) == [
        'File "/usr/lib/python3.11/importlib/__init__.py", line 126, in import_module: return _bootstrap._gcd_import(name[level:], package, level)',
        'File "/srv/app/wsgi.py", line 3, in <module>: import flask_sqlalchemy',
        "ModuleNotFoundError: No module named 'flask_sqlalchemy'",
        "Reason: Worker failed to boot.",
    ]


def test_other_output_gives_its_first_error_lines():
    assert error_lines(NOISE_WITH_ERRORS) == [
        "error: cannot connect to 127.0.0.9:5432: connection refused",
        "error: cannot connect to 127.0.0.9:5432: connection refused",
        "FATAL: giving up after 2 attempts",
    ]


def test_output_without_errors_gives_its_last_lines():
    assert error_lines(PLAIN_NOISE) == [f"request {n} served in 3 ms" for n in range(50 - MAX_LINES, 50)]
    assert error_lines("") == [] and error_lines("\n\n  \n") == []


def test_the_excerpt_is_bounded_and_plain_text():
    many = "".join(f"error {n}: " + "x" * 500 + "\n" for n in range(100))
    lines = error_lines(many)
    assert len(lines) == MAX_LINES
    assert all(len(line) <= WIDTH for line in lines) and lines[0].endswith("…")
    coloured = "\x1b[31mERROR\x1b[0m: bad [bold]thing[/bold]\r\n"
    assert error_lines(coloured) == ["ERROR: bad [bold]thing[/bold]"]


def test_an_excerpt_reads_as_one_line():
    assert str(LogExcerpt("x.log", ("a", "b"))) == "see x.log: a | b"
    assert str(LogExcerpt("x.log")) == "see x.log"


# --- the executor puts the message together (in-memory drivers) ---------------------------------

SPEC = {
    "project": "fake",
    "provider": "fake",
    "images": {"app": {"start": "serve"}},
    "roles": {"web": {"image": "app", "port": 8080}},
    "environments": {"prod": {"roles": {"web": 1}}},
    "defaults": {"deadlines": {"boot": "2s", "health": "0.3s", "swap": "2s", "drain": "2s", "stop": "2s"}},
}


@pytest.fixture
def fake(tmp_path: Path) -> tuple[Path, FakeWorld]:
    spec_path = tmp_path / "phoenix.yaml"
    spec_path.write_text(yaml.safe_dump(SPEC))
    return spec_path, FakeWorld.of(tmp_path / ".phoenix")


def test_a_failed_health_gate_names_the_log_and_quotes_it(fake):
    spec_path, world = fake
    world.unhealthy_roles.add("web")
    world.outputs["web"] = PYTHON_AT_IMPORT.replace(ROOT, "")
    with pytest.raises(GateFailed) as raised:
        Executor(Project(spec_path)).up("prod")
    error = raised.value
    assert error.gate == "health" and error.log is not None
    assert str(error) == (
        f"server {error.server_id} failed its health gate: GET /healthz still answered HTTP 500 after 0.3s; "
        f"see the fake log of {error.server_id}: "
        "File \"app/settings.py\", line 9, in <module>: SETTINGS = load() | "
        "File \"app/settings.py\", line 6, in load: raise KeyError(name) | KeyError: 'DATABASE_URL'"
    )


def test_a_health_path_answered_404_throughout_says_the_path_may_be_wrong(fake):
    spec_path, world = fake
    world.unhealthy_roles.add("web")
    world.answers["web"] = "HTTP 404"
    with pytest.raises(GateFailed, match=re.escape(
        "GET /healthz still answered HTTP 404 after 0.3s (is health.path right? the server answers 404 for it); see the fake log of "
    )):
        Executor(Project(spec_path)).up("prod")


# --- real server processes on the local provider, through the `phoenix` command ---------------------

BROKEN_SERVER = '''\
"""A server that fails at import: its settings raise."""
from settings import load

SETTINGS = load()
'''

BROKEN_SETTINGS = '''\
import os


def load():
    # brackets as a log may hold them: printed as they are, never read as markup
    raise RuntimeError("no [bold]DATABASE_URL[/bold] in the environment [/]")
'''


def only_backend(spec_path: Path, **role) -> None:
    """The copy's `ci` with the backend alone, its role edited as asked, short deadlines."""
    data = yaml.safe_load(spec_path.read_text())
    data["environments"]["ci"]["roles"] = {"backend": 1}
    data["roles"]["backend"].update(role)
    data["defaults"]["deadlines"].update(boot="10s", health="2s")
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if not line.startswith("  ")]  # event lines are indented
    assert len(lines) == 1 and lines[0] == stderr.splitlines()[-1], stderr
    return lines[0]


def test_a_server_that_raises_at_import_names_its_log_and_the_exception(ci_copy: Path):
    app = ci_copy.parent / "app"
    (app / "broken.py").write_text(BROKEN_SERVER)
    (app / "settings.py").write_text(BROKEN_SETTINGS)
    only_backend(ci_copy, command="python app/broken.py")

    result = phoenix(ci_copy, "up", "ci")

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr
    line = one_error_line(result.stderr)
    match = re.fullmatch(
        r"phoenix: error: server (backend-[0-9a-f]{6}) failed its boot gate: its process exited; "
        r"see (\.phoenix/logs/ci/backend/backend-[0-9a-f]{6}\.log): (.*)",
        line,
    )
    assert match, line
    server_id, log, excerpt = match.groups()
    assert log == f".phoenix/logs/ci/backend/{server_id}.log"
    assert (ci_copy.parent / log).is_file()  # the log outlives the server
    assert excerpt == (
        'File "app/broken.py", line 4, in <module>: SETTINGS = load() | '
        'File "app/settings.py", line 6, in load: raise RuntimeError("no [bold]DATABASE_URL[/bold] in the environment [/]") | '
        "RuntimeError: no [bold]DATABASE_URL[/bold] in the environment [/]"
    )


def test_a_health_path_the_server_does_not_have_says_the_path_may_be_wrong(ci_copy: Path):
    only_backend(ci_copy, health={"path": "/health"})  # the example answers /healthz

    result = phoenix(ci_copy, "up", "ci")

    assert result.returncode == 1, result.stderr
    line = one_error_line(result.stderr)
    assert re.fullmatch(
        r"phoenix: error: server (backend-[0-9a-f]{6}) failed its health gate: GET /health still answered HTTP 404 after 2s "
        r"\(is health\.path right\? the server answers 404 for it\); see \.phoenix/logs/ci/backend/\1\.log: "
        r".*access GET /health 404 .*",  # the log's last lines: the server's own access lines
        line,
    ), line


def test_a_boot_command_that_fails_names_the_log_too(ci_copy: Path):
    only_backend(ci_copy, runcmd=["echo 'mounting /data' && echo 'error: /data is not a directory' >&2 && exit 3"])

    result = phoenix(ci_copy, "up", "ci")

    assert result.returncode == 1, result.stderr
    assert re.fullmatch(
        r"phoenix: error: server (backend-[0-9a-f]{6}) failed its launch gate: \1: runcmd 1 exited 3; "
        r"see \.phoenix/logs/ci/backend/\1\.log: error: /data is not a directory",
        one_error_line(result.stderr),
    ), result.stderr
