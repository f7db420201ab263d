"""The commands that change an environment: up, deploy, rotate, rollback, promote, recover, destroy.

Each command imports how it prints in its body: at import this module loads only click
(see `cli/__init__.py`)."""

from __future__ import annotations

from pathlib import Path

import click

from .common import discard_state_option, dry_run_option, env_argument, executor_for, json_option, lock_timeout_option, spec_option
from .json_output import print_json


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
@click.argument("envs", nargs=-1, required=True, metavar="ENV [ENV ...]")
@click.option("--strategy", type=click.Choice(["rolling", "blue-green", "canary"]), default=None, help="Instead of the environment's")
@click.option("--pause", is_flag=True, help="canary: stop after the canary and wait for `promote` or `rollback`")
@click.option("--release-of", "release_of", default=None, metavar="ENV", help="Deploy exactly the release ENV runs now (no bake)")
@click.option("--release", "release", default=None, metavar="ID", help="Deploy the release an operation of `history` recorded (no bake)")
@dry_run_option
@discard_state_option
@lock_timeout_option
@spec_option
@json_option
def deploy(
    envs: tuple[str, ...], strategy: str | None, pause: bool, release_of: str | None, release: str | None, dry_run: bool,
    discard_state: bool, lock_timeout: float, spec_file: Path | None, as_json: bool,
) -> None:
    """Bake, then replace every server whose image or boot configuration changed (in-place
    environments: update each where it stands). Several environments: one build, baked once,
    deployed to each side by side; one failing stops none of the others."""
    from .render import print_plan, print_result

    envs = tuple(dict.fromkeys(envs))
    label = " ".join(envs)
    with executor_for(spec_file, f"deploy {label}", quiet=as_json or dry_run, lock_timeout=lock_timeout, env=envs[0]) as executor:
        executor.discard_state = discard_state
        if dry_run:
            for env in envs:
                print_plan(executor.reports.describe(env, "deploy", strategy), as_json)
            return
        if len(envs) == 1:
            print_result(executor.deploy(envs[0], strategy, pause, release_of=release_of, release=release), as_json)
            return
        if pause:
            raise click.UsageError("--pause is for one canary environment at a time")
        print_many(executor.deploy_many(list(envs), strategy, release_of=release_of, release=release), as_json)


def print_many(outcomes: list, as_json: bool) -> None:
    """Each environment's result, then one line naming those that failed (exit 1)."""
    from ..errors import PhoenixError
    from .console import out
    from .render import print_result, result_json

    failed = [env for env, outcome in outcomes if isinstance(outcome, BaseException)]
    if as_json:
        rows = [
            {"environment": env, "ok": False, "error": str(outcome)} if isinstance(outcome, BaseException)
            else {"environment": env, "ok": True, "result": result_json(outcome)}
            for env, outcome in outcomes
        ]
        print_json({"environments": rows, "failed": failed})
    else:
        for env, outcome in outcomes:
            if isinstance(outcome, BaseException):
                out.print(f"deploy {env}: failed: {outcome}", markup=False)
            else:
                print_result(outcome, False)
    if failed:
        deployed = [env for env, outcome in outcomes if not isinstance(outcome, BaseException)]
        raise PhoenixError(
            f"deploy failed in {', '.join(failed)} ({len(failed)} of {len(outcomes)} environment(s))"
            + (f"; deployed: {', '.join(deployed)}" if deployed else "")
        )


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
        print_json({"operation": result.id, "environment": env, "recovered": result.recovered})
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
