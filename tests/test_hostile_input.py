"""Hostile or broken specs (issue 13): each is refused at once with one line naming the file
(and the line where there is one), exit code 2, no traceback, bounded time and memory."""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from phoenixctl.cli import main
from phoenixctl.example import init_example


@pytest.fixture
def project(tmp_path: Path) -> Path:
    init_example(tmp_path)
    return tmp_path / "phoenix.yaml"


def validate(capsys, spec: Path) -> tuple[int, str]:
    code = main(["validate", "-f", str(spec)])
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    return code, err


def billion_laughs(levels: int) -> str:
    lines = ['a0: &a0 ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for n in range(1, levels + 1):
        lines.append(f"a{n}: &a{n} [" + ", ".join([f"*a{n - 1}"] * 9) + "]")
    return "\n".join(lines) + "\nimages: {}\nroles: {}\nenvironments: {}\n"


def test_an_alias_bomb_is_refused_at_once_with_bounded_memory(tmp_path: Path):
    """Nine levels expand to 9^9 values: refused before validation. Run in a child process
    capped at 1 GiB of address space, so an unbounded expansion fails this test instead of
    the machine."""
    spec = tmp_path / "phoenix.yaml"
    spec.write_text(billion_laughs(9))
    cap = 1 << 30

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (cap, cap))

    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "phoenixctl", "validate", "-f", str(spec)], capture_output=True, text=True, timeout=120, preexec_fn=limit
    )
    seconds = time.monotonic() - started
    assert result.returncode == 2, result.stderr
    assert "expands to more than 50000 values" in result.stderr and "Traceback" not in result.stderr
    assert seconds < 10, seconds  # the fault took minutes; refusing it takes an interpreter's start


def test_a_six_level_alias_bomb_is_refused_too(capsys, tmp_path: Path):
    spec = tmp_path / "phoenix.yaml"
    spec.write_text(billion_laughs(6))
    code, err = validate(capsys, spec)
    assert code == 2 and "phoenix.yaml:" in err and "expands to more than" in err


def test_aliases_within_the_bounds_still_work(capsys, project: Path):
    text = project.read_text().replace("  deadlines: {boot: 20s", "  deadlines: &deadlines {boot: 20s", 1)
    text = text.replace("environments:\n  ci:\n", "environments:\n  ci:\n    deadlines: *deadlines\n", 1)
    assert "*deadlines" in text
    project.write_text(text)
    assert main(["validate", "-f", str(project)]) == 0, capsys.readouterr().err


def test_a_recursive_alias_is_refused(capsys, tmp_path: Path):
    spec = tmp_path / "phoenix.yaml"
    spec.write_text("images: &loop {a: *loop}\nroles: {}\nenvironments: {}\n")
    code, err = validate(capsys, spec)
    assert code == 2 and "phoenix.yaml:1:" in err and "refers to the node that contains it" in err


def test_a_spec_over_one_mebibyte_is_refused_without_being_read(capsys, tmp_path: Path):
    spec = tmp_path / "phoenix.yaml"
    spec.write_text("# padding\n" * 120_000 + "images: {}\n")
    code, err = validate(capsys, spec)
    assert code == 2 and "larger than 1024 KiB" in err


def test_deep_nesting_is_refused(capsys, tmp_path: Path):
    spec = tmp_path / "phoenix.yaml"
    spec.write_text("images: " + "[" * 10_000 + "]" * 10_000 + "\n")
    code, err = validate(capsys, spec)
    assert code == 2 and "nested deeper than 64 levels" in err



def test_bad_yaml_is_told_in_the_clearest_words(capsys, tmp_path: Path):
    """Specs are parsed by libyaml when PyYAML has it (fast); on bad YAML the pure-Python
    loader says what is wrong, naming what libyaml leaves out (here the alias)."""
    spec = tmp_path / "phoenix.yaml"
    spec.write_text("images: {}\nroles: *web\n")
    code, err = validate(capsys, spec)
    assert code == 2 and "phoenix.yaml:2: invalid YAML: found undefined alias 'web'" in err, err


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("boot: 20s", "boot: .nan", "a duration must be a finite number"),
        ("boot: 20s", "boot: .inf", "a duration must be a finite number"),
        ("boot: 20s", "boot: 400d", "a duration must be at most 366d"),
        ("roles: {backend: 1, edit: 1, frontend: 1}", "roles: {backend: 100000000000, edit: 1, frontend: 1}", "10000"),
    ],
)
def test_numbers_out_of_bounds_are_refused(capsys, project: Path, old, new, expected):
    text = project.read_text()
    assert old in text
    project.write_text(text.replace(old, new, 1))
    code, err = validate(capsys, project)
    assert code == 2 and expected in err, err


