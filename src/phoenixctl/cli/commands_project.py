"""Commands on the project as a whole: validate, schema, bake, init, demo, secrets, watch, chaos.

Each command imports what it uses in its body: at import this module loads only click
(see `cli/__init__.py`)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import click

from ..errors import PhoenixError
from ..example import EXAMPLES, init_example
from .common import discard_state_option, env_argument, executor_for, json_option, spec_option
from .json_output import print_json


@click.command()
@click.option(
    "--resolve-secrets", is_flag=True,
    help="Also resolve every secret as deploy would: runs secret commands (their output is never shown)",
)
@spec_option
def validate(resolve_secrets: bool, spec_file: Path | None) -> None:
    """Check the spec file and its secret references; errors name the file, line and field (exit code 2)."""
    from ..boot import config
    from ..boot.secrets import SecretResolver, check_sources
    from ..engine.capabilities import check_provider
    from ..spec import load_spec
    from .console import err, out

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


@click.command()
def schema() -> None:
    """Print the JSON Schema of phoenix.yaml, for editors."""
    from ..spec import json_schema

    print(json.dumps(json_schema(), indent=2))


@click.command()
@click.argument("images", nargs=-1)
@click.option("--no-cache", is_flag=True, help="Rebuild every layer, even those whose inputs did not change")
@spec_option
@json_option
def bake(images: tuple[str, ...], no_cache: bool, spec_file: Path | None, as_json: bool) -> None:
    """Build images, layer by layer; a layer whose inputs did not change is a cache hit."""
    from .commands_images import bake_json, print_bake

    with executor_for(spec_file, "baking", quiet=True) as executor:
        results = executor.bake_layers(list(images), no_cache=no_cache)
    if as_json:
        print_json(bake_json(results))
        return
    print_bake(results)


@click.command()
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--example", type=click.Choice(EXAMPLES), default="website", show_default=True,
              help="website: the local provider; website-aws, website-openstack: the same site on AWS, on OpenStack")
def init(directory: Path, example: str) -> None:
    """Copy an example project out as a starting point."""
    from .console import out

    if (directory / "phoenix.yaml").exists():
        raise PhoenixError(f"{directory / 'phoenix.yaml'} already exists; not overwriting it")
    made = init_example(directory, example)
    out.print(f"example project copied to {directory}, with a self-signed TLS pair per environment ({len(made)} files under secrets/)")
    out.print(f"next: cd {directory} && phoenix up ci")


@click.command()
@click.option("--env", default="production", show_default=True, help="Environment of the example to use")
@click.option("--rate", type=click.FloatRange(min=1), default=150.0, show_default=True, help="Requests per second through the load balancers")
@click.option("--keep", is_flag=True, help="Keep the demo directory (logs, state) afterwards")
@click.option(
    "--branch-by-abstraction", "branch", is_flag=True,
    help="Instead: ci (phoenix) beside ci-legacy (in-place), one build to both under load, their time to live compared",
)
def demo(env: str, rate: float, keep: bool, branch: bool) -> None:
    """Bring up the example, rotate every server under steady load, report, tear down."""
    from rich.text import Text

    if branch:
        return _demo_branch(rate, keep)

    from ..load import LoadGenerator
    from .console import out
    from .render import phase_table

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
            lbs = {lb.role: lb.address for lb in executor.reports.status(env).load_balancers}
        urls = [f"http://{lbs['frontend']}/"] + [f"http://{lbs['frontend']}/page/{n}" for n in range(10)]
        urls += [f"http://{lbs['backend']}/api/articles", f"http://{lbs['edit']}/healthz"]
        out.print(f"load: {rate:g} requests/s over 8 keep-alive connections to {', '.join(sorted(lbs.values()))}")
        with LoadGenerator(urls, concurrency=8, rate=rate, max_seconds=300) as load:
            load.wait_for_requests(int(rate))  # about a second of steady state first
            with executor_for(spec_file, f"rotate {env}") as executor:
                rotation = executor.rotate(env)
                report = executor.reports.history(env, limit=1)
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


def _demo_branch(rate: float, keep: bool) -> None:
    from . import demo_branch
    from .console import out

    workdir = Path(tempfile.mkdtemp(prefix="phoenix-demo-"))
    os.chmod(workdir, 0o711)  # servers that run as an unprivileged uid pass through it (nothing listed)
    init_example(workdir)
    out.print(f"phoenix demo: branch by abstraction, the example website in {workdir}")
    try:
        failed = demo_branch.run(workdir / "phoenix.yaml", rate)
    finally:
        demo_branch.tear_down(workdir / "phoenix.yaml")
        out.print(f"destroy: {' and '.join(demo_branch.ENVS)} torn down")
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    if failed:
        raise PhoenixError(f"{failed} request(s) failed during the deploy")


@click.group()
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
    from ..boot.secrets import create_tls_pair
    from ..spec import load_spec
    from .console import out

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


@click.command()
@env_argument
@click.option("--interval", type=float, default=None, help="Seconds between passes (default: the spec's watch.interval)")
@click.option("--max-replacements-per-hour", "budget", type=click.IntRange(min=0), default=None, help="Budget (default: the spec's)")
@click.option("--passes", type=click.IntRange(min=1), default=None, help="Stop after this many passes (default: until SIGTERM)")
@discard_state_option
@spec_option
def watch(env: str, interval: float | None, budget: int | None, passes: int | None, discard_state: bool, spec_file: Path | None) -> None:
    """Reconcile loop: replace outdated, old, drifted, unhealthy and dead servers as they appear;
    exit 1 when it ends with a role below its count."""
    from ..engine.watch import Watcher
    from ..spec import load_spec
    from .console import out

    load_spec(spec_file).environment(env)
    watcher = Watcher(spec_file, env, lambda line: out.print(line, markup=False), interval, budget, discard_state)
    watcher.run(passes)
    short = watcher.shortfall()
    if short:
        below = ", ".join(f"{role} serves {c.serving} of {c.wanted}" for role, c in sorted(short.items()))
        raise PhoenixError(f"watch ended with {env} below its count: {below}")


@click.command()
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
    from ..engine.operation import Reporter
    from ..engine.watch import chaos as run_chaos
    from ..spec import load_spec
    from .console import out
    from .render import RichReporter

    load_spec(spec_file).environment(env)
    reporter = Reporter() if as_json else RichReporter(None)
    report = run_chaos(spec_file, env, kill, role, heal, timeout, rate, reporter, allow_outage, seed)
    if as_json:
        print_json(report.as_json())
    else:
        out.print(
            f"chaos {env}: killed {', '.join(report.killed)}; full count again after {report.seconds_to_full_count:.2f}s; "
            f"requests {report.requests} sent, {report.failed} failed {dict(report.errors) or ''}",
            markup=False,
        )


COMMANDS = (validate, schema, bake, init, demo, secrets, watch, chaos)
