"""`phoenix images` (the project's images and layers: size, age, who uses them), `phoenix
images prune`, and how a bake's layers are shown (`phoenix bake`). The engine is imported
inside the commands, so `phoenix --help` stays quick."""

from __future__ import annotations

from pathlib import Path

import click

from .common import json_option, spec_option
from .json_output import print_json


def size_text(size: int | None) -> str:
    if size is None:
        return "?"
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return "?"


def age_text(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    for unit, span in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= span:
            return f"{seconds / span:.0f}{unit}"
    return f"{seconds:.0f}s"


def bake_json(results: list) -> list[dict]:
    return [
        {
            "image": name, "id": result.image_id, "cached": result.cached, "seconds": round(result.seconds, 3), "digest": result.digest,
            "layers": [{"name": layer.name, "key": layer.key[:16], "cached": layer.cached, "seconds": round(layer.seconds, 3), "size": layer.size}
                       for layer in result.layers],
        }
        for name, result in results
    ]


def print_bake(results: list) -> None:
    """One line per image, then one per layer: cache hit or built, time, size."""
    from .console import out

    for name, result in results:
        out.print(f"{name}: {result.image_id} ({'cache hit, not rebuilt' if result.cached else f'baked in {result.seconds:.2f}s'})")
        for layer in result.layers:
            done = "cache hit" if layer.cached else f"built in {layer.seconds:.2f}s"
            out.print(f"  layer {layer.name}: {done}, {size_text(layer.size)} ({layer.key[:12]})")


@click.group(invoke_without_command=True)
@click.option("--keep", type=click.IntRange(min=1), default=2, show_default=True, help="Releases per environment whose images count as needed")
@spec_option
@json_option
@click.pass_context
def images(ctx: click.Context, keep: int, spec_file: Path | None, as_json: bool) -> None:
    """The project's images and their layers: size, age, the servers and releases using them."""
    if ctx.invoked_subcommand is not None:
        return
    from rich.table import Table

    from ..engine import Project
    from .console import out
    from ..engine.images import ImageCatalog
    from ..engine.wiring import Engine

    project = Project(spec_file)
    try:
        entries = ImageCatalog(Engine(project)).entries(keep)
    finally:
        project.close()
    if as_json:
        print_json([entry.as_json() for entry in entries])
        return
    table = Table(title="images", title_justify="left")
    for column in ("id", "image", "size", "age", "layers", "servers", "releases"):
        table.add_column(column)
    for entry in entries:
        layers = ", ".join(f"{layer['name']} {size_text(layer['size'])}" for layer in entry.layers)
        servers = ", ".join(f"{env} ({count})" for env, count in entry.servers.items())
        releases = "; ".join(entry.releases + (["the spec as it stands"] if entry.in_spec else []))
        table.add_row(entry.id, entry.name, size_text(entry.size), age_text(entry.age_s), layers, servers or "-", releases or "-")
    out.print(table)


@images.command()
@click.option("--keep", type=click.IntRange(min=1), default=2, show_default=True,
              help="Keep the images of this many newest releases of each environment (2: the current one and a rollback's)")
@click.option("--force", is_flag=True, help="Remove images a rollback would go back to, too")
@spec_option
@json_option
def prune(keep: int, force: bool, spec_file: Path | None, as_json: bool) -> None:
    """Remove images no server runs, the spec does not bake and no kept release names."""
    from ..engine import Project
    from .console import out
    from ..engine.images import ImageCatalog
    from ..engine.wiring import Engine

    project = Project(spec_file)
    try:
        result = ImageCatalog(Engine(project)).prune(keep, force)
    finally:
        project.close()
    if as_json:
        print_json(result.as_json())
        return
    for image_id in result.removed:
        out.print(f"removed {image_id}")
    for image_id, why in result.kept.items():
        out.print(f"kept {image_id}: {why}")
    if result.layers_removed:
        out.print(f"removed {len(result.layers_removed)} cached layer(s) no image holds")


COMMANDS = (images,)