def test_a_spec_that_is_not_utf8_is_refused(capsys, tmp_path: Path, project: Path):
    utf16 = tmp_path / "utf16.yaml"
    utf16.write_bytes(project.read_text().encode("utf-16"))
    code, err = validate(capsys, utf16)
    assert code == 2 and "utf16.yaml:1: not UTF-8 text" in err
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"images: {}\nroles: {}\n\xff\xfe\x00\x81 garbage\n")
    code, err = validate(capsys, binary)
    assert code == 2 and "binary.yaml:3: not UTF-8 text" in err


def test_a_nul_byte_is_refused_naming_its_line(capsys, tmp_path: Path):
    spec = tmp_path / "phoenix.yaml"
    spec.write_text("images: {}\nroles: {}\nenvironments: {\x00}\n")
    code, err = validate(capsys, spec)
    assert code == 2 and "phoenix.yaml:3: contains a NUL byte" in err


def test_plan_with_a_role_naming_an_undeclared_secret_is_a_clean_error(capsys, project: Path):
    text = project.read_text()
    project.write_text(text.replace("{path: tls/key.pem, secret: tls_key}", "{path: tls/key.pem, secret: nope}", 1))
    for command in (["plan", "ci"], ["deploy", "ci", "--dry-run"], ["userdata", "ci", "frontend"]):
        code = main([*command, "-f", str(project)])
        err = capsys.readouterr().err
        assert code == 2 and "unknown secret 'nope'" in err and "internal error" not in err, (command, err)


@pytest.mark.parametrize("content", [b"[1, 2]", b'"just a string"', b"\xff\xfe\x00garbage", b'{"pid": 1}'])
def test_a_lock_file_with_unexpected_content_is_taken_over_not_a_crash(capsys, project: Path, content: bytes):
    locks = project.parent / ".phoenix" / "locks"
    locks.mkdir(parents=True)
    (locks / "ci.lock").write_bytes(content)
    code = main(["destroy", "ci", "--json", "-f", str(project)])
    captured = capsys.readouterr()
    assert code == 0 and "internal error" not in captured.err, captured.err
    assert "holds no holder record" in captured.out  # recorded as a lock taken over, file named


@pytest.mark.parametrize(
    "path",
    ["/healthz\n    bind 0.0.0.0:9999", "/health z", '/h"x', "healthz", "/h#x", "/${HOME}", "/h\tx"],
    ids=["newline", "space", "quote", "relative", "hash", "dollar", "tab"],
)
def test_a_health_path_that_could_escape_the_balancer_config_is_refused_at_validate(capsys, project: Path, path: str):
    """A newline in health.path once added `bind 0.0.0.0:9999` to haproxy.cfg, and `up`
    listened on every interface."""
    text = project.read_text()
    project.write_text(text.replace("health: {path: /healthz}", "health: {path: " + json.dumps(path) + "}", 1))
    code, err = validate(capsys, project)
    line = next(i for i, row in enumerate(project.read_text().splitlines(), 1) if "health: {path:" in row)
    assert code == 2 and f"phoenix.yaml:{line}: roles.frontend.health.path" in err and "not an absolute URL path" in err, err


def test_values_written_into_haproxy_cfg_are_quoted_and_checked():
    from phoenixctl.drivers.local.haproxy import config_quote
    from phoenixctl.errors import PhoenixError

    assert config_quote("/healthz?x=1") == '"/healthz?x=1"'
    for bad in ("/x\nbind 0.0.0.0:1", '/x"', "/x\\", "/${HOME}"):
        with pytest.raises(PhoenixError, match="refusing to write"):
            config_quote(bad)
