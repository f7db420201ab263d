"""The `phoenix` command.

Bad input exits 2 with one line naming the place; other failures exit non-zero with a
one-line reason; a held environment lock exits 3. Never a traceback."""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from .boot import config
from .boot.merged import Item, variable_value
from .errors import PhoenixError
from .example import EXAMPLES, init_example
from .executor import PHASES, Executor, OperationResult, Project, Reporter, check_provider
from .spec import json_schema, load_spec



@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def app() -> None:
    """Phoenix servers in practice: bake an image, launch fresh servers, gate them, swap
    them in, drain and destroy the old ones."""

# Markup off everywhere: what we print comes from specs, servers' logs and the state store,
# and is shown as plain text ("[/x]" in a server's output is text, never a style); the few
# styled words are built as rich Text.
out = Console(highlight=False, soft_wrap=True, markup=False)
if not out.is_terminal:
    out = Console(highlight=False, soft_wrap=True, markup=False, width=200)  # tables readable in CI logs
err = Console(stderr=True, highlight=False, soft_wrap=True, markup=False)

spec_option = click.option(
    "--file", "-f", "spec_file", type=click.Path(path_type=Path), default=None, help="The spec file (default: ./phoenix.yaml)"
)
json_option = click.option("--json", "as_json", is_flag=True, help="Machine-readable output for CI")
env_argument = click.argument("env")


class RichReporter(Reporter):
    """Progress bar and event lines on stderr, so stdout stays clean for --json."""

    def __init__(self, progress: Progress | None, quiet: bool):
        self.progress = progress
        self.quiet = quiet
        self.task = progress.add_task("working", total=0) if progress else None

    def info(self, message: str) -> None:
        if not self.quiet:  # plain text: a server's output quoted in it may hold [brackets]
            (self.progress.console if self.progress else err).print(f"  {message}", markup=False)

    def planned(self, steps: int) -> None:
        if self.progress and steps:
            total = self.progress.tasks[0].total or 0
            self.progress.update(self.task, total=total + steps)

    def advanced(self, steps: int = 1) -> None:
        if self.progress:
            self.progress.advance(self.task, steps)


lock_timeout_option = click.option(
    "--lock-timeout", type=click.FloatRange(min=0), default=0.0, show_default=True,
    help="Seconds to wait for another command on the environment (then exit 3)",
)


@contextmanager
def executor_for(
    spec_file: Path | None, description: str, quiet: bool = False, lock_timeout: float = 0.0, env: str | None = None
) -> Iterator[Executor]:
    """The project's executor; `env`, when given, is checked first, the same way for every command."""
    project = Project(spec_file)
    try:
        if env is not None:
            project.loaded.environment(env)
    except BaseException:
        project.close()
        raise
    progress = None
    if not quiet and err.is_terminal:
        progress = Progress(
            SpinnerColumn(), TextColumn(description, markup=False), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=err, transient=True
        )
    try:
        if progress:
            with progress:
                yield Executor(project, RichReporter(progress, quiet), lock_timeout)
        else:
            yield Executor(project, RichReporter(None, quiet), lock_timeout)
    finally:
        project.close()


def _print_result(result: OperationResult, as_json: bool) -> None:
    if as_json:
        out.print_json(
            json.dumps(
                {
                    "operation": result.id,
                    "environment": result.env,
                    "kind": result.kind,
                    "launched": result.launched,
                    "retired": result.retired,
                    "removed": result.removed,
                    "destroyed": result.destroyed,
                    "baked": result.baked,
                    "seconds": round(result.seconds, 3),
                    "paused": result.paused,
                    "recovered": result.recovered,
                }
            )
        )
    elif result.changed or result.baked:
        out.print(f"{result.kind} {result.env}: {result.summary()} in {result.seconds:.1f}s ({result.id})")
        if result.paused:
            out.print(f"paused after the canary: `phoenix promote {result.env}` or `phoenix rollback {result.env}`")
    else:
        out.print(f"{result.kind} {result.env}: nothing to change ({result.seconds:.1f}s)")


