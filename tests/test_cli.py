"""Bad input: one line naming the place, exit code 2, no traceback, nothing started."""

import json
from pathlib import Path

import pytest

from phoenixctl.cli import main
from phoenixctl.example import example_dir, init_example

EXAMPLE = example_dir()


@pytest.fixture
def project(tmp_path: Path) -> Path:
    init_example(tmp_path)
    return tmp_path / "phoenix.yaml"


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, old
    path.write_text(text.replace(old, new, 1))


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


def assert_one_line_error(code, err, *fragments):
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, (fragment, err)


def test_validate_example_ok(capsys, project):
    code, out, _ = run(capsys, "validate", "-f", str(project))
    assert code == 0 and "ok" in out


def test_missing_file(capsys, tmp_path):
    code, _, err = run(capsys, "validate", "-f", str(tmp_path / "nope.yaml"))
    assert_one_line_error(code, err, "nope.yaml", "no such file")


# (old text, new text, the line the error names (found by this text), what the error says)
BAD_SPECS = {
    "invalid YAML": ("  frontend:                # public", "  frontend: [unclosed\n  x:", None, ["phoenix.yaml:", "invalid YAML"]),
    "unknown field": ("    port: 8081\n", "    port: 8081\n    prot: 1\n", "prot: 1", ["roles.backend.prot", "unknown field"]),
    "unknown role": (
        "roles: {backend: 1, edit: 1, frontend: 1}", "roles: {backend: 1, edit: 1, frontnd: 1}", "frontnd",
        ["environments.ci.roles.frontnd", "unknown role 'frontnd'"],
    ),
    "unknown image": ("    image: web\n    port: 8082", "    image: wbe\n    port: 8082", "image: wbe", ["roles.edit.image", "unknown image 'wbe'"]),
    "bad duration": ("boot: 20s", "boot: soon", "boot: soon", ["defaults.deadlines.boot", "not a duration"]),
    "bad percentage": ("max_surge: 100%", "max_surge: 150%", None, ["environments.production.rollout.max_surge", "percentage"]),
    "non-string env value": (
        "    port: 8081\n", "    port: 8081\n    env:\n      WORKERS: 4\n", None, ["roles.backend.env", "WORKERS", "must be a string"],
    ),
    "duplicate key": ("    port: 8081\n", "    port: 8081\n    port: 9000\n", "port: 9000", ["roles.backend.port", "duplicate key"]),
    "missing image file": ("files: [app, VERSION]", "files: [app, VERSION, missing.txt]", None, ["images.web.layers.1.files.2", "'missing.txt' does not exist"]),
    "unknown provider": ("provider: local ", "provider: gcp ", "provider: gcp", ["unknown provider 'gcp'", "aws, local"]),
    "cloud image on the local provider": (
        "    start: python app/server.py", "    start: python app/server.py\n    prebuilt: {id: ami-0123}", "prebuilt:",
        ["images.web.prebuilt", "for cloud providers"],
    ),
}


@pytest.mark.parametrize("case", BAD_SPECS)
def test_bad_spec_is_one_line_naming_the_place(capsys, project, case):
    old, new, line_text, fragments = BAD_SPECS[case]
    replace_in(project, old, new)
    code, _, err = run(capsys, "validate", "-f", str(project))
    where = [f"phoenix.yaml:{line_of(project, line_text)}:"] if line_text else []
    assert_one_line_error(code, err, *where, *fragments)


def test_unknown_environment_starts_nothing(capsys, project):
    code, _, err = run(capsys, "up", "staging", "-f", str(project))
    assert_one_line_error(code, err, "unknown environment 'staging'", "ci, ci-legacy, production")
    assert not (project.parent / ".phoenix" / "lb").exists()
    assert not (project.parent / ".phoenix" / "servers").exists()


