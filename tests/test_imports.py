"""The import budget (issue 15): each command loads only what it uses, so `phoenix --help`
answers at once and a command never pays for another's libraries.

Each command runs in a fresh interpreter (what a user's shell does); the modules it
loaded are read from `sys.modules` when it is done. No timing here: the times are in
bench/, these are the causes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from phoenixctl.example import EXAMPLES, init_example

# Loaded for one command, they slow every other: none belongs to the help of any command.
CLOUD_AND_NETWORK = ("boto3", "botocore", "openstack", "keystoneauth1", "aiohttp", "httpx", "lxml")
HELP_NEVER = CLOUD_AND_NETWORK + (
    "sqlalchemy", "pydantic", "yaml", "jsonschema", "psutil", "cryptography", "rich",
    "phoenixctl.spec.models", "phoenixctl.state", "phoenixctl.engine.commands", "phoenixctl.drivers",
)
# validate reads the spec (pydantic, yaml) and checks the provider; it never opens the state store
# (on OpenStack it reads the catalogue, only when a cloud is configured: none is here)
VALIDATE_NEVER = CLOUD_AND_NETWORK + ("sqlalchemy", "phoenixctl.state", "phoenixctl.engine.commands", "rich.progress")
# reading commands on the local provider: the store and the local drivers, nothing of AWS, the
# load generator or the crawler (no server answers a health check here: httpx is not needed)
LOCAL_READ_NEVER = CLOUD_AND_NETWORK + ("rich.progress",)

RUN = """
import json, sys
from phoenixctl.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[2])]
with open(sys.argv[1], "w") as out:
    json.dump({"codes": codes, "modules": sorted(sys.modules)}, out)
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    directory = tmp_path_factory.mktemp("example")
    init_example(directory)
    return directory


def loaded_by(tmp_path: Path, cwd: Path, *argvs: list[str], code: int = 0) -> set[str]:
    """The modules a fresh interpreter holds after `phoenix ARGV` for each argv in turn, each
    exiting with `code`."""
    report = tmp_path / "modules.json"
    run = [sys.executable, "-c", RUN, str(report), json.dumps(argvs)]
    done = subprocess.run(run, cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and report.exists(), done.stderr
    result = json.loads(report.read_text())
    assert result["codes"] == [code] * len(argvs), done.stderr
    return set(result["modules"])


def loaded_of(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    """Which forbidden packages (or their submodules) are among `modules`."""
    return sorted(name for name in forbidden if any(m == name or m.startswith(name + ".") for m in modules))


def test_help_loads_no_library_of_any_command(tmp_path, project):
    assert loaded_of(loaded_by(tmp_path, project, ["--help"]), HELP_NEVER) == []


def test_every_commands_help_together_loads_none_either(tmp_path, project):
    from phoenixctl.cli import app

    helps = [[name, "--help"] for name in app.commands] + [["secrets", "tls", "--help"]]
    assert len(helps) > 20
    assert loaded_of(loaded_by(tmp_path, project, *helps), HELP_NEVER) == []


@pytest.mark.parametrize("example", EXAMPLES)
def test_validate_loads_the_spec_but_not_the_store_nor_the_network(tmp_path, example):
    """On the AWS example too: checking what the provider can do never makes a client (boto3)."""
    init_example(tmp_path / "project", example)
    modules = loaded_by(tmp_path, tmp_path / "project", ["validate"])
    assert "phoenixctl.spec.models" in modules  # it did validate
    assert loaded_of(modules, VALIDATE_NEVER) == []


# (command, exit code, what else it never loads) on the example's ci, which has no server
# yet (plan exits 1: servers are missing). status renders no user-data, and the example's
# has no module of its own for the schema check (no jsonschema); --json is written as it
# is: no rich at all (its JSON highlighter took seconds on a 10,000-server plan).
LOCAL_READS = [
    (["status", "ci", "--json"], 0, ("jsonschema", "rich")),
    (["plan", "ci", "--json"], 1, ("jsonschema", "rich")),
    (["rotate", "ci", "--dry-run", "--json"], 0, ("rich.table",)),
    (["history", "ci", "--json"], 0, ("jsonschema", "rich")),
]


@pytest.mark.parametrize("argv, code, also_never", LOCAL_READS, ids=[" ".join(argv) for argv, _, _ in LOCAL_READS])
def test_reads_on_the_local_provider_load_nothing_of_aws_or_the_network(tmp_path, project, argv, code, also_never):
    modules = loaded_by(tmp_path, project, [*argv, "-f", str(project / "phoenix.yaml")], code=code)
    assert "phoenixctl.state" in modules  # it did read the store
    assert loaded_of(modules, LOCAL_READ_NEVER + also_never) == []


def test_a_submodule_counts_as_its_package():
    assert loaded_of({"httpx._client", "richer", "phoenixctl.spec"}, HELP_NEVER) == ["httpx"]


HEAP_PROBE = """
import gc, sys
from phoenixctl import heap
from phoenixctl.engine import Project
heap.defer_collection()
assert not gc.isenabled()
project = Project(sys.argv[1])
print(gc.isenabled(), gc.get_freeze_count() > 0)
project.close()
"""


def test_the_script_collects_again_once_its_project_is_open(project):
    """`phoenix` defers garbage collection while a command loads its libraries (heap.py); a
    long command (watch, web) must not run without it: opening the project turns it back on,
    with what the libraries made frozen out of later collections."""
    done = subprocess.run(
        [sys.executable, "-c", HEAP_PROBE, str(project / "phoenix.yaml")], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True"]


def test_the_script_exits_with_the_commands_code(project):
    """`entry` (the console script) hands main's exit code to the shell, on success and on a
    refusal alike."""
    script = Path(sys.executable).parent / "phoenix"
    ok = subprocess.run([str(script), "status", "ci", "--json"], cwd=project, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and json.loads(ok.stdout)["environment"] == "ci", ok.stderr
    refused = subprocess.run([str(script), "status", "nowhere"], cwd=project, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and "nowhere" in refused.stderr and "Traceback" not in refused.stderr
