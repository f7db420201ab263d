"""Configuration at boot and per-environment secrets (issue 3).

The first half needs no server: layers, user-data rendering, fingerprints and every bad
input (each must stop planning with one line naming the place and start nothing). The
second half brings the example up for real and looks for secrets where they must not be."""

from __future__ import annotations

import base64
import gzip
import json
import os
import sqlite3
import ssl
import stat
from contextlib import closing
from pathlib import Path

import jsonschema
import pytest
import yaml
from cryptography import x509

from conftest import CI_COUNTS, PRODUCTION_COUNTS, copy_example, destroy_quietly
from phoenixctl import cli
from phoenixctl.boot import userdata
from phoenixctl.engine import Executor, Project


def edit_spec(spec_path: Path, change) -> None:
    data = yaml.safe_load(spec_path.read_text())
    change(data)
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False))


def boots(spec_path: Path, env: str, lbs: dict[str, str] | None = None) -> dict:
    project = Project(spec_path)
    try:
        executor = Executor(project)
        image_ids = {name: project.compute.image_id(name, image, project.dir) for name, image in project.spec.images.items()}
        return executor.desired_boot(env, image_ids, lbs or {})
    finally:
        project.close()


def preflight(spec_path: Path, env: str) -> None:
    project = Project(spec_path)
    try:
        Executor(project).preflight(env)
    finally:
        project.close()


def nothing_started(project_dir: Path) -> bool:
    workdir = project_dir / ".phoenix"
    baked = list((workdir / "images").glob("img-*"))  # the layer cache the suite seeds is not a bake of this command
    return not (workdir / "lb").exists() and not (workdir / "servers").exists() and not baked


@pytest.fixture
def project(tmp_path_factory) -> Path:
    return copy_example(tmp_path_factory, "config")


# --- layers ---------------------------------------------------------------------------------


def test_layers_later_wins_and_say_where_values_came_from(project: Path, capsys):
    def layered(data):
        data["defaults"]["env"] = {"A": "defaults", "B": "defaults", "C": "defaults", "D": "defaults"}
        data["roles"]["frontend"]["env"].update({"B": "role", "C": "role", "D": "role"})
        data["environments"]["production"]["env"] = {"C": "environment", "D": "environment"}
        data["environments"]["production"]["roles"]["frontend"]["env"]["D"] = "environment x role"

    edit_spec(project, layered)
    code = cli.main(["config", "production", "frontend", "--json", "-f", str(project)])
    report = json.loads(capsys.readouterr().out)
    assert code == 0
    values = {name: (entry["value"], entry["from"]) for name, entry in report["env"].items()}
    assert values["A"] == ("defaults", "defaults.env.A")
    assert values["B"] == ("role", "roles.frontend.env.B")
    assert values["C"] == ("environment", "environments.production.env.C")
    assert values["D"] == ("environment x role", "environments.production.roles.frontend.env.D")
    lines = project.read_text().splitlines()
    assert "D: environment x role" in lines[report["env"]["D"]["line"] - 1]
    # in ci the environment x role layer of production does not apply
    code = cli.main(["config", "ci", "frontend", "--json", "-f", str(project)])
    ci = json.loads(capsys.readouterr().out)
    assert ci["env"]["D"]["value"] == "role" and ci["env"]["C"]["value"] == "role"


def test_config_and_userdata_redact_secrets(project: Path, capsys):
    cert = (project.parent / "secrets" / "ci" / "tls.crt").read_bytes()
    for command in (["config", "ci", "frontend"], ["config", "ci", "frontend", "--json"], ["userdata", "ci", "frontend"]):
        assert cli.main([*command, "-f", str(project)]) == 0
        captured = capsys.readouterr()
        shown = captured.out + captured.err
        assert "<redacted secret tls_cert>" in shown, command
        assert "BEGIN CERTIFICATE" not in shown and "PRIVATE KEY" not in shown
        assert base64.b64encode(cert).decode()[:40] not in shown


# --- user-data ------------------------------------------------------------------------------


