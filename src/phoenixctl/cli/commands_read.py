"""The commands that only read: status, history, plan, drift, config, userdata, doctor.

Each command imports what it uses in its body: at import this module loads only click
(see `cli/__init__.py`); rich's tables load after the --json answer, which scripts ask for
often and which never needs them."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .common import env_argument, executor_for, json_option, spec_option
from .json_output import print_json

if TYPE_CHECKING:
    from ..boot.merged import Item
    from ..engine import Executor


@click.command()
@env_argument
@spec_option
@json_option
def status(env: str, spec_file: Path | None, as_json: bool) -> None:
    """Servers and load balancers of the environment, as they really are."""
    with executor_for(spec_file, "status", quiet=True, env=env) as executor:
        report = executor.reports.status(env)
        drill = drill_standing(executor, env)
    if as_json:
        print_json({**report.as_json(), "drill": drill.as_json()})
        return
    from rich.table import Table

    from .console import out

    table = Table(title=f"{env}: servers", title_justify="left")
    # the provider's own fields (pid and root locally, instance and zone on AWS)
    extra = list(dict.fromkeys(key for s in report.servers for key in s.provider))
    for column in ("id", "role", "address", "image", "state", "in service", "launched at", "age", *extra):
        table.add_column(column)
    for s in report.servers:
        table.add_row(
            s.id, s.role, s.address, s.image, s.state, "yes" if s.in_service else "no",
            s.launched_at, f"{s.age_s:.0f}s", *(str(s.provider.get(key) or "") for key in extra),
        )
    out.print(table)
    lbs = Table(title=f"{env}: load balancers", title_justify="left")
    for column in ("role", "address", "tls (passthrough)", "alive", "members up"):
        lbs.add_column(column)
    for lb in report.load_balancers:
        lbs.add_row(lb.role, lb.address, lb.tls_address or "", "yes" if lb.alive else "no", str(lb.members_up))
    out.print(lbs)
    if report.state:
        out.print(f"state: {report.state['location']} ({report.state['backend']})", markup=False, highlight=False)
    print_drill(drill)


def drill_standing(executor: Executor, env: str):
    """The last successful drill and whether one is overdue (engine/disaster.py)."""
    from ..engine.disaster import DisasterRecovery

    return DisasterRecovery(executor).drill_standing(env)


def print_drill(drill) -> None:
    from .console import err, out

    last = drill.last
    out.print(f"last successful drill: {last.id} at {last.started_at:%Y-%m-%d %H:%M:%S} UTC: {last.summary}" if last else "last successful drill: none", markup=False)
    if drill.warning:
        err.print(f"phoenix: warning: {drill.warning}", markup=False)


@click.command()
@env_argument
@click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True, help="How many operations, newest first")
@spec_option
@json_option
def history(env: str, limit: int, spec_file: Path | None, as_json: bool) -> None:
    """Past operations with per-phase timings (bake, launch, boot, health, swap, drain, destroy)."""
    with executor_for(spec_file, "history", quiet=True, env=env) as executor:
        operations = executor.reports.history(env, limit)
        drill = drill_standing(executor, env)
    if as_json:
        print_json([op.as_json() for op in operations])
        return
    from rich.table import Table

    from .console import out
    from .render import phase_table

    out.print(phase_table(operations, f"{env}: operations (per phase: the slowest server, ×servers)"))
    from ..engine.rebuild import STEPS

    for op in operations:  # a recovery's own steps, which the table above has no columns for
        steps = [f"{name} {op.phases[name].total_s:.2f}s" for name in STEPS if name in op.phases]
        if steps and op.kind in ("rebuild", "drill"):
            out.print(f"{op.id} ({op.kind}, {op.status}): {', '.join(steps)}", markup=False)
    print_drill(drill)
    warmed = [(op.id, w) for op in operations for w in op.warmups]
    if warmed:
        table = Table(title=f"{env}: warm-up per server", title_justify="left")
        for column in ("operation", "server", "pages warmed", "failures", "bytes", "seconds", "gate"):
            table.add_column(column, justify="left" if column in ("operation", "server", "gate") else "right")
        for op_id, w in warmed:
            table.add_row(
                op_id, w.server, f"{w.succeeded}/{w.planned}", str(w.failures), str(w.bytes),
                f"{w.seconds:.2f}", "passed" if w.passed else "failed",
            )
        out.print(table)


@click.command("plan")
@env_argument
@spec_option
@json_option
def plan_command(env: str, spec_file: Path | None, as_json: bool) -> None:
    """Every server that should be replaced and why; exit 1 when something should, or when
    it cannot tell (a secret command, never run here, with no keyed hash recorded)."""
    with executor_for(spec_file, "plan", quiet=True, env=env) as executor:
        report = executor.reports.reconcile_plan(env)
        drill = drill_standing(executor, env)
    if drill.warning:  # a warning: the plan's exit code is about servers
        from .console import err

        err.print(f"phoenix: warning: {drill.warning}", markup=False)
    if as_json:
        print_json({**report.as_json(), "drill_warning": drill.warning})
    else:
        from .console import out

        for role in report.roles:
            items = role.replace + role.retire
            parts = []
            if items or role.missing:
                parts.append(f"{len(items)} to replace" + (f", {role.missing} missing" if role.missing else ""))
            if role.cannot_tell:
                parts.append(role.cannot_tell)
            out.print(f"{role.role}: " + ("; ".join(parts) or "up to date"))
            for item in items:
                out.print(f"  {item.server}: {item.reason}", markup=False)
    raise click.exceptions.Exit(1 if report.needs_replacement or report.undetermined else 0)


@click.command("drift")
@env_argument
@spec_option
@json_option
def drift_command(env: str, spec_file: Path | None, as_json: bool) -> None:
    """Each server's files against how it booted; state written on servers listed apart; exit 1 on drift."""
    from .console import out

    with executor_for(spec_file, "drift", quiet=True, env=env) as executor:
        report = executor.reports.drift(env)
    if as_json:
        print_json(report.as_json())
        raise click.exceptions.Exit(1 if report.drifted else 0)
    for server in report.servers:
        if not server.supported:
            out.print(f"{server.id}: the provider cannot tell")
            continue
        if not server.drifted:
            out.print(f"{server.id}: as booted")
            continue
        out.print(f"{server.id} ({server.role}):")
        for label, paths in (("modified", server.modified), ("added", server.added), ("deleted", server.deleted)):
            for path in paths:
                out.print(f"  {label:8s} {path}", markup=False)
        if server.state:
            verdict = "discarded on retirement" if server.on_server_state == "discard" else "retiring it is refused without --discard-state"
            out.print(f"  state left on the server ({verdict}): {', '.join(server.state)}", markup=False)
    raise click.exceptions.Exit(1 if report.drifted else 0)  # like plan: 1 when there is something to act on


