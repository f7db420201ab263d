"""Shared fixtures and helpers for the integration tests.

Everything here is real: copies of the example project, real server processes, real
HAProxy. Waits poll with a deadline; whatever a fixture starts, its finalizer destroys,
even when the test failed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, TypeVar

import psutil
import pytest

import phoenixctl
from fakes import register as register_fake_provider
from phoenixctl.example import init_example
from phoenixctl.engine import Executor, OperationResult, Project

register_fake_provider()  # `provider: fake` for the engine tests

T = TypeVar("T")

EXAMPLE_DIR = Path(phoenixctl.__file__).resolve().parent / "examples" / "website"

# Desired servers per role, as the example's phoenix.yaml says.
PRODUCTION_COUNTS = {"frontend": 3, "backend": 2, "edit": 1}
CI_COUNTS = {"frontend": 1, "backend": 1, "edit": 1}


def pytest_configure(config: pytest.Config) -> None:
    """Run as root, Phoenix runs each environment's servers as an unprivileged uid, which must
    pass through the folders above a project. pytest's own temporary folders are 0700 and
    reset to it by every session, so the suite gets a base of its own (unique to this run,
    removed when it ends), whose folders tests make passable (0711) with `passable`."""
    if os.geteuid() == 0 and not config.option.basetemp and not hasattr(config, "workerinput"):
        base = Path(tempfile.mkdtemp(prefix="phoenix-tests-"))
        os.chmod(base, 0o711)
        config.option.basetemp = str(base / "tmp")
        config.add_cleanup(lambda: shutil.rmtree(base, ignore_errors=True))


def isolation_unavailable() -> str:
    """Why servers cannot run as an unprivileged uid here ('' when they can): not root, or a
    folder above this checkout closed to others (a clone in a 0700 folder): Phoenix then runs
    them as root (provider.server_user: auto), and what only isolation shows cannot be shown."""
    from phoenixctl.drivers.local.identity import unreachable_by_others

    if os.geteuid() != 0:
        return "servers change uid only when phoenix runs as root"
    blocked = unreachable_by_others(Path(sys.executable))
    return f"{blocked} keeps an unprivileged uid from the interpreter {sys.executable}" if blocked else ""


def passable(path: Path) -> Path:
    """Let unprivileged servers pass through `path` and the test folders above it (0711:
    nothing can be listed or read there but what is readable by all)."""
    path = Path(path)
    for folder in [path, *path.parents]:
        if folder == Path(tempfile.gettempdir()) or not folder.name:
            break
        if folder.is_dir() and folder.stat().st_uid == os.geteuid():
            os.chmod(folder, os.stat(folder).st_mode | 0o011)
    return path


@pytest.fixture(autouse=True)
def _passable_tmp_path(request: pytest.FixtureRequest) -> None:
    if "tmp_path" in request.fixturenames:
        passable(request.getfixturevalue("tmp_path"))


def copy_example(tmp_path_factory: pytest.TempPathFactory, name: str, cached_layers: bool = True) -> Path:
    """A private copy of the example project; returns the path of its phoenix.yaml. With
    `cached_layers`, its layer cache holds the dependency layer the suite baked once (hard
    links, as a bake keeps them): each test's first bake then runs only the code layer."""
    target = passable(tmp_path_factory.mktemp(name)) / "website"
    init_example(target)  # the example plus a TLS pair per environment
    if cached_layers:
        layers = target / ".phoenix" / "images" / "layers"
        for folder in (target / ".phoenix", layers.parent, layers):
            folder.mkdir(mode=0o711 if folder.name == ".phoenix" else 0o700)
        for layer in _baked_dependency_layers(tmp_path_factory).iterdir():
            shutil.copytree(layer, layers / layer.name, symlinks=True, copy_function=os.link)
    return target / "phoenix.yaml"


def edited_example(tmp_path: Path, example: str, *edits: tuple[str, str]) -> Path:
    """A copy of examples/EXAMPLE (with a TLS pair per environment) with each (old, new) edit
    made in its phoenix.yaml (each old text must be there); returns that phoenix.yaml."""
    directory = tmp_path / example
    init_example(directory, example)
    spec = directory / "phoenix.yaml"
    text = spec.read_text()
    for old, new in edits:
        assert old in text, old
        text = text.replace(old, new)
    spec.write_text(text)
    return spec


_DEPENDENCY_LAYERS: list[Path] = []


def _baked_dependency_layers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example's layer cache after one bake, made the first time a test asks for it."""
    if not _DEPENDENCY_LAYERS:
        spec_path = copy_example(tmp_path_factory, "baked-once", cached_layers=False)
        project = Project(spec_path)
        try:
            Executor(project).bake()
        finally:
            project.close()
        _DEPENDENCY_LAYERS.append(spec_path.parent / ".phoenix" / "images" / "layers")
    return _DEPENDENCY_LAYERS[0]


