"""The dashboard and the static report (issue 22), in a real browser: Debian's headless
Chromium driven by Selenium through Debian's chromium-driver (both installed by `make
setup`; Selenium is given their paths, so it never downloads a driver).

One copy of the example with `ci` up (real servers, real HAProxy) and one `phoenix dashboard`
process (with a token, on loopback) serve the module's tests, in order: the pages show what
`status --json` says, a rotation appears on an open page without a reload, the API answers
in the --json shapes, the token is checked, and `report --html` is one self-contained file
the browser draws. Screenshots go to each test's tmp_path."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Iterator

import httpx
import pytest

from conftest import PHOENIX, brought_up, cli_status, phoenix, wait_for

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
TOKEN = "dashboard-test-token"
ENV = "ci"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists()), reason="Debian's chromium and chromium-driver (make setup installs them)"
)


class Dashboard:
    """A `phoenix dashboard` process: its address, stopped (by its pid) at the end."""

    def __init__(self, spec_path: Path, *args: str):
        self.process = subprocess.Popen(
            [PHOENIX, "dashboard", "--listen", "127.0.0.1:0", *args, "-f", str(spec_path)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        line = self.process.stdout.readline()  # the first line names the address; a failure closes stdout
        match = re.search(r"serving (http://\S+)", line)
        if not match:
            self.stop()
            pytest.fail(f"the dashboard did not start: {line!r} {self.process.stderr.read()!r}")
        self.url = match.group(1)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


@pytest.fixture(scope="module")
def ci(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with brought_up(tmp_path_factory, "dashboard", env=ENV) as spec_path:
        yield spec_path


@pytest.fixture(scope="module")
def dashboard(ci: Path) -> Iterator[Dashboard]:
    served = Dashboard(ci, "--token", TOKEN, "--refresh", "1s")  # a dead server shows within a second or two
    try:
        yield served
    finally:
        served.stop()


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(browser) -> list[dict]:
    return [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]


def shown_servers(browser) -> dict[str, str]:
    """The environment page's servers as the browser shows them: id -> state."""
    rows = browser.execute_script(
        "return Array.from(document.querySelectorAll('#servers tr[data-server-id]'))"
        ".map(r => [r.dataset.serverId, r.cells[4].textContent.trim()]);"
    )
    return dict(rows)


def overview_row(browser, env: str) -> dict:
    """The overview's row of `env`: its text on one line and its link, read in one script (the
    page's live update may replace the row between two WebDriver calls: a stale element)."""
    return browser.execute_script(
        "const row = document.querySelector(`#environments tr[data-environment='${arguments[0]}']`);"
        "const link = row && row.querySelector('a');"
        "return {text: row ? row.innerText.split(/\\s+/).join(' ') : '', href: link ? link.href : null};",
        env,
    )


def test_overview_and_environment_page_show_the_servers_of_status(ci, dashboard, browser, tmp_path):
    browser.get(f"{dashboard.url}?token={TOKEN}")  # the address's token becomes the page's cookie
    row = wait_for(lambda: overview_row(browser, ENV)["href"] and overview_row(browser, ENV), 10, f"the overview's row of {ENV}")
    assert "frontend 1/1" in row["text"]
    browser.save_screenshot(str(tmp_path / "overview.png"))

    browser.get(row["href"])  # where the row's link leads
    wait_for(lambda: browser.find_elements("css selector", "#servers"), 10, "the environment page")
    status = cli_status(ci, ENV)
    assert shown_servers(browser) == {s["id"]: s["state"] for s in status["servers"]}
    assert len(browser.find_elements("css selector", "svg.chart")) >= 2  # ages, and the up's phases per server
    browser.save_screenshot(str(tmp_path / "environment.png"))
    assert console_errors(browser) == []