def _env_role(executor: Executor, env: str, role: str) -> None:
    executor.project.loaded.environment(env)
    executor.check_env_role(env, role)


@click.command("config")
@env_argument
@click.argument("role")
@spec_option
@json_option
def config_command(env: str, role: str, spec_file: Path | None, as_json: bool) -> None:
    """The merged boot configuration of one server, secrets redacted, with where each value came from."""
    from ..boot import config
    from ..boot.merged import variable_value
    from .console import out

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
        print_json(report)
        return
    from rich.table import Table
    from rich.text import Text

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


@click.command()
@env_argument
@click.argument("role")
@spec_option
def userdata(env: str, role: str, spec_file: Path | None) -> None:
    """The cloud-init user-data a server of ENV/ROLE boots with, secrets redacted (secret
    commands are not run: the size counts a stand-in for their values)."""
    from ..boot import config
    from ..boot.userdata import USERDATA_LIMIT, render
    from .console import err

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


@click.command()
@click.option("--probe", is_flag=True, help="Also time making an image and launching a server (creates and removes them)")
@spec_option
@json_option
def doctor(probe: bool, spec_file: Path | None, as_json: bool) -> None:
    """What the configured provider can do: images, user-data, load balancers, floating IPs, DNS."""
    from .console import out

    with executor_for(spec_file, "doctor", quiet=True) as executor:
        report = executor.reports.doctor(probe)
    if as_json:
        print_json(report.as_json())
    else:
        from rich.table import Table

        table = Table(title=f"provider {report.provider}", title_justify="left")
        for column in ("capability", "ok", "detail", "seconds"):
            table.add_column(column)
        for row in report.capabilities:
            seconds = f"{row.seconds:.2f}s" if row.seconds is not None else ""
            table.add_row(row.capability, "yes" if row.ok else "no", row.detail, seconds)
        out.print(table)
    if any(not row.ok for row in report.capabilities if row.capability in ("account", "network", "images", "load balancer")):
        raise SystemExit(1)  # what every deployment needs is missing


@click.command()
@click.argument("env_a")
@click.argument("env_b")
@spec_option
@json_option
def compare(env_a: str, env_b: str, spec_file: Path | None, as_json: bool) -> None:
    """Build by build: the time to live (bake to the last server serving it) in ENV_A and
    ENV_B, their ratio, and which deploys failed where."""
    from .console import out

    with executor_for(spec_file, "compare", quiet=True, env=env_a) as executor:
        report = executor.compare(env_a, env_b)
    if as_json:
        print_json(report)
        return
    from rich.table import Table

    seconds = lambda value: f"{value:.2f}s" if value is not None else "-"  # noqa: E731
    table = Table(title=f"time to live: {env_a} against {env_b}, newest build first", title_justify="left")
    for column in ("build", "baked", env_a, env_b, "ratio", "failed"):
        table.add_column(column, justify="right" if column in (env_a, env_b, "ratio") else "left", no_wrap=column != "failed")
    for build in report["builds"]:
        failed = "; ".join(f"{env}: {', '.join(ops)}" for env, ops in build["failed"].items())
        ttl = build["time_to_live_s"]
        ratio = f"{build['ratio']:.2f}" if build["ratio"] is not None else "-"
        table.add_row(", ".join(build["images"].values()), build["baked_at"] or "-", seconds(ttl[env_a]), seconds(ttl[env_b]), ratio, failed)
    out.print(table)
    medians = report["median_time_to_live_s"]
    ratio = report["median_ratio"]
    out.print(
        f"median time to live: {env_a} {seconds(medians[env_a])}, {env_b} {seconds(medians[env_b])}; "
        f"median ratio {env_a}/{env_b}: {ratio if ratio is not None else '-'}",
        markup=False,
    )


COMMANDS = (status, history, plan_command, drift_command, config_command, userdata, doctor, compare)
