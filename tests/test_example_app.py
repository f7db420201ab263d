"""Integration tests for the example website (src/phoenixctl/examples/website).

Each server runs as a real subprocess from a private copy of the example
directory, exactly as Phoenix starts it: `python app/server.py` in the copy.
"""

import datetime
import hashlib
import http.server
import ipaddress
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import isolation_unavailable, passable
from phoenixctl.drivers.local.identity import server_identity

EXAMPLE = Path(__file__).resolve().parents[1] / "src" / "phoenixctl" / "examples" / "website"
PYTHON = Path(__file__).resolve().parents[1] / ".venv" / "bin" / "python"
PYTHON = str(PYTHON) if PYTHON.exists() else sys.executable
HOST = "127.0.0.1"
PAGES = 5
# The servers' configuration must come from the tests only, not from the caller's shell.
CLEAN_ENV = {k: v for k, v in os.environ.items()
             if not k.startswith(("PHOENIX_", "TLS_"))
             and k not in ("HEALTH_FAIL", "PAGES", "RENDER_DELAY_MS")}


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

    def _start(role, expect=200, root=None, **env):
        if root is None:
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


# ---------------------------------------------------------------- TLS

def write_self_signed(directory, name="tls"):
    """Self-signed certificate for localhost / 127.0.0.1; returns (cert_path, key_path).

    Uses the `cryptography` package; if this interpreter lacks it, falls back to the
    openssl command line (same subject, SAN and key type).
    """
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    except ImportError:
        if not shutil.which("openssl"):
            pytest.skip("neither the cryptography package nor openssl is available")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "2", "-subj", "/CN=localhost",
             "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
             "-addext", "extendedKeyUsage=serverAuth",
             "-keyout", str(key_path), "-out", str(cert_path)],
            check=True, capture_output=True)
        key_path.chmod(0o600)
        return cert_path, key_path
    key = ec.generate_private_key(ec.SECP256R1())
    name_ = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder()
            .subject_name(name_).issuer_name(name_)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address(HOST))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=True,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    key_path.chmod(0o600)
    return cert_path, key_path


