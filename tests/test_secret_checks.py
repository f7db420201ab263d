"""Secret references checked by `phoenix validate` (issue 12), and what a secret's value is.

`validate` checks every reference it can without reading a value: a file secret exists, is
a regular file and is private; a variable secret is set; every secret a layer uses is
declared by each environment the layer reaches. Secret commands run only with
`--resolve-secrets`. Errors are one line, exit code 2, and never show a value."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import yaml

from conftest import copy_example, phoenix
from phoenixctl import userdata
from phoenixctl.executor import Executor, Project


def edit_spec(spec_path: Path, change) -> None:
    data = yaml.safe_load(spec_path.read_text())
    change(data)
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def write_private(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    os.chmod(path, mode)


def boot(spec_path: Path, env: str, role: str) -> userdata.ParsedUserData:
    project = Project(spec_path)
    try:
        image_ids = {name: "img-test" for name in project.spec.images}
        return userdata.parse(Executor(project).desired_boot(env, image_ids, {})[role].userdata)
    finally:
        project.close()


@pytest.fixture
def project(tmp_path_factory) -> Path:
    return copy_example(tmp_path_factory, "secret-checks")


# --- a secret's value: its source less one trailing newline ---------------------------------


def test_one_trailing_newline_is_stripped_from_every_source(project: Path, monkeypatch):
    secrets_dir = project.parent / "secrets" / "ci"
    write_private(secrets_dir / "echoed", b"token-from-echo\n")  # what `echo token > file` writes
    write_private(secrets_dir / "crlf", b"token-from-windows\r\n")
    write_private(secrets_dir / "two", b"line\n\n")  # only one newline goes
    write_private(secrets_dir / "bare", b"no-newline")  # left as it is
    monkeypatch.setenv("PHOENIX_TEST_ENV_TOKEN", "token-from-env\n")

    def use(data):
        data["environments"]["ci"]["secrets"].update(
            echoed={"file": "secrets/ci/echoed"}, crlf={"file": "secrets/ci/crlf"}, two={"file": "secrets/ci/two"},
            bare={"file": "secrets/ci/bare"}, from_env={"env": "PHOENIX_TEST_ENV_TOKEN"},
            from_command={"command": "echo token-from-command"},
        )
        data["roles"]["backend"]["env"] = {name.upper(): {"secret": name} for name in ("echoed", "crlf", "from_env", "from_command")}
        data["roles"]["backend"]["files"] = [
            {"path": "etc/echoed", "secret": "echoed"}, {"path": "etc/two", "secret": "two"}, {"path": "etc/bare", "secret": "bare"},
        ]

    edit_spec(project, use)
    parsed = boot(project, "ci", "backend")
    files = {entry["path"].removeprefix("/srv/phoenix/"): entry for entry in parsed.cloud_config["write_files"]}
    variables = userdata.read_env_file(userdata.decode_content(files["phoenix.env"]))
    assert variables["ECHOED"] == "token-from-echo"  # usable as an HTTP header value
    assert variables["CRLF"] == "token-from-windows"
    assert variables["FROM_ENV"] == "token-from-env"
    assert variables["FROM_COMMAND"] == "token-from-command"
    # the same value in a file: a secret has one value wherever it is used
    assert userdata.decode_content(files["etc/echoed"]) == b"token-from-echo"
    assert userdata.decode_content(files["etc/two"]) == b"line\n"
    assert userdata.decode_content(files["etc/bare"]) == b"no-newline"
