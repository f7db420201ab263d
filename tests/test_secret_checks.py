"""Secret references checked by `phoenix validate` (issue 12), and what a secret's value is.

`validate` checks every reference it can without reading a value: a file secret exists, is
a regular file and is private; a variable secret is set; every secret a layer uses is
declared by each environment the layer reaches. Secret commands run only with
`--resolve-secrets`. Errors are one line, exit code 2, and never show a value."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from conftest import copy_example, phoenix
from phoenixctl.boot import userdata
from phoenixctl.engine import Executor, Project


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
    return copy_example(tmp_path_factory, "secret-checks", cached_layers=False)  # validate must write nothing


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


# --- phoenix validate: every reference it can check without reading a value -----------------


def validate(project: Path, *args: str):
    """`phoenix validate` as a subprocess; it must start nothing and create no .phoenix/."""
    result = phoenix(project, "validate", *args)
    assert not (project.parent / ".phoenix").exists()
    return result


def assert_one_line_error(result, *fragments: str) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr, result.stderr
    assert result.stdout == ""
    for fragment in fragments:
        assert fragment in result.stderr, (fragment, result.stderr)
    return result.stderr


def declare(project: Path, env: str, **secrets) -> None:
    edit_spec(project, lambda d: d["environments"][env]["secrets"].update(secrets))


def test_validate_missing_secret_file_names_the_line_and_how_to_fix_it(project: Path):
    declare(project, "ci", api_token={"file": "secrets/ci/api_token"})
    result = validate(project)
    assert_one_line_error(
        result,
        f"phoenix.yaml:{line_of(project, 'api_token:')}: environments.ci.secrets.api_token: file secrets/ci/api_token does not exist",
        "(create it with mode 0600, or point the reference elsewhere)",  # not a TLS hint for a token
    )
    assert "phoenix secrets tls" not in result.stderr


def test_validate_missing_tls_file_keeps_the_tls_hint(project: Path):
    (project.parent / "secrets" / "production" / "tls.crt").unlink()
    assert_one_line_error(
        validate(project),
        f"phoenix.yaml:{line_of(project, 'tls_cert: {file: secrets/production/tls.crt}')}:",
        "environments.production.secrets.tls_cert: file secrets/production/tls.crt does not exist",
        "(for a TLS pair: phoenix secrets tls production --host NAME)",
    )


def test_validate_secret_file_that_is_a_directory(project: Path):
    (project.parent / "secrets" / "ci" / "api_token").mkdir()
    declare(project, "ci", api_token={"file": "secrets/ci/api_token"})
    assert_one_line_error(validate(project), "environments.ci.secrets.api_token: file secrets/ci/api_token is a directory")


def test_validate_warns_about_a_secret_file_readable_by_others(project: Path):
    write_private(project.parent / "secrets" / "ci" / "api_token", b"s3cret-token-value\n", mode=0o644)
    declare(project, "ci", api_token={"file": "secrets/ci/api_token"})
    result = validate(project)
    # a warning, not an error: the file is already exposed where it lies; refusing to deploy protects nothing
    assert result.returncode == 0, result.stderr
    assert "ok" in result.stdout
    warning = result.stderr.strip()
    assert len(warning.splitlines()) == 1, warning
    assert f"phoenix.yaml:{line_of(project, 'api_token:')}: environments.ci.secrets.api_token:" in warning
    assert "readable by group or others (mode 0644)" in warning and "chmod 600 secrets/ci/api_token" in warning
    assert "s3cret" not in result.stdout + result.stderr
    os.chmod(project.parent / "secrets" / "ci" / "api_token", 0o600)
    assert validate(project).stderr == ""


def test_validate_unset_secret_variable(project: Path, monkeypatch):
    monkeypatch.delenv("PHOENIX_TEST_API_TOKEN", raising=False)
    declare(project, "ci", api_token={"env": "PHOENIX_TEST_API_TOKEN"})
    assert_one_line_error(
        validate(project),
        f"phoenix.yaml:{line_of(project, 'api_token:')}: environments.ci.secrets.api_token:",
        "environment variable PHOENIX_TEST_API_TOKEN is not set",
    )
    monkeypatch.setenv("PHOENIX_TEST_API_TOKEN", "s3cret-from-env")
    result = validate(project)
    assert result.returncode == 0, result.stderr
    assert "s3cret" not in result.stdout + result.stderr


# A secret referenced by a layer that some environment does not declare. Production
# declares api_token; ci does not (and nobody declares `nope`).
# (where the reference goes, how to add it, the text of its line, what the error says)
UNDECLARED = {
    "defaults env": (
        lambda d: d["defaults"]["env"].update(API_TOKEN={"secret": "api_token"}), "API_TOKEN:",
        ["defaults.env.API_TOKEN", "secret 'api_token' belongs to environment production", "servers of environment ci"],
    ),
    "role files": (
        lambda d: d["roles"]["backend"].update(files=[{"path": "etc/api_token", "secret": "api_token"}]), "path: etc/api_token",
        ["roles.backend.files.0", "secret 'api_token' belongs to environment production", "backend servers of environment ci"],
    ),
    "environment env": (
        lambda d: d["environments"]["ci"]["env"].update(API_TOKEN={"secret": "nope"}), "API_TOKEN:",
        ["environments.ci.env.API_TOKEN", "unknown secret 'nope' (environment ci declares: tls_cert, tls_key)"],
    ),
    "environment x role files": (
        lambda d: d["environments"]["production"]["roles"]["frontend"].update(files=[{"path": "etc/nope", "secret": "nope"}]),
        "path: etc/nope",
        ["environments.production.roles.frontend.files.0", "unknown secret 'nope' (environment production declares:"],
    ),
}


@pytest.mark.parametrize("case", UNDECLARED)
def test_validate_secret_a_layer_uses_but_an_environment_does_not_declare(project: Path, case):
    add, line_text, fragments = UNDECLARED[case]
    write_private(project.parent / "secrets" / "production" / "api_token", b"token")

    def change(data):
        data["environments"]["production"]["secrets"]["api_token"] = {"file": "secrets/production/api_token"}
        add(data)

    edit_spec(project, change)
    assert_one_line_error(validate(project), f"phoenix.yaml:{line_of(project, line_text)}:", *fragments)


def test_validate_follows_the_layers_a_reference_replaced_in_an_environment_is_fine(project: Path):
    write_private(project.parent / "secrets" / "production" / "api_token", b"token")

    def change(data):
        data["environments"]["production"]["secrets"]["api_token"] = {"file": "secrets/production/api_token"}
        data["roles"]["backend"]["env"] = {"API_TOKEN": {"secret": "api_token"}}
        for env in ("ci", "ci-legacy"):
            data["environments"][env]["roles"]["backend"] = {"count": 1, "env": {"API_TOKEN": "not-a-secret-in-ci"}}

    edit_spec(project, change)
    result = validate(project)
    assert result.returncode == 0, result.stderr


def test_secret_commands_run_only_with_resolve_secrets(project: Path):
    marker = project.parent / "command-ran"
    declare(project, "ci", api_token={"command": "touch command-ran; echo s3cret-from-command"})
    result = validate(project)
    assert result.returncode == 0, result.stderr
    assert not marker.exists()  # not run without the flag
    assert "1 command(s) not run (--resolve-secrets runs them)" in result.stdout
    result = validate(project, "--resolve-secrets")
    assert result.returncode == 0, result.stderr
    assert marker.exists() and "secrets: 7 resolved" in result.stdout  # three TLS pairs, and ci's command
    assert "s3cret" not in result.stdout + result.stderr


def test_failing_secret_command_is_reported_only_with_resolve_secrets(project: Path):
    declare(project, "ci", db_password={"command": "echo hunter2-partial; echo hunter2-on-stderr >&2; exit 3"})
    assert validate(project).returncode == 0  # not run: nothing to say about it
    error = assert_one_line_error(
        validate(project, "--resolve-secrets"),
        f"phoenix.yaml:{line_of(project, 'db_password:')}: environments.ci.secrets.db_password: command exited 3",
    )
    assert "hunter2" not in error


def test_secret_command_with_no_output_is_reported_with_resolve_secrets(project: Path):
    declare(project, "ci", db_password={"command": "echo"})  # a newline only: empty once it is stripped
    assert_one_line_error(validate(project, "--resolve-secrets"), "environments.ci.secrets.db_password: the secret is empty")
