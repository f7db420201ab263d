"""The content address of an image recipe, shared by every provider that bakes from the
project's files: the recipe's fields, its files' paths, modes and bytes, its links' targets
(refusing files that lead out of the project). Same inputs, same image id; and each layer's
cache key, chained through the layers below it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import paths
from ..errors import SpecError
from ..spec import ImageSpec

_IGNORED_NAMES = paths.IGNORED_NAMES
# What a bake step finds after the image's own bin directories, on every provider.
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"


def recipe_digest(recipe: ImageSpec, project_dir: Path, name: str) -> str:
    """The content address of a whole image recipe: its fields, and every layer's files (paths,
    modes, bytes, symlinks' targets). Refuses files that lead out of the project (see paths.py)."""
    digest = hashlib.sha256()
    digest.update(json.dumps(recipe.model_dump(exclude_none=True), sort_keys=True).encode())
    for where, files in recipe.layer_files():
        digest.update(files_digest(name, where, files, project_dir).encode())
    return digest.hexdigest()


def layer_keys(name: str, recipe: ImageSpec, project_dir: Path, base: str) -> list[str]:
    """Each layer's cache key, as BuildKit keys a step: the key of the layer below (the first
    layer's is `base`: what the whole image shares, such as its runtime and variables), the
    layer's files' content and its steps' text."""
    keys, below = [], base
    for (where, files), layer in zip(recipe.layer_files(), recipe.all_layers()):
        content = {"below": below, "files": files_digest(name, where, files, project_dir), "steps": layer.steps}
        below = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
        keys.append(below)
    return keys


def files_digest(name: str, where: tuple, files: list[str], project_dir: Path) -> str:
    """The digest of one layer's files: paths, modes and bytes, and symlinks' targets.
    SpecError (naming the place in the spec) for a file or link that leads out of the project."""
    try:
        paths.check_image_files(project_dir, files)
        links = [(image_path, target) for _, image_path, target in paths.image_links(project_dir, files)]
    except paths.ImageFileError as exc:
        place = ".".join(str(part) for part in ("images", name, *where, exc.index))
        raise SpecError(f"{place}: {exc}") from None
    digest = hashlib.sha256()
    for entry in files:
        for path in walk_files(project_dir / entry):
            relative = path.relative_to(project_dir)
            executable = os.access(path, os.X_OK)
            digest.update(f"\0{relative}\0{int(executable)}\0{file_sha256(path)}".encode())
    for image_path, target in links:
        digest.update(f"\0{image_path}\0link\0{target}".encode())
    return digest.hexdigest()


def walk_files(root: Path):
    """Files under root in a stable order, skipping what IGNORED skips."""
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in _IGNORED_NAMES)
        for filename in sorted(filenames):
            path = Path(dirpath) / filename
            if not filename.endswith(".pyc") and not path.is_symlink():  # links: persistent mounts
                yield path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()