# Every command that takes an environment, with what else it needs: all take the same path for names.
ENV_COMMANDS = [
    ["up"], ["deploy"], ["deploy", "--dry-run"], ["rotate"], ["rotate", "--dry-run"], ["rollback"], ["promote"],
    ["recover"], ["destroy"], ["status"], ["history"], ["plan"], ["drift"], ["watch", "--passes", "1"], ["chaos"],
    ["config", "@", "frontend"], ["userdata", "@", "frontend"], ["secrets", "tls", "@", "--host", "x"],
    ["backup"], ["backup", "--list"], ["backup", "--verify", "bk-x"], ["restore", "--backup", "bk-x"], ["rebuild"], ["drill"],
]


@pytest.mark.parametrize("command", ENV_COMMANDS, ids=" ".join)
def test_unknown_environment_is_the_same_error_for_every_command(capsys, project, command):
    argv = [word if word != "@" else "prod" for word in command]
    if "prod" not in argv:
        argv.insert(2 if argv[0] == "secrets" else 1, "prod")
    code, _, err = run(capsys, *argv, "-f", str(project))
    assert_one_line_error(code, err, "phoenix.yaml: unknown environment 'prod' (environments: ci, ci-legacy, production)")
    assert not (project.parent / ".phoenix" / "servers").exists()


def test_history_never_cuts_operation_ids_when_not_a_terminal(capsys, project):
    from phoenixctl.engine import PHASES
    from phoenixctl.state import StateStore, utcnow

    (project.parent / ".phoenix").mkdir()
    store = StateStore(project.parent / ".phoenix" / "state.db")
    ids = [f"op-20261130-18{n:02d}00-a1b2c{n}" for n in range(3)]
    for op_id in ids:  # operations with every phase: the widest table history prints
        store.start_operation(op_id, "ci", "deploy")
        store.record_phases(op_id, [dict(phase=p, seconds=1.5, server_id="frontend-abcdef", ok=True, started_at=utcnow()) for p in PHASES])
        store.finish_operation(op_id, "succeeded", "3 launched, 3 retired, 1 image(s) baked; " + "a long summary " * 8)
    store.close()
    code, out, _ = run(capsys, "history", "ci", "-f", str(project))
    assert code == 0
    for op_id in ids:
        assert op_id in out, out
    assert out.count(f"{utcnow():%Y-%m-%d}T") == len(ids), out  # start times whole too


def test_unknown_role_option(capsys, project):
    code, _, err = run(capsys, "rotate", "ci", "--role", "cache", "-f", str(project))
    assert_one_line_error(code, err, "unknown role 'cache'")


def test_bad_option_is_one_line(capsys, project):
    code, _, err = run(capsys, "up", "ci", "--surge", "3")
    assert_one_line_error(code, err, "phoenix up: error:", "--surge")


def test_missing_argument(capsys):
    code, _, err = run(capsys, "up")
    assert_one_line_error(code, err, "ENV")


def test_every_command_has_help(capsys):
    commands = (
        "validate", "schema", "bake", "up", "deploy", "rotate", "status", "history", "destroy", "demo", "init",
        "config", "userdata", "promote", "rollback", "recover", "plan", "drift", "watch", "chaos", "compare",
    )
    for command in commands:
        code, out, _ = run(capsys, command, "--help")
        assert code == 0 and "Usage:" in out, command
    code, out, _ = run(capsys, "secrets", "tls", "--help")
    assert code == 0 and "--host" in out


def test_in_place_settings_on_a_phoenix_environment_name_the_line(capsys, project):
    replace_in(project, "  ci:\n    env: {LOG_LEVEL: debug}", "  ci:\n    in_place: {command: sh deploy.sh}\n    env: {LOG_LEVEL: debug}")
    code, _, err = run(capsys, "validate", "-f", str(project))
    assert_one_line_error(code, err, "environments.ci", "in_place is for environments with mode: in-place")


def test_deploy_to_several_environments_checks_every_name_first(capsys, project):
    code, _, err = run(capsys, "deploy", "ci", "staging", "-f", str(project))
    assert_one_line_error(code, err, "unknown environment 'staging'")
    assert not (project.parent / ".phoenix" / "images").exists()  # nothing baked