def test_userdata_is_deterministic_valid_cloud_config(project: Path):
    lbs = {"frontend": "127.1.2.3:8080", "backend": "127.1.2.4:8081", "edit": "127.1.2.5:8082"}
    first, second = boots(project, "production", lbs), boots(project, "production", lbs)
    for role in PRODUCTION_COUNTS:
        assert first[role].userdata == second[role].userdata  # byte-identical across runs
        parsed = userdata.parse(first[role].userdata)
        jsonschema.Draft4Validator(userdata.cloud_config_schema()).validate(parsed.cloud_config)
        files = {entry["path"]: entry for entry in parsed.cloud_config["write_files"]}
        env_file = files["/srv/phoenix/phoenix.env"]
        assert env_file["permissions"] == "0600"
        variables = userdata.read_env_file(userdata.decode_content(env_file))
        assert variables["PHOENIX_ENV"] == "production" and variables["PHOENIX_ROLE"] == role
        assert variables["PHOENIX_LB_BACKEND"] == "127.1.2.4:8081"
    frontend = userdata.parse(first["frontend"].userdata).cloud_config
    files = {entry["path"]: entry for entry in frontend["write_files"]}
    key = files["/srv/phoenix/tls/key.pem"]
    assert key["permissions"] == "0600" and key["encoding"] == "b64"
    # the value is the file less its one trailing newline (see test_secret_checks.py)
    assert userdata.decode_content(key) == (project.parent / "secrets" / "production" / "tls.key").read_bytes().removesuffix(b"\n")


def test_what_phoenix_builds_alone_is_valid_cloud_config_unchecked(project: Path):
    """`write_files` and `runcmd` are built from fields the spec's models checked, so a document
    of those alone skips the schema check at render time (issue 15: the check's library costs
    a plan 0.06 s to load). Here every kind of file and command is rendered and checked against
    cloud-init's schema all the same."""
    def every_kind(data):
        data["roles"]["backend"]["files"] = [
            {"path": "conf/app.ini", "content": "a = 1\n", "mode": "0640", "owner": "www-data:www-data"},
            {"path": "conf/empty", "content": ""},
            {"path": "bin/run", "source": "VERSION", "mode": "0755"},
        ]
        data["roles"]["backend"]["runcmd"] = ["echo 'quoted; $(not run)' > /tmp/x", "mkdir -p /srv/data"]

    edit_spec(project, every_kind)
    validator = jsonschema.Draft4Validator(userdata.cloud_config_schema())
    for env in ("ci", "production"):
        for role, boot in boots(project, env).items():
            document = userdata.parse(boot.userdata).cloud_config
            assert set(document) <= userdata.VALID_BY_CONSTRUCTION, (env, role)
            assert list(validator.iter_errors(document)) == [], (env, role)
    backend = userdata.parse(boots(project, "production")["backend"].userdata).cloud_config
    assert backend["runcmd"][-1] == "mkdir -p /srv/data" and any(e["owner"] == "www-data:www-data" for e in backend["write_files"])


def test_large_userdata_is_gzipped_and_still_readable(project: Path):
    (project.parent / "big.txt").write_text("phoenix servers are reborn, never patched\n" * 600)  # ~25 KB, compressible
    edit_spec(project, lambda d: d["roles"]["backend"].update(files=[{"path": "etc/big.txt", "source": "big.txt"}]))
    boot = boots(project, "ci")["backend"]
    assert boot.userdata[:2] == b"\x1f\x8b" and len(boot.userdata) <= userdata.USERDATA_LIMIT
    files = {e["path"]: e for e in userdata.parse(boot.userdata).cloud_config["write_files"]}
    assert userdata.decode_content(files["/srv/phoenix/etc/big.txt"]) == (project.parent / "big.txt").read_bytes()


# --- fingerprints ---------------------------------------------------------------------------


def test_a_value_changed_in_production_outdates_only_production_servers_that_use_it(project: Path):
    before = {env: {role: boot.fingerprint for role, boot in boots(project, env).items()} for env in ("ci", "production")}
    edit_spec(project, lambda d: d["environments"]["production"]["roles"]["frontend"]["env"].update(RENDER_DELAY_MS="90"))
    after = {env: {role: boot.fingerprint for role, boot in boots(project, env).items()} for env in ("ci", "production")}
    assert after["ci"] == before["ci"]
    assert [role for role in PRODUCTION_COUNTS if after["production"][role] != before["production"][role]] == ["frontend"]


