"""Integration tests for the example website (src/phoenixctl/examples/website).

Each server runs as a real subprocess from a private copy of the example
directory, exactly as Phoenix starts it: `python app/server.py` in the copy.
"""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "phoenixctl" / "examples" / "website"
PYTHON = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
PYTHON = str(PYTHON) if PYTHON.exists() else sys.executable
HOST = "127.0.0.1"
PAGES = 5
# The servers' configuration must come from the tests only, not from the caller's shell.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith("PHOENIX_") and k not in ("HEALTH_FAIL", "PAGES", "RENDER_DELAY_MS")}


def free_port():
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, root, role, server_id, port, proc):
        self.root, self.role, self.id, self.port, self.proc = root, role, server_id, port, proc
        self.url = f"http://{HOST}:{port}"

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def wait_healthy(server, deadline_s=15.0, expect=200):
    """Poll /healthz until it answers `expect` (or the process dies / deadline passes)."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise RuntimeError(f"{server.role} exited early: {server.proc.stderr.read()}")
        try:
            if httpx.get(server.url + "/healthz", timeout=1).status_code == expect:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{server.role} not healthy within {deadline_s}s")


@pytest.fixture(scope="module")
def start(tmp_path_factory):
    """Factory starting servers; every process started is terminated at teardown."""
    started = []

    def _start(role, expect=200, **env):
        root = tmp_path_factory.mktemp(role) / "server"
        shutil.copytree(EXAMPLE, root)
        port, server_id = free_port(), f"{role}-test{len(started)}"
        full_env = {**CLEAN_ENV, "PHOENIX_ROLE": role, "PHOENIX_ADDRESS": HOST,
                    "PHOENIX_PORT": str(port), "PHOENIX_ENV": "ci",
                    "PHOENIX_SERVER_ID": server_id, "PAGES": str(PAGES), **env}
        proc = subprocess.Popen([PYTHON, "app/server.py"], cwd=root, env=full_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        server = Server(root, role, server_id, port, proc)
        started.append(server)
        wait_healthy(server, expect=expect)
        return server

    yield _start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def content(tmp_path_factory):
    return tmp_path_factory.mktemp("persistent") / "content"  # servers create it


@pytest.fixture(scope="module")
def backend(start, content):
    return start("backend", PHOENIX_PERSISTENT_CONTENT=str(content))


@pytest.fixture(scope="module")
def edit(start, content):
    return start("edit", PHOENIX_PERSISTENT_CONTENT=str(content))


@pytest.fixture(scope="module")
def frontend(start, backend):
    return start("frontend", PHOENIX_LB_BACKEND=f"{HOST}:{backend.port}")


def test_healthz_and_version(backend):
    r = httpx.get(backend.url + "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok", "role": "backend", "version": "1.0.0",
                        "server": backend.id, "env": "ci"}
    assert r.headers["X-Server"] == backend.id
    assert r.headers["X-Version"] == "1.0.0"
    r = httpx.get(backend.url + "/version")
    assert r.status_code == 200 and r.text == "1.0.0"
    assert r.headers["content-type"].startswith("text/plain")


def test_start_line_logged(backend):
    line = backend.proc.stdout.readline()
    assert line == f"{backend.id} backend 1.0.0 listening on {HOST}:{backend.port}\n"


def test_edit_writes_and_backend_lists(edit, backend, content):
    assert httpx.get(backend.url + "/api/articles").json()["articles"] == []
    r = httpx.put(edit.url + "/api/articles/hello-world", content="Hello\nFirst article\n")
    assert r.status_code == 201
    r = httpx.post(edit.url + "/api/articles/another", content="Another one\n")
    assert r.status_code == 201
    assert sorted(p.name for p in content.iterdir()) == ["another.txt", "hello-world.txt"]

    r = httpx.get(backend.url + "/api/articles")
    assert r.json() == {"articles": [{"name": "another", "title": "Another one"},
                                     {"name": "hello-world", "title": "Hello"}],
                        "version": "1.0.0"}
    r = httpx.get(backend.url + "/api/articles/hello-world")
    assert r.json() == {"name": "hello-world", "body": "Hello\nFirst article\n"}
    assert httpx.get(backend.url + "/api/articles/missing").status_code == 404
    assert httpx.get(backend.url + "/api/articles/Bad_Name").status_code == 400
    assert httpx.put(edit.url + "/api/articles/Bad_Name", content="x").status_code == 400


def test_edit_form(edit):
    r = httpx.get(edit.url + "/")
    assert r.status_code == 200 and "<form" in r.text


def test_frontend_cache_miss_then_hit(frontend):
    with httpx.Client(base_url=frontend.url) as client:  # keep-alive connection
        first = client.get("/page/1")
        second = client.get("/page/1")
    assert first.status_code == second.status_code == 200
    assert first.headers["X-Cache"] == "MISS"
    assert second.headers["X-Cache"] == "HIT"
    assert first.text == second.text
    assert "1.0.0" in first.text and "articles unavailable" not in first.text
    assert 'href="/static/site.css"' in first.text
    assert re.search(r'<a href="/page/\d+">', first.text)


def test_frontend_pages_links_and_404(frontend):
    home = httpx.get(frontend.url + "/")
    assert home.status_code == 200
    for n in range(PAGES):
        assert f'href="/page/{n}"' in home.text
    assert httpx.get(frontend.url + f"/page/{PAGES}").status_code == 404
    css = httpx.get(frontend.url + "/static/site.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")


def test_sitemap_lists_every_page(frontend):
    r = httpx.get(frontend.url + "/sitemap.xml")
    assert r.status_code == 200 and "<urlset" in r.text
    locs = re.findall(r"<loc>(.*?)</loc>", r.text)
    assert locs == [frontend.url + "/"] + [f"{frontend.url}/page/{n}" for n in range(PAGES)]


def test_frontend_without_backend_does_not_cache(start):
    server = start("frontend", PHOENIX_LB_BACKEND=f"{HOST}:{free_port()}")
    for _ in range(2):
        r = httpx.get(server.url + "/page/2")
        assert r.status_code == 200 and r.headers["X-Cache"] == "MISS"
        assert "articles unavailable" in r.text


def test_health_fail_gives_500(start):
    server = start("backend", expect=500, HEALTH_FAIL="1")
    r = httpx.get(server.url + "/healthz")
    assert r.status_code == 500 and r.json()["status"] != "ok"


def test_unknown_role_exits_2(tmp_path):
    root = tmp_path / "server"
    shutil.copytree(EXAMPLE, root)
    env = {**CLEAN_ENV, "PHOENIX_ROLE": "nope"}
    proc = subprocess.run([PYTHON, "app/server.py"], cwd=root, env=env,
                          capture_output=True, text=True, timeout=15)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1


def test_sigterm_exits_zero(start):
    server = start("edit")
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=10) == 0
