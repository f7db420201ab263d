"""Least privilege on the local provider (issue 13): when phoenix runs as root, each
environment's servers run as an unprivileged uid of their own and HAProxy as nobody, so a
`ci` server reads neither another environment's secrets nor Phoenix's own state.

Real servers and balancers; what a server may read is checked with the uid its process
really runs as (read from the process), by running `cat` as that uid."""

from __future__ import annotations

import subprocess
from pathlib import Path

import psutil
import pytest

from conftest import brought_up, cli_status, destroy_quietly, isolation_unavailable, phoenix

pytestmark = [pytest.mark.slow, pytest.mark.skipif(bool(isolation_unavailable()), reason=isolation_unavailable() or "-")]


def readable_by(uid: int, path: Path) -> bool:
    result = subprocess.run(["cat", str(path)], user=uid, group=uid, extra_groups=[], capture_output=True, timeout=10)
    return result.returncode == 0


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    with brought_up(tmp_path_factory, "privilege") as spec_path:
        try:
            assert phoenix(spec_path, "up", "ci").returncode == 0
            yield spec_path
        finally:
            destroy_quietly(spec_path, "ci")


def uids_of(spec_path: Path, env: str) -> set[int]:
    return {psutil.Process(s["pid"]).uids().real for s in cli_status(spec_path, env)["servers"]}


def test_each_environment_runs_as_its_own_unprivileged_uid(both: Path):
    ci, production = uids_of(both, "ci"), uids_of(both, "production")
    assert len(ci) == 1 and len(production) == 1 and ci != production
    assert 0 not in ci | production
    for lb in cli_status(both, "ci")["load_balancers"] + cli_status(both, "production")["load_balancers"]:
        assert psutil.Process(lb["pid"]).uids().effective == 65534, lb  # HAProxy dropped to nobody


def test_a_ci_server_cannot_read_production_secrets_or_phoenix_state(both: Path):
    ci_uid = next(iter(uids_of(both, "ci")))
    project, workdir = both.parent, both.parent / ".phoenix"
    ci_server = next(s for s in cli_status(both, "ci")["servers"] if s["role"] == "frontend")
    production_server = next(s for s in cli_status(both, "production")["servers"] if s["role"] == "frontend")
    assert readable_by(ci_uid, Path(ci_server["root"]) / "tls" / "key.pem")  # its own key: yes
    forbidden = [
        project / "secrets" / "production" / "tls.key",  # the project's secret files
        Path(production_server["root"]) / "tls" / "key.pem",  # what production's servers were given
        Path(production_server["root"]) / "app" / "server.py",  # anything of another environment's servers
        workdir / "state.db",
        workdir / "secret.key",
        next((workdir / "logs" / "production" / "frontend").glob("*.log")),
    ]
    for path in forbidden:
        assert path.exists(), path
        assert not readable_by(ci_uid, path), path


def test_persistent_data_is_the_environments_own(both: Path):
    """The edit server writes articles into its environment's persistent folder as its uid."""
    import httpx

    lbs = {lb["role"]: lb["address"] for lb in cli_status(both, "ci")["load_balancers"]}
    assert httpx.put(f"http://{lbs['edit']}/api/articles/owned", content="by ci").status_code == 201
    article = both.parent / ".phoenix" / "persistent" / "ci" / "content" / "owned.txt"
    assert article.stat().st_uid == next(iter(uids_of(both, "ci")))
    production_uid = next(iter(uids_of(both, "production")))
    assert not readable_by(production_uid, article)