@app.command()
@click.option(
    "--resolve-secrets", is_flag=True,
    help="Also resolve every secret as deploy would: runs secret commands (their output is never shown)",
)
@spec_option
def validate(resolve_secrets: bool, spec_file: Path | None) -> None:
    """Check the spec file and its secret references; errors name the file, line and field (exit code 2)."""
    from .boot.secrets import SecretResolver, check_sources

    loaded = load_spec(spec_file)
    check_provider(loaded)
    spec = loaded.spec
    workdir = loaded.project_dir / ".phoenix"  # only named (persistent paths), never created
    config.check_references(loaded, workdir)
    warnings = check_sources(loaded)
    declared = [source for environment in spec.environments.values() for source in environment.secrets.values()]
    if resolve_secrets:
        resolver = SecretResolver(loaded, workdir)
        for env in spec.environments:
            resolver.resolve(env)  # in memory only: checked, never shown
    for warning in warnings:
        err.print(f"phoenix: warning: {warning}", markup=False)
    checked = ""
    if declared:
        commands = sum(source.command is not None for source in declared)
        checked = f"; secrets: {len(declared)} " + ("resolved" if resolve_secrets else "checked")
        if commands and not resolve_secrets:
            checked += f", {commands} command(s) not run (--resolve-secrets runs them)"
    out.print(
        f"{loaded.path.name}: ok ({len(spec.images)} image(s), {len(spec.roles)} role(s), "
        f"environments: {', '.join(spec.environments)}{checked})",
        markup=False,
    )


@app.command()
def schema() -> None:
    """Print the JSON Schema of phoenix.yaml, for editors."""
    print(json.dumps(json_schema(), indent=2))


@app.command()
@click.argument("images", nargs=-1)
@spec_option
@json_option
def bake(images: tuple[str, ...], spec_file: Path | None, as_json: bool) -> None:
    """Build images; the same inputs give the same image id and a cache hit."""
    with executor_for(spec_file, "baking", quiet=True) as executor:
        results = executor.bake(list(images))
    if as_json:
        out.print_json(json.dumps([{"image": n, "id": i, "cached": c, "seconds": round(s, 3)} for n, i, c, s in results]))
        return
    for name, image_id, cached, seconds in results:
        out.print(f"{name}: {image_id} ({'cache hit, not rebuilt' if cached else f'baked in {seconds:.2f}s'})")


