"""The content address of an image recipe, shared by every provider that bakes from the
project's files: the recipe's fields, its files' paths, modes and bytes, its links' targets
(refusing files that lead out of the project). Same inputs, same image id."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from .. import paths
from ..errors import SpecError
from ..spec import ImageSpec

_IGNORED_NAMES = paths.IGNORED_NAMES


def recipe_digest(recipe: ImageSpec, project_dir: Path, name: str) -> str:
    """The content address of an image recipe: its fields, its files' paths, modes and bytes,
    and its symlinks' targets. Refuses files that lead out of the project (see paths.py)."""
    links = _image_links(name, recipe, project_dir)
    digest = hashlib.sha256()
    digest.update(json.dumps(recipe.model_dump(exclude_none=True), sort_keys=True).encode())
    for entry in recipe.files:
        for path in walk_files(project_dir / entry):
            relative = path.relative_to(project_dir)
            executable = os.access(path, os.X_OK)
            digest.update(f"\0{relative}\0{int(executable)}\0{file_sha256(path)}".encode())
    for image_path, target in links:
        digest.update(f"\0{image_path}\0link\0{target}".encode())
    return digest.hexdigest()


def _image_links(name: str, recipe: ImageSpec, project_dir: Path) -> list[tuple[str, str]]:
    """The image's symlinks as (path, target in the image); SpecError for a file or link that
    leads out of the project."""
    try:
        paths.check_image_files(project_dir, recipe.files)
        return [(image_path, target) for _, image_path, target in paths.image_links(project_dir, recipe.files)]
    except paths.ImageFileError as exc:
        raise SpecError(f"images.{name}.files.{exc.index}: {exc}") from None


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