def test_rotated_secret_changes_the_fingerprint_without_storing_it(project: Path):
    preflight(project, "production")  # the keyed hashes on record, as a deploy leaves them
    recorded = state_rows(project.parent)["secret_hashes"]
    before = boots(project, "production")
    cli.main(["secrets", "tls", "production", "--host", "www.example.test", "--force", "-f", str(project)])
    preflight(project, "production")
    after = boots(project, "production")
    assert after["frontend"].fingerprint != before["frontend"].fingerprint
    assert after["backend"].fingerprint == before["backend"].fingerprint
    values = secret_values(project.parent, "production")  # the new pair: raw, PEM body, base64

    # The user-data does carry the new pair, base64-encoded: decoded, it is the certificate made
    # for the host; as delivered, the values' base64 form is in it (what the checks below look for).
    document = after["frontend"].userdata
    document = gzip.decompress(document) if document[:2] == b"\x1f\x8b" else document
    files = {e["path"]: userdata.decode_content(e) for e in userdata.parse(document).cloud_config["write_files"]}
    certificate = x509.load_pem_x509_certificate(files["/srv/phoenix/tls/cert.pem"])
    assert certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName) == ["www.example.test"]
    delivered = b"".join(files.values())
    assert all(value in delivered or value in delivered.replace(b"\n", b"") or value in document for value in values)  # PEM bodies joined
    assert all(base64.b64encode(raw) in document for raw in values[::3])

    # The boot config never prints its user-data: no value, in any of its forms.
    shown = repr(after).encode()
    assert not [value for value in values if value in shown or value in shown.replace(b"\\n", b"")], shown

    # The state store keeps keyed hashes (changed by the rotation), never a value or its base64.
    rows = state_rows(project.parent)
    assert rows["secret_hashes"] != recorded and rows["secret_hashes"]
    cells = [(table, cell) for table, table_rows in rows.items() for row in table_rows for cell in row if cell is not None]
    assert len(rows) >= 5 and cells  # every table of the file, read
    leaks = [(table, value[:16]) for table, cell in cells for value in values
             if value in (data := cell if isinstance(cell, bytes) else str(cell).encode()) or value in data.replace(b"\n", b"")]
    assert leaks == []


def state_rows(project_dir: Path) -> dict[str, list[tuple]]:
    """Every row of every table of .phoenix/state.db, as sqlite3 reads the file."""
    with closing(sqlite3.connect(project_dir / ".phoenix" / "state.db")) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        return {table: sorted(db.execute(f'SELECT * FROM "{table}"').fetchall(), key=repr) for table in tables}


# --- secrets tls ----------------------------------------------------------------------------