def test_a_rotation_appears_live_on_an_open_page(ci, dashboard, browser, tmp_path):
    browser.get(f"{dashboard.url}environments/{ENV}")
    before = set(shown_servers(browser))
    browser.execute_script("window.notReloaded = true;")
    rotation = subprocess.Popen([PHOENIX, "rotate", ENV, "-f", str(ci)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    seen: set[tuple[str, str]] = set()
    banner_seen = False

    def rotated() -> bool:
        nonlocal banner_seen
        seen.update(shown_servers(browser).items())
        banner_seen = banner_seen or bool(browser.find_elements("css selector", "#running"))
        return rotation.poll() is not None and not browser.find_elements("css selector", "#running")

    wait_for(rotated, 120, "the rotation to end on the page", interval=0.2)
    assert rotation.returncode == 0, rotation.stderr.read()
    after = {s["id"]: s["state"] for s in cli_status(ci, ENV)["servers"]}
    wait_for(lambda: shown_servers(browser) == after, 15, "the page to show the servers of status --json")
    assert not before & set(after)  # every server replaced
    assert browser.execute_script("return window.notReloaded === true;")  # followed in place, never reloaded
    # it was watched as it happened: the running operation, or a new server before it served
    assert banner_seen or any(state != "in_service" for server, state in seen if server not in before)
    browser.save_screenshot(str(tmp_path / "after-rotation.png"))
    assert console_errors(browser) == []


def test_the_api_answers_in_the_shapes_of_the_json_outputs(ci, dashboard):
    auth = {"Authorization": f"Bearer {TOKEN}"}
    status = httpx.get(f"{dashboard.url}api/environments/{ENV}/status", headers=auth, timeout=30).json()
    expected = cli_status(ci, ENV)
    strip = lambda servers: [{k: v for k, v in s.items() if k != "age_s"} for s in servers]  # noqa: E731
    assert strip(status["servers"]) == strip(expected["servers"])
    assert status["load_balancers"] == expected["load_balancers"]
    history = httpx.get(f"{dashboard.url}api/environments/{ENV}/history?limit=5", headers=auth, timeout=30).json()
    cli_history = json.loads(phoenix(ci, "history", ENV, "--limit", "5", "--json").stdout)
    assert history == cli_history
    overview = httpx.get(f"{dashboard.url}api/environments", headers=auth, timeout=30).json()
    summary = next(e for e in overview["environments"] if e["environment"] == ENV)
    assert summary["last_operation"]["id"] == cli_history[0]["id"]
    assert summary["last_drill"] is None  # no drill ran: nothing shown
    assert httpx.get(f"{dashboard.url}api/environments/nowhere/status", headers=auth, timeout=30).status_code == 404


@pytest.mark.parametrize("path", ["", "environments/ci", "api/environments", "static/live.js"])
def test_every_request_must_present_the_token(dashboard, path):
    url = dashboard.url + path
    assert httpx.get(url, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Bearer wrong-token-x"}, timeout=30).status_code == 401
    assert httpx.get(url, params={"token": "wrong-token-x"}, timeout=30).status_code == 401
    assert httpx.get(url, cookies={"phoenix_dashboard_token": "wrong"}, timeout=30).status_code == 401
    assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).status_code == 200
    assert httpx.get(url, params={"token": TOKEN}, timeout=30).status_code == 200


def test_without_a_token_it_answers_only_requests_for_a_loopback_host(ci):
    """A page elsewhere that rebinds its name to 127.0.0.1 still sends its own Host: refused."""
    served = Dashboard(ci)
    try:
        assert httpx.get(served.url + "api/environments", timeout=30).status_code == 200
        assert httpx.get(served.url, headers={"Host": "attacker.example"}, timeout=30).status_code == 403
    finally:
        served.stop()


def test_report_html_is_one_file_with_no_external_reference_that_the_browser_draws(ci, browser, tmp_path):
    out = tmp_path / "artifacts" / "ci.html"
    out.parent.mkdir()
    result = phoenix(ci, "report", ENV, "--html", str(out), "--since", "7d")
    assert result.returncode == 0, result.stderr
    assert [p.name for p in out.parent.iterdir()] == ["ci.html"]
    text = out.read_text()
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.IGNORECASE)
    assert "<script" not in text and "<link" not in text
    shutil.copy(out, tmp_path / "copy.html")  # nothing beside it is needed
    browser.get((tmp_path / "copy.html").as_uri())
    sizes = browser.execute_script(
        "return Array.from(document.querySelectorAll('svg.chart')).map(s => s.getBoundingClientRect().width * s.getBoundingClientRect().height);"
    )
    assert len(sizes) >= 3 and all(size > 1000 for size in sizes)  # ages, time to live, phases: drawn
    assert set(shown_servers(browser)) == {s["id"] for s in cli_status(ci, ENV)["servers"]}
    browser.save_screenshot(str(tmp_path / "report.png"))
    assert console_errors(browser) == []


def test_the_overview_shows_the_last_successful_drill(ci, dashboard):
    """A failed drill after it does not hide it (drills are `phoenix drill`'s operations)."""
    from phoenixctl.state import StateStore

    store = StateStore(ci.parent / ".phoenix" / "state.db")
    try:
        store.start_operation("op-drill-passed", ENV, "drill")
        store.finish_operation("op-drill-passed", "succeeded", "rebuilt from nothing")
        store.start_operation("op-drill-failed", ENV, "drill")
        store.finish_operation("op-drill-failed", "failed", "a gate failed")
    finally:
        store.close()
    overview = httpx.get(f"{dashboard.url}api/environments", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30).json()
    summary = next(e for e in overview["environments"] if e["environment"] == ENV)
    assert summary["last_drill"]["id"] == "op-drill-passed"
    assert summary["last_operation"]["id"] == "op-drill-failed"


def test_a_dead_server_shows_as_unhealthy_live(ci, dashboard, browser, tmp_path):
    """Last in the module: it kills one of the environment's servers (by its recorded pid)."""
    import os
    import signal

    browser.get(dashboard.url)
    browser.execute_script("window.notReloaded = true;")
    victim = next(s for s in cli_status(ci, ENV)["servers"] if s["role"] == "edit")
    os.kill(victim["pid"], signal.SIGKILL)

    def shown_unhealthy() -> bool:
        text = overview_row(browser, ENV)["text"]
        return victim["id"] in text and "edit 0/1" in text

    wait_for(shown_unhealthy, 20, "the overview to show the dead server", interval=0.2)
    assert browser.execute_script("return window.notReloaded === true;")
    browser.save_screenshot(str(tmp_path / "unhealthy.png"))
    assert console_errors(browser) == []


def run_phoenix(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """A command that must refuse at once (it would otherwise serve until stopped: the timeout fails it)."""
    return subprocess.run([PHOENIX, *args], cwd=cwd, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(
    "args, says",
    [
        (["--listen", "0.0.0.0:8765"], "--listen 0.0.0.0:8765 is beyond loopback: give --token or --token-file"),
        (["--listen", "192.0.2.1:8765"], "is beyond loopback"),
        (["--listen", "nowhere"], "is not HOST:PORT"),
        (["--listen", "127.0.0.1:99999"], "is not a port"),
        (["--token", "short"], "--token: at least 8 characters"),
        (["--refresh", "often"], "--refresh"),
        (["--token-file", "empty.txt"], "--token-file empty.txt:1: the file holds no token"),
    ],
)
def test_bad_options_are_refused_with_one_line_before_anything_listens(tmp_path, args, says):
    (tmp_path / "empty.txt").write_text("\n")
    result = run_phoenix("dashboard", *args, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == "" and len(result.stderr.strip().splitlines()) == 1 and says in result.stderr


def test_report_refuses_a_bad_period_and_a_missing_folder(tmp_path):
    for args, says in ((["--since", "a week"], "--since"), (["--html", str(tmp_path / "no" / "r.html")], "is not a folder")):
        full = ["report", "ci", *(args if "--html" in args else ["--html", str(tmp_path / "r.html"), *args])]
        result = run_phoenix(*full, cwd=tmp_path)
        assert result.returncode == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


def test_everything_from_the_store_is_escaped():
    from phoenixctl.web.pages import render_environment

    hostile = '<img src=x onerror="alert(1)">'
    server = {
        "id": hostile, "role": "web", "address": hostile, "image": hostile, "state": hostile, "in_service": False,
        "launched_at": "2026-01-01T00:00:00Z", "age_s": 5.0, "fingerprint": "f", "drift": [hostile], "max_age_s": 60.0,
    }
    operation = {
        "id": hostile, "kind": hostile, "status": "failed", "started_at": hostile, "seconds": 1.0, "summary": hostile,
        "phases": {}, "warmups": [], "time_to_live_s": 2.0,
        "timeline": [{"server": hostile, "phase": hostile, "ok": False, "start_s": 0.0, "seconds": 1.0}],
    }
    release = {
        "operation_id": hostile, "kind": hostile, "reason": hostile, "created_at": hostile, "images": {hostile: hostile},
        "baked_at": None, "live_at": None, "time_to_live_s": 3.0,
    }
    page = {
        "environment": hostile, "mode": hostile, "generated_at": hostile, "since": hostile, "running": hostile,
        "status": {"environment": hostile, "servers": [server], "load_balancers": [
            {"role": hostile, "address": hostile, "alive": True, "members_up": 1, "pid": 1, "tls_address": hostile}
        ]},
        "roles": {}, "releases": [release], "operations": [operation],
    }
    for live in (True, False):
        html = render_environment(page, hostile, live=live)
        assert "<img" not in html and "&lt;img src=x" in html