def trusting(cert_path):
    """Client SSL context trusting exactly the given self-signed certificate."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=str(cert_path))
    # Python >= 3.13 sets this by default; set it everywhere so the test cert is held to it.
    context.verify_flags |= getattr(ssl, "VERIFY_X509_STRICT", 0)
    return context


def tls_root(tmp_path_factory, label):
    """Private copy of the example with a fresh certificate and key written into it."""
    root = tmp_path_factory.mktemp(label) / "server"
    shutil.copytree(EXAMPLE, root)
    cert, key = write_self_signed(root)
    return root, cert, key


def start_tls(start, tmp_path_factory, label, **env):
    root, cert, key = tls_root(tmp_path_factory, label)
    tls_port = free_port()
    # Relative paths: the server resolves them from its root (its current directory).
    server = start("frontend", root=root, TLS_CERT_FILE=cert.name, TLS_KEY_FILE=key.name,
                   TLS_PORT=str(tls_port), **env)
    server.tls_port, server.cert = tls_port, cert
    server.tls_url = f"https://{HOST}:{tls_port}"
    return server


def run_once(root, popen=None, **env):
    """Run the server to completion (it is expected to refuse to start); `popen`: as whom."""
    full_env = {**CLEAN_ENV, "PHOENIX_ROLE": "frontend", "PHOENIX_ADDRESS": HOST,
                "PHOENIX_PORT": str(free_port()), "PHOENIX_SERVER_ID": "tls-bad", **env}
    return subprocess.run([PYTHON, "app/server.py"], cwd=root, env=full_env,
                          capture_output=True, text=True, timeout=15, **(popen or {}))


@pytest.fixture(scope="module")
def tls_frontend(start, tmp_path_factory):
    return start_tls(start, tmp_path_factory, "tls-frontend")


def test_tls_start_line_names_both_listeners(tls_frontend):
    line = tls_frontend.proc.stdout.readline()
    assert line == (f"{tls_frontend.id} frontend 1.0.0 listening on {HOST}:{tls_frontend.port}"
                    f" (https {HOST}:{tls_frontend.tls_port})\n")


def test_tls_key_file_is_private(tls_frontend):
    key = tls_frontend.root / "tls.key"
    assert key.stat().st_mode & 0o777 == 0o600


def test_https_answers_with_x_tls_on(tls_frontend):
    with httpx.Client(base_url=tls_frontend.tls_url, verify=trusting(tls_frontend.cert)) as client:
        r = client.get("/")
        assert r.status_code == 200
        assert r.headers["X-TLS"] == "on"
        assert r.headers["X-Server"] == tls_frontend.id
        assert 'href="/page/1"' in r.text
        assert client.get("/healthz").headers["X-TLS"] == "on"
        missing = client.get(f"/page/{PAGES}")  # errors carry the header too
        assert missing.status_code == 404 and missing.headers["X-TLS"] == "on"
        sitemap = client.get("/sitemap.xml").text
        assert f"<loc>{tls_frontend.tls_url}/</loc>" in sitemap


def test_https_is_verified_not_just_encrypted(tls_frontend):
    # The default trust store does not know the self-signed certificate.
    with pytest.raises(httpx.ConnectError):
        httpx.get(tls_frontend.tls_url + "/healthz")
    # Plain HTTP spoken to the TLS port gets no HTTP answer.
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://{HOST}:{tls_frontend.tls_port}/healthz", timeout=3)


def test_https_serves_the_generated_certificate(tls_frontend):
    served = ssl.get_server_certificate((HOST, tls_frontend.tls_port), timeout=5)
    generated = tls_frontend.cert.read_text()
    served_der, generated_der = ssl.PEM_cert_to_DER_cert(served), ssl.PEM_cert_to_DER_cert(generated)
    assert hashlib.sha256(served_der).hexdigest() == hashlib.sha256(generated_der).hexdigest()


def test_http_still_served_with_x_tls_off(tls_frontend):
    r = httpx.get(tls_frontend.url + "/")
    assert r.status_code == 200
    assert r.headers["X-TLS"] == "off"
    assert httpx.get(tls_frontend.url + "/healthz").headers["X-TLS"] == "off"


def test_plain_server_says_x_tls_off(backend):
    assert httpx.get(backend.url + "/healthz").headers["X-TLS"] == "off"


def test_tls_port_missing_exits_2(tmp_path_factory):
    root, cert, key = tls_root(tmp_path_factory, "tls-noport")
    proc = run_once(root, TLS_CERT_FILE=cert.name, TLS_KEY_FILE=key.name)
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "TLS_PORT" in proc.stderr
    assert proc.stdout == ""  # never announced, never listened


def test_tls_half_configured_exits_2(tmp_path_factory):
    root, cert, _ = tls_root(tmp_path_factory, "tls-half")
    proc = run_once(root, TLS_CERT_FILE=cert.name, TLS_PORT=str(free_port()))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "TLS_KEY_FILE" in proc.stderr


def _other_key(root, key):
    """A valid private key that does not belong to the certificate."""
    _, other = write_self_signed(root, name="other")
    key.write_bytes(other.read_bytes())


def _garbage_key(root, key):
    key.write_text("-----BEGIN PRIVATE KEY-----\nTOPSECRETTOPSECRETTOPSECRET\n"
                   "-----END PRIVATE KEY-----\n")


def _directory_key(root, key):
    key.unlink()
    key.mkdir()


def _unreadable_key(root, key):
    """A key the server's user cannot read. Run as root, Phoenix runs servers as an
    unprivileged uid of their environment (drivers/local/identity.py): the key stays root's
    and 0600, and the server runs as that uid, as Phoenix would start it. Otherwise the key's
    mode is 0 for whoever runs the tests. Returns how to start the server."""
    if os.geteuid() != 0:
        key.chmod(0)
        return {}
    if why := isolation_unavailable():  # root, but no unprivileged uid can run the server here
        pytest.skip(why)
    assert (key.stat().st_uid, key.stat().st_mode & 0o777) == (0, 0o600)
    passable(root)  # the server's uid passes through the test's folders to its root, as to a server's
    return server_identity(root, "ci", "auto").popen()


@pytest.mark.parametrize("spoil", [None, _unreadable_key, _directory_key, _garbage_key, _other_key],
                         ids=["nonexistent", "unreadable", "directory", "garbage", "mismatched"])
def test_bad_tls_key_exits_2_without_leaking_it(tmp_path_factory, spoil):
    root, cert, key = tls_root(tmp_path_factory, "tls-badkey")
    secret = key.read_bytes()
    popen = {}
    if spoil is None:
        key.unlink()
    else:
        popen = spoil(root, key) or {}
    if key.is_file() and os.access(key, os.R_OK):
        secret = key.read_bytes()  # whatever the server was given
    key_path = str(key)  # absolute this time
    proc = run_once(root, popen, TLS_CERT_FILE=cert.name, TLS_KEY_FILE=key_path, TLS_PORT=str(free_port()))
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "TLS_KEY_FILE" in proc.stderr and key_path in proc.stderr
    if spoil is _unreadable_key:
        assert f"cannot read TLS_KEY_FILE={key_path}: Permission denied" in proc.stderr
    body_lines = [line for line in secret.decode().splitlines() if not line.startswith("-----")]
    assert body_lines and not any(line in proc.stderr for line in body_lines)
    assert "PRIVATE KEY" not in proc.stderr and proc.stdout == ""


def test_bad_tls_cert_exits_2(tmp_path_factory):
    root, cert, key = tls_root(tmp_path_factory, "tls-badcert")
    cert.write_text("not a certificate\n")
    proc = run_once(root, TLS_CERT_FILE=cert.name, TLS_KEY_FILE=key.name, TLS_PORT=str(free_port()))
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "TLS_CERT_FILE" in proc.stderr and cert.name in proc.stderr
    assert "not a certificate" not in proc.stderr


class CountingBackend:
    """A stand-in backend on 127.0.0.1 that counts the article-list requests it gets and
    answers 503 (a frontend then renders a degraded page and never caches it). A frontend
    asks it first thing in each uncached page request: a count is a request in flight."""

    def __init__(self):
        self.requests, self.lock = 0, threading.Lock()
        backend = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                with backend.lock:
                    backend.requests += 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer((HOST, 0), Handler)
        self.address = f"{HOST}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def test_tls_sigterm_finishes_in_flight_requests_and_exits_zero(start, tmp_path_factory):
    # Every page takes RENDER_DELAY_MS to render (the backend never lets one be cached).
    with CountingBackend() as backend:
        server = start_tls(start, tmp_path_factory, "tls-sigterm", RENDER_DELAY_MS="1500", PHOENIX_LB_BACKEND=backend.address)
        assert "(https " in server.proc.stdout.readline()
        results = {}

        def fetch(name, url, verify, page):
            try:
                results[name] = httpx.get(f"{url}/page/{page}", verify=verify, timeout=10)
            except Exception as exc:  # reported by the assertions below
                results[name] = exc

        # Two pages: each render holds its own page's lock, so both handlers start at once.
        threads = [threading.Thread(target=fetch, args=("https", server.tls_url, trusting(server.cert), 3)),
                   threading.Thread(target=fetch, args=("http", server.url, True, 4))]
        for t in threads:
            t.start()
        deadline = time.monotonic() + 10
        while backend.requests < 2:  # both requests are now being rendered
            assert time.monotonic() < deadline and not results, (backend.requests, results)
            time.sleep(0.01)
        assert not results  # neither has its answer yet: both are in flight
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=10) == 0
        for t in threads:
            t.join(10)
    assert results["https"].status_code == 200 and results["https"].headers["X-TLS"] == "on"
    assert results["http"].status_code == 200 and results["http"].headers["X-TLS"] == "off"
    assert server.proc.stderr.read() == ""