def test_secrets_tls_creates_a_private_pair_and_refuses_to_overwrite(tmp_path: Path, project: Path, capsys):
    for env in ("ci", "production"):
        for name in ("tls.crt", "tls.key"):
            (project.parent / "secrets" / env / name).unlink()
    assert cli.main(["secrets", "tls", "production", "--host", "www.example.test", "-f", str(project)]) == 0
    out = capsys.readouterr().out
    directory = project.parent / "secrets" / "production"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in ("tls.crt", "tls.key"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600
    certificate = x509.load_pem_x509_certificate((directory / "tls.crt").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["www.example.test"]
    assert "PRIVATE KEY" not in out and "tls_key: {file: secrets/production/tls.key}" in out
    assert cli.main(["secrets", "tls", "production", "--host", "x", "-f", str(project)]) == 2
    assert "already exists" in capsys.readouterr().err


# --- bad input: one line naming the place, nothing launched -----------------------------------


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def fails_before_anything_starts(project: Path, capsys, env: str, *fragments: str) -> str:
    code = cli.main(["up", env, "-f", str(project)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, (fragment, err)
    assert nothing_started(project.parent)
    return err


def test_missing_secret_file(project: Path, capsys):
    (project.parent / "secrets" / "ci" / "tls.key").unlink()
    fails_before_anything_starts(
        project, capsys, "ci", f"phoenix.yaml:{line_of(project, 'tls_key: {file: secrets/ci/tls.key}')}:",
        "environments.ci.secrets.tls_key", "secrets/ci/tls.key does not exist", "phoenix secrets tls ci",
    )


def test_unset_secret_variable(project: Path, capsys, monkeypatch):
    monkeypatch.delenv("PHOENIX_TEST_TOKEN", raising=False)
    edit_spec(project, lambda d: d["environments"]["ci"]["secrets"].update(api_token={"env": "PHOENIX_TEST_TOKEN"}))
    fails_before_anything_starts(project, capsys, "ci", "environments.ci.secrets.api_token", "PHOENIX_TEST_TOKEN is not set")


def test_failing_secret_command_does_not_show_its_output(project: Path, capsys):
    command = "echo hunter2-partial-secret; echo hunter2-on-stderr >&2; exit 4"
    edit_spec(project, lambda d: d["environments"]["ci"]["secrets"].update(db_password={"command": command}))
    err = fails_before_anything_starts(project, capsys, "ci", "environments.ci.secrets.db_password", "command exited 4")
    assert "hunter2" not in err.replace(command, "")


def test_secret_of_another_environment_never_reaches_ci(project: Path, capsys):
    def leak(data):
        data["environments"]["production"]["secrets"]["api_token"] = {"env": "PROD_TOKEN"}
        data["roles"]["backend"]["env"] = {"API_TOKEN": {"secret": "api_token"}}

    edit_spec(project, leak)
    fails_before_anything_starts(
        project, capsys, "ci", f"phoenix.yaml:{line_of(project, 'API_TOKEN')}:", "roles.backend.env.API_TOKEN",
        "secret 'api_token' belongs to environment production", "environment ci",
    )


def test_same_secret_file_in_two_environments(project: Path, capsys):
    edit_spec(project, lambda d: d["environments"]["ci"]["secrets"].update(tls_key={"file": "secrets/production/tls.key"}))
    fails_before_anything_starts(
        project, capsys, "ci", "environments.ci.secrets.tls_key", "same file secrets/production/tls.key",
        "environment production", "exactly one environment",
    )


def test_production_value_copied_into_ci_is_refused(project: Path, capsys):
    preflight(project, "production")  # production's keyed hashes are on record
    secrets_dir = project.parent / "secrets"
    (secrets_dir / "ci" / "tls.key").write_bytes((secrets_dir / "production" / "tls.key").read_bytes())
    err = fails_before_anything_starts(project, capsys, "ci", "secret 'tls_key' of environment ci has the same value", "environment production")
    assert "PRIVATE KEY" not in err


def test_unknown_role_in_an_environment_layer(project: Path, capsys):
    edit_spec(project, lambda d: d["environments"]["ci"]["roles"].update(cache={"count": 1, "env": {"X": "1"}}))
    fails_before_anything_starts(project, capsys, "ci", "environments.ci.roles.cache", "unknown role 'cache'")


def test_unknown_environment_or_role_for_config(project: Path, capsys):
    assert cli.main(["config", "staging", "frontend", "-f", str(project)]) == 2
    assert "unknown environment 'staging'" in capsys.readouterr().err
    assert cli.main(["userdata", "ci", "cache", "-f", str(project)]) == 2
    assert "unknown role 'cache'" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/phoenix.conf", "a/../../b"])
def test_file_outside_the_server(project: Path, capsys, path):
    edit_spec(project, lambda d: d["roles"]["edit"].update(files=[{"path": path, "content": "x"}]))
    fails_before_anything_starts(project, capsys, "ci", "roles.edit.files.0.path", "outside the server")


def test_userdata_over_the_limit(project: Path, capsys):
    (project.parent / "noise.bin").write_bytes(os.urandom(20000))  # incompressible
    edit_spec(project, lambda d: d["roles"]["backend"].update(files=[{"path": "noise.bin", "source": "noise.bin"}]))
    fails_before_anything_starts(
        project, capsys, "ci", "environments.ci.roles.backend: user-data is", "over the 16384-byte limit", "roles.backend.files.0"
    )


def test_non_string_where_cloud_init_wants_a_string(project: Path, capsys):
    edit_spec(project, lambda d: d["environments"]["ci"].update(cloud_config={"timezone": 5}))
    fails_before_anything_starts(
        project, capsys, "ci", f"phoenix.yaml:{line_of(project, 'timezone: 5')}:", "environments.ci.cloud_config.timezone",
        "cloud-init schema", "expected string, got int",
    )


def test_unquoted_file_mode(project: Path, capsys):
    text = project.read_text().replace("{path: tls/key.pem, secret: tls_key}", "{path: tls/key.pem, secret: tls_key, mode: 0600}")
    project.write_text(text)
    fails_before_anything_starts(project, capsys, "ci", f":{line_of(project, 'mode: 0600')}:", "roles.frontend.files.1.mode", "quoted octal")


def test_secret_file_readable_by_others(project: Path, capsys):
    text = project.read_text().replace("{path: tls/key.pem, secret: tls_key}", "{path: tls/key.pem, secret: tls_key, mode: '0644'}")
    project.write_text(text)
    fails_before_anything_starts(project, capsys, "ci", "roles.frontend.files.1", "must not be readable by group or others")


# --- for real: servers, files, processes ---------------------------------------------------


def secret_values(project_dir: Path, env: str) -> list[bytes]:
    """Each secret of `env` as bytes, and as the base64 and PEM-body forms it could hide in."""
    values = []
    for name in ("tls.crt", "tls.key"):
        raw = (project_dir / "secrets" / env / name).read_bytes().removesuffix(b"\n")  # as delivered
        body = b"".join(line for line in raw.splitlines() if line and not line.startswith(b"-----"))
        # Slices from the middle: the first bytes of a PEM body are the same for every key of a kind.
        middle = len(body) // 2
        values += [raw, body[middle - 24 : middle + 24], base64.b64encode(raw)[middle - 24 : middle + 24]]
    return values


def files_under(directory: Path, skip: Path | None = None):
    for path in directory.rglob("*"):
        if path.is_file() and not (skip and path.is_relative_to(skip)):
            yield path


@pytest.mark.slow
def test_config_deploy_secrets_and_isolation_for_real(tmp_path_factory, capsys):
    spec_path = copy_example(tmp_path_factory, "secrets")
    project_dir = spec_path.parent

    def boot_steps(data):
        data["roles"]["edit"]["files"] = [{"path": "etc/motd", "content": "hello\n", "mode": "0640"}]
        data["roles"]["edit"]["runcmd"] = ["echo \"booted $PHOENIX_ENV\" > etc/booted.txt"]

    edit_spec(spec_path, boot_steps)
    try:
        project = Project(spec_path)
        executor = Executor(project, lock_timeout=60)
        executor.up("ci")
        executor.up("production")
        ci_before = {s["id"]: s for s in executor.status("ci")["servers"]}
        prod_before = {s["id"]: s for s in executor.status("production")["servers"]}
        assert len(ci_before) == sum(CI_COUNTS.values()) and len(prod_before) == sum(PRODUCTION_COUNTS.values())

        # write_files modes and runcmd, applied in each server's own root
        for server in list(ci_before.values()) + list(prod_before.values()):
            root = Path(server["root"])
            assert stat.S_IMODE((root / "phoenix.env").stat().st_mode) == 0o600
            if server["role"] == "edit":
                assert stat.S_IMODE((root / "etc" / "motd").stat().st_mode) == 0o640
                env = "ci" if server["id"] in ci_before else "production"
                assert (root / "etc" / "booted.txt").read_text() == f"booted {env}\n"
            if server["role"] == "frontend":
                for name in ("cert.pem", "key.pem"):
                    assert stat.S_IMODE((root / "tls" / name).stat().st_mode) == 0o600

        # each environment's frontend serves HTTPS with its own certificate, through its balancer
        for env in ("ci", "production"):
            lb = next(lb for lb in executor.status(env)["load_balancers"] if lb["role"] == "frontend")
            host = lb["address"].rsplit(":", 1)[0]
            served = ssl.get_server_certificate((host, 8443))
            expected = (project_dir / "secrets" / env / "tls.crt").read_text()
            assert ssl.PEM_cert_to_DER_cert(served) == ssl.PEM_cert_to_DER_cert(expected), env

        # a value changed in production: deploy replaces exactly production's frontends
        edit_spec(spec_path, lambda d: d["environments"]["production"]["roles"]["frontend"]["env"].update(RENDER_DELAY_MS="90"))
        project.close()
        project = Project(spec_path)
        executor = Executor(project, lock_timeout=60)
        assert not executor.deploy("ci").changed
        result = executor.deploy("production")
        replaced_roles = sorted({prod_before[sid]["role"] for sid in result.retired})
        assert replaced_roles == ["frontend"] and len(result.retired) == PRODUCTION_COUNTS["frontend"]
        assert {s["id"] for s in executor.status("ci")["servers"]} == set(ci_before)

        # the production certificate never reaches a ci server
        production_secrets = secret_values(project_dir, "production")
        for server in executor.status("ci")["servers"]:
            for path in files_under(Path(server["root"])):
                data = path.read_bytes()
                assert not any(value in data for value in production_secrets), path

        # no secret value in the state store, logs, history, status or balancer files
        assert cli.main(["history", "production", "--json", "-f", str(spec_path)]) == 0
        assert cli.main(["status", "production", "--json", "-f", str(spec_path)]) == 0
        shown = capsys.readouterr()
        everything = production_secrets + secret_values(project_dir, "ci")
        assert not any(value.decode() in shown.out + shown.err for value in everything)
        workdir = project_dir / ".phoenix"
        leaks = [
            str(path)
            for path in files_under(workdir, skip=workdir / "servers")
            if any(value in path.read_bytes() for value in everything)
        ]
        assert leaks == []
        assert {"images", "lb", "logs", "state.db"} <= {p.name for p in workdir.iterdir()}  # the grep saw them all
        project.close()
    finally:
        destroy_quietly(spec_path, "production")
        destroy_quietly(spec_path, "ci")