def test_promotion_takes_one_source(capsys, project):
    code, _, err = run(capsys, "deploy", "ci-legacy", "--release-of", "ci", "--release", "op-1", "-f", str(project))
    assert code == 1 and "--release-of and --release name the same thing" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "deploy", "ci-legacy", "--release-of", "ci", "-f", str(project))
    assert code == 1 and "environment ci has no release to promote" in err, err


def test_schema_is_json_schema(capsys):
    code, out, _ = run(capsys, "schema")
    schema = json.loads(out)
    assert code == 0
    assert {"images", "roles", "environments"} <= set(schema["properties"])
    assert set(schema["required"]) == {"images", "roles", "environments"}


def test_init_copies_example_and_refuses_to_overwrite(capsys, tmp_path):
    code, _, _ = run(capsys, "init", str(tmp_path / "site"))
    assert code == 0 and (tmp_path / "site" / "phoenix.yaml").is_file() and (tmp_path / "site" / "app" / "server.py").is_file()
    code, _, err = run(capsys, "init", str(tmp_path / "site"))
    assert code == 1 and "already exists" in err


def test_bake_cache_hit(capsys, project):
    code, first, _ = run(capsys, "bake", "--json", "-f", str(project))
    code2, second, _ = run(capsys, "bake", "--json", "-f", str(project))
    first, second = json.loads(first), json.loads(second)
    assert code == code2 == 0
    assert first[0]["cached"] is False and second[0]["cached"] is True
    assert first[0]["id"] == second[0]["id"]
    (project.parent / "VERSION").write_text("9.9.9\n")
    _, third, _ = run(capsys, "bake", "--json", "-f", str(project))
    assert json.loads(third)[0]["id"] != first[0]["id"]


def test_failing_bake_step_is_one_line(capsys, project):
    replace_in(project, "- python -m py_compile app/server.py", "- sh -c 'echo broken >&2; exit 3'")
    code, _, err = run(capsys, "bake", "-f", str(project))
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert "step 1" in err and "exited 3" in err and "broken" in err


def test_floating_ip_on_the_local_provider_is_a_balancer(capsys, project):
    replace_in(project, "    port: 8082\n", "    port: 8082\n    discovery: {type: floating_ip}\n")
    code, out, err = run(capsys, "validate", "-f", str(project))
    assert code == 0, err


def test_doctor_on_the_local_provider(capsys, project):
    code, out, err = run(capsys, "doctor", "--probe", "--json", "-f", str(project))
    assert code == 0, err
    report = {row["capability"]: row for row in json.loads(out)["capabilities"]}
    assert report["load balancer"]["ok"] and report["load balancer"]["detail"].startswith("HAProxy version")
    assert report["blue-green"]["ok"] and report["canary"]["ok"] and report["server checks"]["ok"]
    assert not report["DNS"]["ok"]
    assert 0 < report["probe: launch"]["seconds"] < 30 and report["probe: image"]["seconds"] > 0
    assert not (project.parent / ".phoenix" / "images").exists() or not any((project.parent / ".phoenix" / "images").iterdir())


def test_text_from_a_server_is_printed_as_plain_text(capsys, project):
    """A server whose output looks like rich markup ("[/x]") fails its gate with that text
    shown as it is: no MarkupError, no internal error, nothing left running."""
    replace_in(project, "    health: {path: /healthz}\n", "    health: {path: /healthz}\n    command: python -c \"print('[/x] [bold]boom'); raise SystemExit(3)\"\n")
    try:
        code, _, err = run(capsys, "up", "ci", "-f", str(project))
        assert code == 1, err
        assert "internal error" not in err and "[/x] [bold]boom" in err, err
    finally:
        assert main(["destroy", "ci", "-f", str(project)]) == 0
    assert not list((project.parent / ".phoenix" / "servers" / "ci").glob("*"))
