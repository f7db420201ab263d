"""Paths a spec names stay inside the project.

Image files, boot file sources and boot scripts are project files: each must resolve (every
symlink followed) inside the project directory. Within an image's files a symlink is kept as
a link when it points inside the image (rewritten relative, so it points at the image's copy
and never back into the project); one leading out of the project, or to a project file the
image does not hold, is refused. A secret file may live outside the project, where secrets
belong, but only by its absolute path: a relative path holding `..`, or one resolving out of
the project through a symlink, is refused.

These checks run when a spec is loaded, and again where the files are read (bake, user-data,
secrets), since a file can change in between. Each raises ValueError with a one-line reason;
callers add the place in the spec."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath
from typing import Iterator

IGNORED_NAMES = frozenset({"__pycache__", ".phoenix", ".git"})  # never part of an image
IGNORED_SUFFIXES = (".pyc",)


def ignored(name: str) -> bool:
    return name in IGNORED_NAMES or name.endswith(IGNORED_SUFFIXES)


def _resolve(path: Path, shown: str) -> Path:
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise ValueError(f"{shown} is a symlink loop") from None


def inside_project(project_dir: Path, name: str) -> Path:
    """`name` (relative to the project) with every symlink resolved; ValueError unless it is
    inside the project."""
    root = project_dir.resolve()
    resolved = _resolve(project_dir / name, name)
    if not resolved.is_relative_to(root):
        raise ValueError(f"{name} resolves outside the project ({resolved})")
    return resolved


def secret_file(project_dir: Path, name: str) -> Path:
    """The file a secret's `file:` names. An absolute path is taken as written (a secret may
    live outside the project); a relative one must stay inside the project."""
    if Path(name).is_absolute():
        return Path(name)
    if ".." in Path(name).parts:
        raise ValueError(f"{name} leaves the project through '..'; name a secret file outside the project by its absolute path")
    try:
        return inside_project(project_dir, name)
    except ValueError as exc:
        raise ValueError(f"{exc}; name a secret file outside the project by its absolute path") from None


def image_entries(project_dir: Path, files: list[str]) -> list[tuple[str, Path]]:
    """Each of an image's files as (its path in the image, its resolved source in the project)."""
    return [(PurePosixPath(entry).as_posix(), inside_project(project_dir, entry)) for entry in files]


def link_target(project_dir: Path, entries: list[tuple[str, Path]], link: Path, image_path: str) -> str:
    """What the symlink `link` (a project file), found at `image_path` in the image, becomes in
    the image: a relative link to the image's copy of what it points at. ValueError when it
    leads out of the project or to a file the image does not hold."""
    target = _resolve(link, image_path)
    if not target.is_relative_to(project_dir.resolve()):
        raise ValueError(f"{image_path} resolves outside the project ({target})")
    for entry, source in entries:
        if target.is_relative_to(source):
            in_image = PurePosixPath(entry) / target.relative_to(source).as_posix()
            return os.path.relpath(in_image, PurePosixPath(image_path).parent)
    shown = target.relative_to(project_dir.resolve()).as_posix()
    raise ValueError(f"{image_path} points to {shown}, which is not among the image's files (add it to them, or copy it)")


def links_under(root: Path) -> Iterator[tuple[str, Path]]:
    """Symlinks under the directory `root`, not followed, as (path relative to root, path),
    in a stable order, skipping what is never part of an image."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not ignored(d))
        base = Path(dirpath)
        for name in sorted(dirnames + filenames):
            path = base / name
            if not ignored(name) and path.is_symlink():
                yield path.relative_to(root).as_posix(), path


def image_links(project_dir: Path, files: list[str]) -> Iterator[tuple[int, str, str]]:
    """Every symlink inside an image's files: (index of the files entry, path in the image,
    target in the image). Raises ValueError for an entry or a link that leaves the project."""
    entries = image_entries(project_dir, files)
    for index, (entry, source) in enumerate(entries):
        if not source.is_dir():
            continue
        for relative, link in links_under(source):
            image_path = (PurePosixPath(entry) / relative).as_posix()
            try:
                yield index, image_path, link_target(project_dir, entries, link, image_path)
            except ValueError as exc:
                raise ImageFileError(index, str(exc)) from None


class ImageFileError(ValueError):
    """A link inside an image's files entry that may not be copied (with the entry's index)."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


def check_image_files(project_dir: Path, files: list[str]) -> None:
    """Raise ImageFileError (with the entry's index) for the first entry or link that leaves
    the project."""
    for index, entry in enumerate(files):
        try:
            inside_project(project_dir, entry)
        except ValueError as exc:
            raise ImageFileError(index, str(exc)) from None
    for _ in image_links(project_dir, files):
        pass
