"""The local provider's images: content-addressed copies of the project's files, baked by
running the recipe's steps in them; the same inputs give the same image id and a cache hit."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path, PurePosixPath

from ... import paths
from ...deadline import Deadline
from ...errors import PhoenixError, SpecError
from ...spec import ImageSpec
from .identity import private_dir
from ..base import BakeResult
from ..recipe import file_sha256, recipe_digest, walk_files

IGNORED = shutil.ignore_patterns(*paths.IGNORED_NAMES, *(f"*{suffix}" for suffix in paths.IGNORED_SUFFIXES))
_IGNORED_NAMES = paths.IGNORED_NAMES


def file_manifest(rootfs: Path) -> dict[str, dict]:
    """Every file's hash and mode, by path relative to the root (used for drift detection)."""
    manifest = {}
    for path in walk_files(rootfs):
        info = path.lstat()
        manifest[str(path.relative_to(rootfs))] = {"sha256": file_sha256(path), "mode": stat.S_IMODE(info.st_mode)}
    return manifest


class LocalImages:
    """Baking and finding images under `.phoenix/images/` (a part of LocalCompute)."""

    images_dir: Path

    def image_id(self, name: str, recipe: ImageSpec, project_dir: Path) -> str:
        return f"img-{name}-{recipe_digest(recipe, project_dir, name)[:16]}"

    def _image_dir(self, image_id: str) -> Path:
        return self.images_dir / image_id

    def image_available(self, image_id: str, location: str) -> bool:
        return (Path(location) / "manifest.json").is_file()

    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline) -> BakeResult:
        started = time.monotonic()
        image_id = self.image_id(name, recipe, project_dir)
        final = self._image_dir(image_id)
        if self.image_available(image_id, str(final)):
            return BakeResult(image_id, str(final), cached=True, seconds=time.monotonic() - started)
        private_dir(self.images_dir)
        building = self.images_dir / f".building-{image_id}-{uuid.uuid4().hex[:6]}"
        rootfs = building / "rootfs"
        rootfs.mkdir(parents=True)
        try:
            self._copy_files(name, recipe, project_dir, rootfs)
            for index, step in enumerate(recipe.steps):
                self._run_step(name, index, step, rootfs, deadline)
            manifest = {"image": image_id, "name": name, "start": recipe.start, "files": file_manifest(rootfs)}
            (building / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            try:
                building.rename(final)
            except OSError:
                if not self.image_available(image_id, str(final)):  # not a concurrent bake of the same image
                    raise
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return BakeResult(image_id, str(final), cached=False, seconds=time.monotonic() - started)

    @staticmethod
    def _copy_files(name: str, recipe: ImageSpec, project_dir: Path, rootfs: Path) -> None:
        """Copy the image's files, checked again now (they may have changed since the spec was
        loaded): each must resolve inside the project; a symlink inside them stays a link,
        rewritten to point at the image's own copy, and one leading out is refused."""
        try:
            entries = paths.image_entries(project_dir, recipe.files)
        except ValueError as exc:
            raise SpecError(f"bake of image {name}: {exc}") from None
        for entry, source in entries:
            target = rootfs / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # an earlier entry's link: replaced, never written through
                target.unlink()
            if not source.is_dir():
                shutil.copy2(source, target)
                continue
            shutil.copytree(source, target, symlinks=True, ignore=IGNORED, dirs_exist_ok=True)
            for relative, link in paths.links_under(target):
                link.unlink()  # copied as it was written: made again below, or refused
                image_path = (PurePosixPath(entry) / relative).as_posix()
                try:
                    points_to = paths.link_target(project_dir, entries, source / relative, image_path)
                except ValueError as exc:
                    raise SpecError(f"bake of image {name}: {exc}") from None
                link.symlink_to(points_to)

    def _run_step(self, name: str, index: int, step: str, rootfs: Path, deadline: Deadline) -> None:
        try:
            result = subprocess.run(
                ["/bin/sh", "-c", step], cwd=rootfs, capture_output=True, text=True, timeout=deadline.remaining() or 0.1
            )
        except subprocess.TimeoutExpired:
            raise PhoenixError(f"bake of image {name}: step {index + 1} ({step!r}) ran out of time") from None
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PhoenixError(f"bake of image {name}: step {index + 1} ({step!r}) exited {result.returncode}: {last[0]}")