def wait_for(check: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    """Poll `check` until it returns something truthy; fail the test at the deadline."""
    expires = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() >= expires:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def process_gone(pid: int, create_time: float | None = None) -> bool:
    """True when `pid` no longer runs: no such process, a zombie, or a recycled pid."""
    try:
        process = psutil.Process(pid)
        if create_time is not None and abs(process.create_time() - create_time) > 0.05:
            return True
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def process_alive(pid: int) -> bool:
    return not process_gone(pid)


PHOENIX = str(Path(sys.executable).parent / "phoenix")


def phoenix(spec_path: Path, *args: str, failpoint: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """The `phoenix` command as a real subprocess (a clean environment, no failpoint unless asked)."""
    env = {k: v for k, v in os.environ.items() if k != "PHOENIX_FAILPOINT"}
    if failpoint:
        env["PHOENIX_FAILPOINT"] = failpoint
    return subprocess.run([PHOENIX, *args, "-f", str(spec_path)], env=env, capture_output=True, text=True, timeout=timeout)


def cli_status(spec_path: Path, env: str = "production") -> dict:
    """`phoenix status ENV --json`, as a separate process sees it."""
    result = phoenix(spec_path, "status", env, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def server_cwd_pids(servers_dir: Path) -> set[int]:
    """Pids of every live process whose working directory is under `servers_dir`."""
    prefix = str(servers_dir.resolve()) + os.sep
    pids = set()
    for process in psutil.process_iter(["pid", "cwd", "status"]):
        cwd = process.info["cwd"]
        if cwd and process.info["status"] != psutil.STATUS_ZOMBIE and (cwd + os.sep).startswith(prefix):
            pids.add(process.info["pid"])
    return pids


@contextmanager
def brought_up(tmp_path_factory: pytest.TempPathFactory, name: str, env: str = "production") -> Iterator[Path]:
    """A copy of the example with `env` up through the CLI; destroyed afterwards whatever happened."""
    spec_path = copy_example(tmp_path_factory, name)
    try:
        result = phoenix(spec_path, "up", env)
        assert result.returncode == 0, result.stderr
        yield spec_path
    finally:
        destroy_quietly(spec_path, env)


def destroy_quietly(spec_path: Path, env: str) -> None:
    """Tear an environment down with a fresh Project (finalizers: whatever state it is in)."""
    project = Project(spec_path)
    try:
        Executor(project, lock_timeout=60).destroy(env)
    finally:
        project.close()


@dataclass
class Environment:
    """A copy of the example brought `up` once, shared by the tests of a module, in order."""

    env: str
    spec_path: Path
    project: Project
    executor: Executor
    up_result: OperationResult

    @property
    def project_dir(self) -> Path:
        return self.spec_path.parent

    @property
    def workdir(self) -> Path:
        return self.project_dir / ".phoenix"

    def status(self) -> dict:
        return self.executor.status(self.env)

    def lb_addresses(self) -> dict[str, str]:
        return {lb["role"]: lb["address"] for lb in self.status()["load_balancers"]}

    def load_urls(self) -> list[str]:
        """URLs that go through all three load balancers."""
        lbs = self.lb_addresses()
        urls = [f"http://{lbs['frontend']}/"] + [f"http://{lbs['frontend']}/page/{n}" for n in range(10)]
        return urls + [f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Environment]:
    """A copy of the example with `production` up (3 frontend, 2 backend, 1 edit)."""
    spec_path = copy_example(tmp_path_factory, "production")
    original_spec = spec_path.read_text()
    project = Project(spec_path)
    executor = Executor(project, lock_timeout=60)
    try:
        result = executor.up("production")
        yield Environment("production", spec_path, project, executor, result)
    finally:
        try:
            # A test may have left an edited spec behind; tear down with the one we brought up.
            spec_path.write_text(original_spec)
            executor.destroy("production")
        finally:
            project.close()


@pytest.fixture
def ci_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh copy of the example for `ci`; whatever ran in it is destroyed afterwards."""
    spec_path = copy_example(tmp_path_factory, "ci")
    try:
        yield spec_path
    finally:
        if (spec_path.parent / ".phoenix" / "state.db").exists():
            destroy_quietly(spec_path, "ci")


@pytest.fixture
def bake_copy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh copy of the example that nothing has been baked in yet."""
    yield copy_example(tmp_path_factory, "bake", cached_layers=False)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator["Cluster"]:
    """One throwaway PostgreSQL cluster for the whole run (tests/pg_cluster.py)."""
    from pg_cluster import Cluster

    cluster = Cluster()
    try:
        yield cluster
    finally:
        cluster.remove()
