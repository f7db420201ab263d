"""The commands that change an environment: up, deploy, rotate, rollback, promote, recover, destroy.

Each command imports how it prints in its body: at import this module loads only click
(see `cli/__init__.py`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from .common import discard_state_option, dry_run_option, env_argument, executor_for, json_option, lock_timeout_option, spec_option


@click.command()
@env_argument
@lock_timeout_option
@spec_option
@json_option
def up(env: str, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Create the environment from nothing (or complete it); a complete one is left unchanged."""
    from .render import print_result

    with executor_for(spec_file, f"up {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        print_result(executor.up(env), as_json)


@click.command()
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
    from .render import print_plan, print_result

    with executor_for(spec_file, f"deploy {env}", quiet=as_json or dry_run, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        if dry_run:
            print_plan(executor.reports.describe(env, "deploy", strategy), as_json)
            return
        print_result(executor.deploy(env, strategy, pause), as_json)


@click.command()
@env_argument
@click.option("--role", "-r", default=None, help="Only this role")
@dry_run_option
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def rotate(env: str, role: str | None, dry_run: bool, discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Replace every server even if nothing changed: the phoenix rebirth."""
    from .render import print_plan, print_result

    with executor_for(spec_file, f"rotate {env}", quiet=as_json or dry_run, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        if dry_run:
            print_plan(executor.reports.describe(env, "rotate", role=role), as_json)
            return
        print_result(executor.rotate(env, role), as_json)


@click.command()
@env_argument
@dry_run_option
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def rollback(env: str, dry_run: bool, discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Back to the previous build: a kept blue-green group at once, else a redeploy."""
    from .render import print_plan, print_result

    with executor_for(spec_file, f"rollback {env}", quiet=as_json or dry_run, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        if dry_run:
            print_plan(executor.reports.describe(env, "rollback"), as_json)
            return
        print_result(executor.rollback(env), as_json)


@click.command()
@env_argument
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def promote(env: str, discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """After a paused canary: roll the rest of the new build."""
    from .render import print_result

    with executor_for(spec_file, f"promote {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        executor.discard_state = discard_state
        print_result(executor.promote(env), as_json)


@click.command()
@env_argument
@lock_timeout_option
@spec_option
@json_option
def recover(env: str, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Only recovery: finish or undo what an interrupted command left, remove orphans."""
    from .console import out

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


@click.command()
@env_argument
@lock_timeout_option
@spec_option
@json_option
def destroy(env: str, lock_timeout: float, spec_file: Path | None, as_json: bool) -> None:
    """Stop and remove every server and load balancer of the environment."""
    from .render import print_result

    with executor_for(spec_file, f"destroy {env}", quiet=as_json, lock_timeout=lock_timeout, env=env) as executor:
        print_result(executor.destroy(env), as_json)


COMMANDS = (up, deploy, rotate, rollback, promote, recover, destroy)
