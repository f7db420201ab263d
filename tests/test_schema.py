"""`phoenix schema` (issue 12): the JSON Schema it prints accepts every spec Phoenix accepts.

The schema is the one the CLI prints, checked with jsonschema's Draft 2020-12 validator (the
draft pydantic emits) against the example specs and every spec the other test modules write
or edit, and against specs that must be refused. Each shorthand of the spec (durations,
counts and percentages, shares, `provider: NAME`, `ROLE: COUNT`, ...) is also checked value by
value: its parser and its schema accept the same values."""

from __future__ import annotations

import copy
import json
import subprocess
from pathlib import Path
from typing import Any, Callable

import jsonschema
import pydantic
import pytest
import yaml

from conftest import PHOENIX
from phoenixctl.example import EXAMPLES, example_dir
from phoenixctl.spec import (
    DeadlinesSpec, DefaultsSpec, EnvRoleSpec, FileSpec, ProviderSpec, RolloutSpec, SimulatedDurations, Spec, WarmupSpec,
)
from test_cli import BAD_SPECS
from test_executor import SPEC as EXECUTOR_SPEC
from test_simulated import BAD_SIMULATED, SPEC as SIMULATED_SPEC


@pytest.fixture(scope="module")
def schema() -> dict:
    """What `phoenix schema` prints, as an editor would load it."""
    result = subprocess.run([PHOENIX, "schema"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def validator(schema: dict) -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(schema)


def schema_errors(validator: jsonschema.Draft202012Validator, data: Any) -> list[str]:
    return [f"{'.'.join(map(str, error.absolute_path)) or '(top level)'}: {error.message}" for error in validator.iter_errors(data)]


def accepts(model: type[pydantic.BaseModel], data: Any) -> bool:
    try:
        model.model_validate(data)
        return True
    except pydantic.ValidationError:
        return False


def model_accepts(data: Any) -> bool:
    return accepts(Spec, data)


# --- the specs: the examples, and those the other test modules write or edit ------------------


def example_text(name: str) -> str:
    return (example_dir(name) / "phoenix.yaml").read_text()


def replaced(name: str, *edits: tuple[str, str]) -> Callable[[], dict]:
    """An example's text with replacements (as test_cli's replace_in and test_aws's aws_example)."""

    def make() -> dict:
        text = example_text(name)
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new, 1)
        return yaml.safe_load(text)

    make.base = name
    return make


def changed(name: str, change: Callable[[dict], Any]) -> Callable[[], dict]:
    """An example's data after a change (as the modules' edit_spec helpers make it)."""

    def make() -> dict:
        data = yaml.safe_load(example_text(name))
        change(data)
        return data

    make.base = name
    return make


def executor_spec(change: Callable[[dict], Any] = lambda d: None, **rollout) -> Callable[[], dict]:
    """test_executor's SPEC, as its Fleet writes it (rollout changes), then changed."""

    def make() -> dict:
        data = copy.deepcopy(EXECUTOR_SPEC)
        data["environments"]["prod"]["rollout"].update(rollout)
        change(data)
        return data

    return make


def layered(d: dict) -> None:
    d["defaults"]["env"] = {"A": "defaults", "B": "defaults", "C": "defaults", "D": "defaults"}
    d["roles"]["frontend"]["env"].update({"B": "role", "C": "role", "D": "role"})
    d["environments"]["production"]["env"] = {"C": "environment", "D": "environment"}
    d["environments"]["production"]["roles"]["frontend"]["env"]["D"] = "environment x role"


def leaked_secret(d: dict) -> None:  # refused later by the secrets check, not by the models
    d["environments"]["production"]["secrets"]["api_token"] = {"env": "PROD_TOKEN"}
    d["roles"]["backend"]["env"] = {"API_TOKEN": {"secret": "api_token"}}


def boot_steps(d: dict) -> None:
    d["roles"]["edit"]["files"] = [{"path": "etc/motd", "content": "hello\n", "mode": "0640"}]
    d["roles"]["edit"]["runcmd"] = ['echo "booted $PHOENIX_ENV" > etc/booted.txt']


AWS_BASE = '    base: {name: "al2023-ami-2023.*-x86_64", owners: [amazon]}   # the builder starts from the newest match\n'

VALID: dict[str, Callable[[], dict]] = {
    **{f"examples/{name}": replaced(name) for name in EXAMPLES},
    # test_cli
    "cli: floating IP on the local provider": replaced("website", ("    port: 8082\n", "    port: 8082\n    discovery: {type: floating_ip}\n")),
    # test_config
    "config: layers": changed("website", layered),
    "config: a file from the project": changed("website", lambda d: d["roles"]["backend"].update(files=[{"path": "etc/big.txt", "source": "big.txt"}])),
    "config: a value changed in production": changed(
        "website", lambda d: d["environments"]["production"]["roles"]["frontend"]["env"].update(RENDER_DELAY_MS="90")
    ),
    "config: a secret from a variable": changed("website", lambda d: d["environments"]["ci"]["secrets"].update(api_token={"env": "PHOENIX_TEST_TOKEN"})),
    "config: a secret from a command": changed("website", lambda d: d["environments"]["ci"]["secrets"].update(db_password={"command": "exit 4"})),
    "config: a secret variable": changed("website", leaked_secret),
    "config: a cloud_config module": changed("website", lambda d: d["environments"]["ci"].update(cloud_config={"timezone": 5})),
    "config: a quoted file mode": replaced(
        "website", ("{path: tls/key.pem, secret: tls_key}", "{path: tls/key.pem, secret: tls_key, mode: '0600'}")
    ),
    "config: files and runcmd": changed("website", boot_steps),
    # test_keeper
    "keeper: max_age 1s": changed("website", lambda d: d["environments"]["production"].update(max_age="1s")),
    "keeper: an env value": changed("website", lambda d: d["roles"]["backend"].setdefault("env", {}).update(WORKERS="2")),
    "keeper: scratch": changed("website", lambda d: d["roles"]["edit"].update(scratch=["tmp/*"])),
    # test_strategies
    "strategies: canary_time and keep_previous": changed(
        "website", lambda d: d["environments"]["production"]["rollout"].update(canary_time="3s", keep_previous="10m")
    ),
    "strategies: keep_previous 1s": changed("website", lambda d: d["environments"]["production"]["rollout"].update(keep_previous="1s")),
    "strategies: a failing health check": changed(
        "website",
        lambda d: (d["roles"]["backend"].setdefault("env", {}).update(HEALTH_FAIL="1"), d["defaults"]["deadlines"].update(health="2s")),
    ),
    "strategies: canary as the strategy": changed("website", lambda d: d["environments"]["production"]["rollout"].update(strategy="canary")),
    # test_warmup
    "warmup: a role's count with a layer": changed(
        "website", lambda d: d["environments"]["ci"]["roles"].update(frontend={"count": 1, "env": {"PAGE_ERRORS": "1"}})
    ),
    # test_integration
    "integration: a failing health check": changed(
        "website", lambda d: (d["roles"]["frontend"].update(env={"HEALTH_FAIL": "1"}), d["defaults"]["deadlines"].update(health="3s"))
    ),
    # test_executor
    "executor: SPEC": executor_spec(),
    "executor: all at once": executor_spec(lambda d: d["environments"]["prod"]["roles"].update(web=3), max_surge=0, max_unavailable="100%"),
    "executor: blue-green": executor_spec(strategy="blue-green"),
    "executor: two hundred servers": executor_spec(lambda d: d["environments"]["prod"].update(roles={"web": 200}), max_surge="25%"),
    # test_simulated
    "simulated: SPEC": lambda: copy.deepcopy(SIMULATED_SPEC),
    "simulated: durations": lambda: {**copy.deepcopy(SIMULATED_SPEC), "provider": {"name": "simulated", "simulated": {
        "boot": "1.5s", "health": 0, "drain": "0s", "roles": {"api": {"boot": "60s"}}}}},
    # test_aws
    "aws: subnets and security groups": replaced(
        "website-aws",
        ("    placement: {instance_type: t3.small}", "    placement: {subnets: [subnet-1, subnet-2], security_groups: [sg-1]}"),
    ),
    "aws: a short swap": replaced("website-aws", ("swap: 5m", "swap: 2s")),
    "aws: a prebuilt image by id": replaced("website-aws", (AWS_BASE, "    prebuilt: {id: ami-0123456789abcdef0}\n")),
    "aws: a prebuilt image by name": replaced("website-aws", (AWS_BASE, '    prebuilt: {name: "website-*"}\n')),
    "aws: a prebuilt image from Packer": replaced("website-aws", (AWS_BASE, "    prebuilt: {packer_manifest: manifest.json}\n")),
    "aws: a builder as on a real cloud": replaced(
        "website-aws",
        ("  server_checks: true ", "  server_checks: false\n  emulator: false "),
        ("    warmup: {paths", "    warmup: {enabled: false, paths"),
        ("discovery: {type: floating_ip, dns: edit}", "discovery: {type: load_balancer}"),
    ),
    "aws: canary on a provider that cannot run it": replaced(
        "website-aws", ("rollout: {max_surge: 1, max_unavailable: 0}", "rollout: {strategy: canary}")
    ),
}


@pytest.mark.parametrize("case", VALID)
def test_the_schema_accepts_every_spec_phoenix_accepts(validator, case):
    data = VALID[case]()
    assert model_accepts(data), case  # a valid spec (its references are checked later, as files are)
    assert schema_errors(validator, data) == []


def test_every_example_is_checked():
    shipped = {path.parent.name for path in example_dir().parent.glob("*/phoenix.yaml")}
    assert shipped == set(EXAMPLES) and {f"examples/{name}" for name in shipped} <= set(VALID)


# --- what both refuse ---------------------------------------------------------------------------

# test_cli's bad specs whose fault is the shape the schema describes ...
SHAPE_FAULTS = {"unknown field", "bad duration", "bad percentage", "non-string env value"}
# ... and those the schema cannot see: not YAML, names that refer to nothing, missing files
BEYOND_THE_SCHEMA = {
    "invalid YAML", "duplicate key", "unknown role", "unknown image", "missing image file", "unknown provider",
    "cloud image on the local provider",
}


def test_every_bad_spec_of_test_cli_is_sorted():
    assert SHAPE_FAULTS | BEYOND_THE_SCHEMA == set(BAD_SPECS) and not SHAPE_FAULTS & BEYOND_THE_SCHEMA


INVALID: dict[str, Callable[[], dict]] = {
    **{f"cli: {case}": replaced("website", BAD_SPECS[case][:2]) for case in sorted(SHAPE_FAULTS)},
    "an unknown top-level key": changed("website", lambda d: d.update(enviroments={})),
    "a required key missing": changed("website", lambda d: d.pop("images")),
    "a string where a mapping is required": changed("website", lambda d: d.update(images="web")),
    "a list where a mapping is required": changed("website", lambda d: d["roles"].update(edit=["web", 8082])),
    "a role count that is not a number": changed("website", lambda d: d["environments"]["ci"]["roles"].update(edit="one")),
    "a negative role count": changed("website", lambda d: d["environments"]["ci"]["roles"].update(edit=-1)),
    "a provider that is a number": changed("website", lambda d: d.update(provider=5)),
    "a provider name that is no name": changed("website", lambda d: d.update(provider="My Cloud")),
    "an image name that is no name": changed("website", lambda d: d["images"].update(Web=d["images"]["web"])),
    "a port out of range": changed("website", lambda d: d["roles"]["edit"].update(port=70000)),
    "an unknown strategy": changed("website", lambda d: d["defaults"]["rollout"].update(strategy="big-bang")),
    "a zero duration": changed("website", lambda d: d["defaults"]["deadlines"].update(boot="0s")),
    "a share over 100%": changed("website", lambda d: d["roles"]["frontend"]["warmup"].update(min_success="120%")),
    "a warm-up path not from /": changed("website", lambda d: d["roles"]["frontend"]["warmup"].update(paths=["sitemap.xml"])),
    "an unquoted file mode (test_config)": replaced(
        "website", ("{path: tls/key.pem, secret: tls_key}", "{path: tls/key.pem, secret: tls_key, mode: 0600}")
    ),
    "a file with two sources": changed("website", lambda d: d["roles"]["edit"].update(files=[{"path": "a", "content": "x", "source": "y"}])),
    "a file with no source": changed("website", lambda d: d["roles"]["edit"].update(files=[{"path": "a"}])),
    "a secret with no source": changed("website", lambda d: d["environments"]["ci"]["secrets"].update(api_token={})),
    "a secret name that is no name": changed("website", lambda d: d["environments"]["ci"]["secrets"].update({"API TOKEN": {"env": "X"}})),
    "an environment variable that is no name": changed("website", lambda d: d["roles"]["edit"].update(env={"1X": "a"})),
    "an image by id and by name": replaced("website-aws", (AWS_BASE, '    prebuilt: {id: ami-0123, name: "website-*"}\n')),
}


@pytest.mark.parametrize("case", INVALID)
def test_the_schema_refuses_what_phoenix_refuses(validator, case):
    make = INVALID[case]
    assert schema_errors(validator, yaml.safe_load(example_text(make.base))) == []  # refused for the change alone
    data = make()
    assert not model_accepts(data), case
    assert schema_errors(validator, data), case


# test_simulated's bad `simulated:` fields, but those that name a role or another provider
SIMULATED_SHAPE_FAULTS = sorted(set(BAD_SIMULATED) - {"an unknown role", "on another provider"})


@pytest.mark.parametrize("case", SIMULATED_SHAPE_FAULTS)
def test_the_schema_refuses_a_bad_simulated_field(validator, case):
    assert schema_errors(validator, SIMULATED_SPEC) == []
    data = {**copy.deepcopy(SIMULATED_SPEC), "provider": BAD_SIMULATED[case][0]}
    assert not model_accepts(data), case
    assert schema_errors(validator, data), case


# --- each shorthand: the parser and the schema accept the same values -----------------------------

DURATIONS = [30, 3, 1.0, 0.5, "30s", "500ms", "2m", "1h", "7d", "1.5h", " 20s ", "20 s", "30", "0.25s",
             0, -1, "0s", "0.0m", "soon", "5 minutes", "1w", "-5s", "1e3s", ".5s", True, None, [], {}]
DURATIONS_OR_ZERO = DURATIONS + ["0", "0ms", 0.0, "-0s", -0.5]
QUANTITIES = [0, 2, "2", " 3 ", "10%", "25%", "33%", "100%", "100.0%", "0%", "12.5%", "007%",
              -1, "-1", "150%", "100.5%", "25 %", "%", 1.5, "1.5", True, None, "many"]
SHARES = [0, 1, 0.95, "95%", "100%", "0%", " 1 %", "0.5%", "100.00%",
          1.5, -0.1, "150%", "95", "1e1%", "-5%", "%", True, None, "most"]
PROVIDERS = ["local", "aws", {"name": "aws", "region": "eu-west-1"}, {}, "Local", "my cloud", "", 5, ["local"], True, None]
ROLE_COUNTS = [0, 3, {"count": 2}, {"count": 1, "env": {"X": "1"}}, -1, True, "3", 2.5, {"cnt": 1}, {}, None]
FILE_MODES = ["0644", "644", "0600", "0755", 644, 0o600, "0999", "rw-r--r--", "00644", True]
ENV_NAMES = ["A", "_X1", "LOG_LEVEL", "1BAD", "BAD-KEY", "BAD KEY", ""]


def definition(schema: dict, *path: str) -> dict:
    """A part of the printed schema, with the definitions it refers to."""
    part = schema
    for key in path:
        part = part[key]
    return {**part, "$defs": schema["$defs"]}


def unwrapped(value: Any) -> Any:
    return value


# shorthand: (values, the model that reads it, the value as that model's input, where its schema is)
SHORTHANDS = {
    "duration": (DURATIONS, DeadlinesSpec, lambda value: {"boot": value}, ("$defs", "DeadlinesSpec")),
    "duration or zero": (DURATIONS_OR_ZERO, SimulatedDurations, lambda value: {"boot": value}, ("$defs", "SimulatedDurations")),
    "count or percentage": (QUANTITIES, RolloutSpec, lambda value: {"max_surge": value}, ("$defs", "RolloutSpec")),
    "share": (SHARES, WarmupSpec, lambda value: {"min_success": value}, ("$defs", "WarmupSpec")),
    "provider": (PROVIDERS, ProviderSpec, unwrapped, ("properties", "provider")),
    "a role's count": (ROLE_COUNTS, EnvRoleSpec, unwrapped, ("$defs", "EnvRoleSpec")),
    "file mode": (FILE_MODES, FileSpec, lambda mode: {"path": "a", "content": "x", "mode": mode}, ("$defs", "FileSpec")),
    "environment variable name": (ENV_NAMES, DefaultsSpec, lambda name: {"env": {name: "x"}}, ("$defs", "DefaultsSpec")),
}


@pytest.mark.parametrize("shorthand", SHORTHANDS)
def test_each_shorthand_parser_and_schema_agree(schema, shorthand):
    values, model, wrap, path = SHORTHANDS[shorthand]
    check = jsonschema.Draft202012Validator(definition(schema, *path))
    verdicts = {repr(value): (accepts(model, wrap(value)), check.is_valid(wrap(value))) for value in values}
    assert {value: phoenix for value, (phoenix, schema_says) in verdicts.items() if phoenix != schema_says} == {}, (
        "values Phoenix accepts (True) or refuses (False) where the schema says otherwise"
    )
    assert {True, False} == {phoenix for phoenix, _ in verdicts.values()}  # the table has both kinds


# --- the schema as printed ------------------------------------------------------------------------


def test_the_printed_schema_is_draft_2020_12(schema):
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["additionalProperties"] is False  # the models forbid unknown keys
    assert set(schema["required"]) == {"images", "roles", "environments"}


def readme_blocks() -> list[dict]:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "`phoenix schema` prints the file's JSON Schema for editors" in readme
    return [yaml.safe_load(block.split("```", 1)[0]) for block in readme.split("```yaml\n")[1:]]


def merged(base: dict, part: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in part.items():
        result[key] = merged(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def test_the_readme_spec_and_its_fragments(validator):
    """The README's commented spec, and with each later fragment of the local site merged in."""
    spec, *fragments = readme_blocks()
    local = [part for part in fragments if part.get("provider", "local") == "local"]
    assert len(local) >= 3
    for data in [spec] + [merged(spec, part) for part in local]:
        assert model_accepts(data)
        assert schema_errors(validator, data) == []