@app.command()
@env_argument
@lock_timeout_option
@spec_option
@json_option
def up(env: str, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Create the environment from nothing (or complete it); a complete one is left unchanged."""
    with executor_for(spec_file, f"up {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        _print_result(executor.up(env), as_json)


dry_run_option = click.option("--dry-run", is_flag=True, help="Print the plan (servers, batches, reasons) and change nothing")
discard_state_option = click.option(
    "--discard-state", is_flag=True, help="Retire servers even when they hold files written outside scratch and persistent mounts"
)


@app.command("plan")
@env_argument
@spec_option
@json_option
def plan_command(env: str, spec_file: Path | None, as_json: bool) -> None:
    """Every server that should be replaced and why; exit 1 when something should, or when
    it cannot tell (a secret command, never run here, with no keyed hash recorded)."""
    with executor_for(spec_file, "plan", quiet=True, env=env) as executor:
        report = executor.reconcile_plan(env)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        for role in report["roles"]:
            items = role["replace"] + role["retire"]
            parts = []
            if items or role["missing"]:
                parts.append(f"{len(items)} to replace" + (f", {role['missing']} missing" if role["missing"] else ""))
            if role["cannot_tell"]:
                parts.append(role["cannot_tell"])
            out.print(f"{role['role']}: " + ("; ".join(parts) or "up to date"))
            for item in items:
                out.print(f"  {item['server']}: {item['reason']}", markup=False)
    raise click.exceptions.Exit(1 if report["needs_replacement"] or report["undetermined"] else 0)


@app.command("drift")
@env_argument
@spec_option
@json_option
def drift_command(env: str, spec_file: Path | None, as_json: bool) -> None:
    """Each server's files against how it booted; state written on servers listed apart; exit 1 on drift."""
    with executor_for(spec_file, "drift", quiet=True, env=env) as executor:
        report = executor.drift(env)
    if as_json:
        out.print_json(json.dumps(report))
        raise click.exceptions.Exit(1 if report["drifted"] else 0)
    for server in report["servers"]:
        if not server["supported"]:
            out.print(f"{server['id']}: the provider cannot tell")
            continue
        if not (server["modified"] or server["added"] or server["deleted"]):
            out.print(f"{server['id']}: as booted")
            continue
        out.print(f"{server['id']} ({server['role']}):")
        for label in ("modified", "added", "deleted"):
            for path in server[label]:
                out.print(f"  {label:8s} {path}", markup=False)
        if server["state"]:
            verdict = "discarded on retirement" if server["on_server_state"] == "discard" else "retiring it is refused without --discard-state"
            out.print(f"  state left on the server ({verdict}): {', '.join(server['state'])}", markup=False)
    raise click.exceptions.Exit(1 if report["drifted"] else 0)  # like plan: 1 when there is something to act on


@app.command()
@env_argument
@click.option("--interval", type=float, default=None, help="Seconds between passes (default: the spec's watch.interval)")
@click.option("--max-replacements-per-hour", "budget", type=click.IntRange(min=0), default=None, help="Budget (default: the spec's)")
@click.option("--passes", type=click.IntRange(min=1), default=None, help="Stop after this many passes (default: until SIGTERM)")
@discard_state_option
@spec_option
def watch(env: str, interval: float | None, budget: int | None, passes: int | None, discard_state: bool, spec_file: Path | None) -> None:
    """Reconcile loop: replace outdated, old, drifted, unhealthy and dead servers as they appear;
    exit 1 when it ends with a role below its count."""
    from .watch import Watcher

    load_spec(spec_file).environment(env)
    watcher = Watcher(spec_file, env, lambda line: out.print(line, markup=False), interval, budget, discard_state)
    watcher.run(passes)
    short = watcher.shortfall()
    if short:
        below = ", ".join(f"{role} serves {serving} of {wanted}" for role, (serving, wanted) in sorted(short.items()))
        raise PhoenixError(f"watch ended with {env} below its count: {below}")


@app.command()
@env_argument
@click.option("--kill", type=click.IntRange(min=1), default=1, show_default=True, help="How many in-service servers to terminate")
@click.option("--role", "-r", default=None, help="Only servers of this role")
@click.option("--heal", is_flag=True, help="Heal right away instead of waiting for `phoenix watch`")
@click.option("--timeout", type=float, default=120.0, show_default=True, help="Seconds to wait for the full count again")
@click.option("--rate", type=float, default=100.0, show_default=True, help="Requests per second of the load meanwhile")
@click.option("--allow-outage", is_flag=True, help="May kill the last in-service server of a role")
@click.option("--seed", type=int, default=None, help="Random seed, to repeat a run")
@spec_option
@json_option
def chaos(
    env: str, kill: int, role: str | None, heal: bool, timeout: float, rate: float, allow_outage: bool, seed: int | None,
    spec_file: Path | None, as_json: bool,
) -> None:
    """Terminate random in-service servers under load; report the time to the full count again."""
    from .watch import chaos as run_chaos

    load_spec(spec_file).environment(env)
    report = run_chaos(spec_file, env, kill, role, heal, timeout, rate, RichReporter(None, as_json), allow_outage, seed)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        out.print(
            f"chaos {env}: killed {', '.join(report['killed'])}; full count again after {report['seconds_to_full_count']:.2f}s; "
            f"requests {report['requests']} sent, {report['failed']} failed {report['errors'] or ''}",
            markup=False,
        )


def _print_plan(plan: dict, as_json: bool) -> None:
    if as_json:
        out.print_json(json.dumps(plan))
        return
    head = f"{plan['kind']} {plan['environment']}" + (f" ({plan['strategy']})" if "strategy" in plan else "")
    out.print(Text.assemble(("plan", "bold"), f": {head}" + (f": {plan['action']}" if "action" in plan else "") + " — nothing was changed"))
    if "servers" in plan:
        out.print(f"  servers: {', '.join(plan['servers']) or 'none'}")
    for role in plan.get("roles", []):
        changes = role["remove"] + role["replace"] + role["retire_extra"]
        if not changes and not any("launch" in step and "launch 0" not in step for step in role["steps"]):
            out.print(f"  {role['role']}: " + (role.get("cannot_tell") or f"nothing to change ({role['desired']} wanted)"))
            continue
        out.print(f"  {role['role']}: {role['desired']} wanted, image {role['image']}")
        for item in changes:
            out.print(f"    {item['server']}: {item['reason']}")
        for step in role["steps"]:
            out.print(f"    - {step}")
        if role.get("cannot_tell"):
            out.print(f"    {role['cannot_tell']}")


@app.command()
@env_argument
@click.option("--strategy", type=click.Choice(["rolling", "blue-green", "canary"]), default=None, help="Instead of the environment's")
@click.option("--pause", is_flag=True, help="canary: stop after the canary and wait for `promote` or `rollback`")
@dry_run_option
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def deploy(env: str, strategy: str | None, pause: bool, dry_run: bool, discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Bake, then replace every server whose image or boot configuration changed."""
    with executor_for(spec_file, f"deploy {env}", quiet=as_json or dry_run, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        if dry_run:
            _print_plan(executor.describe(env, "deploy", strategy), as_json)
            return
        _print_result(executor.deploy(env, strategy, pause), as_json)


@app.command()
@env_argument
@click.option("--role", "-r", default=None, help="Only this role")
@dry_run_option
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def rotate(env: str, role: str | None, dry_run: bool, discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Replace every server even if nothing changed: the phoenix rebirth."""
    with executor_for(spec_file, f"rotate {env}", quiet=as_json or dry_run, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        if dry_run:
            _print_plan(executor.describe(env, "rotate", role=role), as_json)
            return
        _print_result(executor.rotate(env, role), as_json)


@app.command()
@env_argument
@dry_run_option
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def rollback(env: str, dry_run: bool, discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Back to the previous build: a kept blue-green group at once, else a redeploy."""
    with executor_for(spec_file, f"rollback {env}", quiet=as_json or dry_run, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        if dry_run:
            _print_plan(executor.describe(env, "rollback"), as_json)
            return
        _print_result(executor.rollback(env), as_json)


@app.command()
@env_argument
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def promote(env: str, discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """After a paused canary: roll the rest of the new build."""
    with executor_for(spec_file, f"promote {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        _print_result(executor.promote(env), as_json)


@app.command()
@env_argument
@lock_timeout_option
@spec_option
@json_option
def recover(env: str, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Only recovery: finish or undo what an interrupted command left, remove orphans."""
    with executor_for(spec_file, f"recover {env}", quiet=True, lock_timeout=lock_timeout, env=env) as executor:
        result = executor.recover(env)
    if as_json:
        out.print_json(json.dumps({"operation": result.id, "environment": env, "recovered": result.recovered}))
    elif result.recovered:
        out.print(f"recover {env}: found and did:")
        for action in result.recovered:
            out.print(f"  - {action}", markup=False)
    else:
        out.print(f"recover {env}: nothing to recover (the record matches what runs)")


@app.command()
@env_argument
@lock_timeout_option
@spec_option
@json_option
def destroy(env: str, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Stop and remove every server and load balancer of the environment."""
    with executor_for(spec_file, f"destroy {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        _print_result(executor.destroy(env), as_json)


@app.command()
@env_argument
@spec_option
@json_option
def status(env: str, spec_file: Path | None, as_json: bool) -> None:
    """Servers and load balancers of the environment, as they really are."""
    with executor_for(spec_file, "status", quiet=True, env=env) as executor:
        report = executor.status(env)
    if as_json:
        out.print_json(json.dumps(report))
        return
    table = Table(title=f"{env}: servers", title_justify="left")
    common = ("id", "role", "address", "image", "state", "in_service", "launched_at", "age_s", "fingerprint")
    # the provider's own fields (pid and root locally, instance and zone on AWS)
    extra = list(dict.fromkeys(key for s in report["servers"] for key in s if key not in common))
    for column in ("id", "role", "address", "image", "state", "in service", "launched at", "age", *extra):
        table.add_column(column)
    for s in report["servers"]:
        table.add_row(
            s["id"], s["role"], s["address"], s["image"], s["state"], "yes" if s["in_service"] else "no",
            s["launched_at"], f"{s['age_s']:.0f}s", *(str(s.get(key) or "") for key in extra),
        )
    out.print(table)
    lbs = Table(title=f"{env}: load balancers", title_justify="left")
    for column in ("role", "address", "tls (passthrough)", "alive", "members up"):
        lbs.add_column(column)
    for lb in report["load_balancers"]:
        lbs.add_row(lb["role"], lb["address"], lb.get("tls_address", ""), "yes" if lb["alive"] else "no", str(lb["members_up"]))
    out.print(lbs)


@app.command()
@click.option("--probe", is_flag=True, help="Also time making an image and launching a server (creates and removes them)")
@spec_option
@json_option
def doctor(probe: bool, spec_file: Path | None, as_json: bool) -> None:
    """What the configured provider can do: images, user-data, load balancers, floating IPs, DNS."""
    with executor_for(spec_file, "doctor", quiet=True) as executor:
        report = executor.doctor(probe)
    if as_json:
        out.print_json(json.dumps(report))
    else:
        table = Table(title=f"provider {report['provider']}", title_justify="left")
        for column in ("capability", "ok", "detail", "seconds"):
            table.add_column(column)
        for row in report["capabilities"]:
            seconds = f"{row['seconds']:.2f}s" if "seconds" in row else ""
            table.add_row(row["capability"], "yes" if row["ok"] else "no", row["detail"], seconds)
        out.print(table)
    if any(not row["ok"] for row in report["capabilities"] if row["capability"] in ("account", "network", "images", "load balancer")):
        raise SystemExit(1)  # what every deployment needs is missing


@app.command()
@env_argument
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many operations, newest first")
@spec_option
@json_option
def history(env: str, limit: int, spec_file: Path | None, as_json: bool) -> None:
    """Past operations with per-phase timings (bake, launch, boot, health, swap, drain, destroy)."""
    with executor_for(spec_file, "history", quiet=True, env=env) as executor:
        operations = executor.history(env, limit)
    if as_json:
        out.print_json(json.dumps(operations))
        return
    out.print(phase_table(operations, f"{env}: operations (per phase: the slowest server, ×servers)"))
    warmed = [(op["id"], w) for op in operations for w in op["warmups"]]
    if warmed:
        table = Table(title=f"{env}: warm-up per server", title_justify="left")
        for column in ("operation", "server", "pages warmed", "failures", "bytes", "seconds", "gate"):
            table.add_column(column, justify="left" if column in ("operation", "server", "gate") else "right")
        for op_id, w in warmed:
            table.add_row(
                op_id, w["server"], f"{w['succeeded']}/{w['planned']}", str(w["failures"]), str(w["bytes"]),
                f"{w['seconds']:.2f}", "passed" if w["passed"] else "failed",
            )
        out.print(table)


def _env_role(executor: Executor, env: str, role: str) -> None:
    executor.project.loaded.environment(env)
    executor._check_env_role(env, role)


@app.command("config")
@env_argument
@click.argument("role")
@spec_option
@json_option
def config_command(env: str, role: str, spec_file: Path | None, as_json: bool) -> None:
    """The merged boot configuration of one server, secrets redacted, with where each value came from."""
    with executor_for(spec_file, "config", quiet=True, env=env) as executor:
        _env_role(executor, env, role)
        loaded = executor.project.loaded
        merged = config.merge(loaded, executor.project.workdir, env, role, executor.lb_addresses(env))
        config.check_isolation(loaded, env, [merged])

    def origin(item: Item) -> dict:
        return {"from": item.origin, "line": None if item.loc == ("phoenix",) else int(loaded.where(*item.loc).rsplit(":", 1)[1])}

    def shown(item: Item) -> str:
        value = variable_value(item, None, "redact", None)
        return "(assigned at up)" if value == config.PLACEHOLDER_LB else value

    report = {
        "environment": env,
        "role": role,
        "layers": ["defaults", f"roles.{role}", f"environments.{env}", f"environments.{env}.roles.{role}"],
        "env": {name: {"value": shown(item), **origin(item)} for name, item in sorted(merged.variables.items())},
        "files": {
            path: {
                "mode": item.value.permissions,
                "owner": item.value.owner,
                "content": f"<redacted secret {item.value.secret}>" if item.value.secret else (
                    f"<file {item.value.source}>" if item.value.source else f"<{len(item.value.content.encode())} bytes>"
                ),
                **origin(item),
            }
            for path, item in sorted(merged.files.items())
        },
        "runcmd": [{"command": item.value, **origin(item)} for item in merged.runcmd],
        "scripts": [{"script": item.value, **origin(item)} for item in merged.scripts],
        "cloud_config": {key: {"value": item.value, **origin(item)} for key, item in sorted(merged.cloud_config.items())},
        "secrets": {name: source.describe() for name, source in sorted(loaded.spec.environments[env].secrets.items())},
    }
    if as_json:
        out.print_json(json.dumps(report))
        return
    out.print(Text.assemble((f"{env}/{role}", "bold"), f": configuration at boot (later wins: {' -> '.join(report['layers'])})"))
    table = Table(show_header=True, box=None, pad_edge=False)
    for column in ("", "name", "value", "from"):
        table.add_column(column)
    where = lambda entry: entry["from"] + (f" ({loaded.path.name}:{entry['line']})" if entry["line"] else "")  # noqa: E731
    for name, entry in report["env"].items():
        table.add_row("env", name, entry["value"], where(entry))
    for path, entry in report["files"].items():
        table.add_row("file", path, f"{entry['mode']} {entry['owner']} {entry['content']}", where(entry))
    for entry in report["runcmd"]:
        table.add_row("runcmd", "", entry["command"], where(entry))
    for entry in report["scripts"]:
        table.add_row("script", "", entry["script"], where(entry))
    for key, entry in report["cloud_config"].items():
        table.add_row("cloud-config", key, json.dumps(entry["value"]), where(entry))
    for name, source in report["secrets"].items():
        table.add_row("secret", name, f"from {source}", f"environments.{env}.secrets")
    out.print(table, markup=False)


@app.command()
@env_argument
@click.argument("role")
@spec_option
def userdata(env: str, role: str, spec_file: Path | None) -> None:
    """The cloud-init user-data a server of ENV/ROLE boots with, secrets redacted (secret
    commands are not run: the size counts a stand-in for their values)."""
    from .boot.userdata import USERDATA_LIMIT, render

    with executor_for(spec_file, "userdata", quiet=True, env=env) as executor:
        _env_role(executor, env, role)
        project = executor.project
        merged = config.merge(project.loaded, project.workdir, env, role, executor.lb_addresses(env))
        config.check_isolation(project.loaded, env, [merged])
        resolved = executor.secrets_for(env, read_only=True)
        rendered = render(project.loaded, merged, resolved.values, "deliver", None)  # the size and checks (stand-ins for commands)
        shown = render(project.loaded, merged, None, "redact", None, check=False)
    sys.stdout.write(shown.text)
    size = f"{rendered.raw_size} bytes" + (f", {len(rendered.document)} gzipped" if rendered.gzipped else "")
    stand_ins = sorted({name for name, _ in merged.secret_refs()} & set(resolved.not_run))
    if stand_ins:
        size += f" with a stand-in for secret command(s) {', '.join(stand_ins)}, not run here"
    err.print(f"user-data for {env}/{role}: {size} (limit {USERDATA_LIMIT}); schema: valid", markup=False)


@app.group()
def secrets() -> None:
    """Per-environment secrets."""


@secrets.command("tls")
@env_argument
@click.option("--host", required=True, help="The name the certificate is for (CN and subjectAltName)")
@click.option("--days", type=click.IntRange(min=1), default=365, show_default=True)
@click.option("--force", is_flag=True, help="Replace an existing pair")
@spec_option
def secrets_tls(env: str, host: str, days: int, force: bool, spec_file: Path | None) -> None:
    """Create a self-signed TLS certificate and key for ENV (mode 0600) under secrets/ENV/."""
    from .boot.secrets import create_tls_pair

    loaded = load_spec(spec_file)
    loaded.environment(env)
    directory = loaded.project_dir / "secrets" / env
    cert, key = create_tls_pair(directory, host, days, force)
    relative = lambda path: path.relative_to(loaded.project_dir)  # noqa: E731
    out.print(f"wrote {relative(cert)} and {relative(key)} (mode 0600) for {host}; reference them in {loaded.path.name}:")
    out.print(
        f"  environments:\n    {env}:\n      secrets:\n        tls_cert: {{file: {relative(cert)}}}\n"
        f"        tls_key: {{file: {relative(key)}}}",
        markup=False,
    )


def phase_table(operations: list[dict], title: str) -> Table:
    """One row per operation; per phase the slowest server's time (×servers)."""
    table = Table(title=title, title_justify="left")
    shown = [p for p in PHASES if any(p in op["phases"] for op in operations)]  # no empty columns
    for column in ("operation", "kind", "status", "started", "total", *shown, "summary"):
        # ids and times are never cut (they are looked up and pasted); the summary wraps instead
        table.add_column(
            column, justify="right" if column in PHASES or column == "total" else "left",
            no_wrap=column != "summary", min_width=None if column == "summary" else len(column),
        )
    for op in operations:
        phases = op["phases"]
        cells = [f"{phases[p]['max_s']:.2f}s ×{phases[p]['count']}" if p in phases else "" for p in shown]
        total = f"{op['seconds']:.2f}s" if op["seconds"] is not None else "running"
        table.add_row(op["id"], op["kind"], op["status"], op["started_at"], total, *cells, op["summary"])
    return table


@app.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--example", type=click.Choice(EXAMPLES), default="website", show_default=True,
              help="website: the local provider; website-aws: the same site on AWS")
def init(directory: Path, example: str) -> None:
    """Copy an example project out as a starting point."""
    if (directory / "phoenix.yaml").exists():
        raise PhoenixError(f"{directory / 'phoenix.yaml'} already exists; not overwriting it")
    made = init_example(directory, example)
    out.print(f"example project copied to {directory}, with a self-signed TLS pair per environment ({len(made)} files under secrets/)")
    out.print(f"next: cd {directory} && phoenix up ci")


@app.command()
@click.option("--env", default="production", show_default=True, help="Environment of the example to use")
@click.option("--rate", type=click.FloatRange(min=1), default=150.0, show_default=True, help="Requests per second through the load balancers")
@click.option("--keep", is_flag=True, help="Keep the demo directory (logs, state) afterwards")
def demo(env: str, rate: float, keep: bool) -> None:
    """Bring up the example, rotate every server under steady load, report, tear down."""
    from .load import LoadGenerator

    workdir = Path(tempfile.mkdtemp(prefix="phoenix-demo-"))
    os.chmod(workdir, 0o711)  # servers that run as an unprivileged uid pass through it (nothing listed)
    init_example(workdir)
    spec_file = workdir / "phoenix.yaml"
    out.print(Text.assemble(("phoenix demo", "bold"), f": the example website in {workdir}, environment {env}"))
    failed = 0
    try:
        with executor_for(spec_file, f"up {env}") as executor:
            result = executor.up(env)
            out.print(f"up: {result.summary()} in {result.seconds:.1f}s")
            lbs = {lb["role"]: lb["address"] for lb in executor.status(env)["load_balancers"]}
        urls = [f"http://{lbs['frontend']}/"] + [f"http://{lbs['frontend']}/page/{n}" for n in range(10)]
        urls += [f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]
        out.print(f"load: {rate:g} requests/s over 8 keep-alive connections to {', '.join(sorted(lbs.values()))}")
        with LoadGenerator(urls, concurrency=8, rate=rate, max_seconds=300) as load:
            load.wait_for_requests(int(rate))  # about a second of steady state first
            with executor_for(spec_file, f"rotate {env}") as executor:
                rotation = executor.rotate(env)
                report = executor.history(env, limit=1)
            load.wait_for_requests(load.stats.sent + int(rate / 2))
        stats = load.stats
        failed = stats.failed
        out.print(f"rotate: {rotation.summary()} in {rotation.seconds:.1f}s")
        out.print(phase_table(report, "rotation phases (per phase: the slowest server, ×servers)"))
        verdict = ("no request failed", "green") if not failed else (f"{failed} failed {dict(stats.errors)}", "red")
        out.print(
            Text.assemble(
                f"requests: {stats.sent} sent, {stats.ok} ok, {failed} failed — ", verdict,
                f"; latency p50 {stats.percentile(50) * 1000:.1f} ms, p99 {stats.percentile(99) * 1000:.1f} ms",
            )
        )
    finally:
        with executor_for(spec_file, f"destroy {env}", quiet=True) as executor:
            executor.destroy(env)
        out.print(f"destroy: environment {env} torn down")
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        raise PhoenixError(f"{failed} request(s) failed during the rotation")


def main(argv: list[str] | None = None) -> int:
    """Entry point: one line and an exit code for every failure, never a traceback."""
    try:
        code = app.main(args=argv, prog_name="phoenix", standalone_mode=False)
        if isinstance(code, int):  # a command's own exit code (ctx.exit / Exit), e.g. `plan`
            return code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.exceptions.Abort:
        err.print("phoenix: aborted")
        return 130
    except click.UsageError as exc:
        where = f" {exc.ctx.command.name}" if exc.ctx and exc.ctx.command and exc.ctx.command.name != "phoenix" else ""
        err.print(f"phoenix{where}: error: {exc.format_message()}", markup=False)
        return 2
    except click.ClickException as exc:
        err.print(f"phoenix: error: {exc.format_message()}", markup=False)
        return exc.exit_code
    except PhoenixError as exc:
        err.print(f"phoenix: error: {exc}", markup=False)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("phoenix: interrupted")
        return 130
    except Exception as exc:  # noqa: BLE001 - a bug of ours: still one line, the traceback on request
        if os.environ.get("PHOENIX_DEBUG"):
            raise
        err.print(f"phoenix: internal error: {type(exc).__name__}: {exc} (PHOENIX_DEBUG=1 shows the traceback)", markup=False)
        return 1
    return 0
