"""The local provider's images: content-addressed copies of the project's files, baked in
layers by running each layer's steps in a clean environment (hermetic.py). Every layer but
the last is kept under `images/layers/<key>/` and reused, without running anything, by any
bake whose layers up to it are the same (BuildKit's cache: a layer's key is the layer below,
its files' content and its steps' text); the last layer is the image itself."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import time
import uuid
from pathlib import Path, PurePosixPath

from ... import paths
from ...deadline import Deadline
from ...errors import PhoenixError, SpecError
from ...spec import ImageSpec, LayerSpec
from ..base import BakeResult, ImageDetails, LayerResult
from ..recipe import file_sha256, layer_keys, walk_files
from .hermetic import ENVIRONMENT_VERSION, clean_env, image_bin_dirs, resolve_runtime, start_interpreter
from .identity import private_dir
from .snapshot import Linked, link_tree, replace_file, size_and_writes

IGNORED = shutil.ignore_patterns(*paths.IGNORED_NAMES, *(f"*{suffix}" for suffix in paths.IGNORED_SUFFIXES))


def file_manifest(rootfs: Path, booted: dict[str, dict] | None = None) -> dict[str, dict]:
    """Every file's hash and mode, by path relative to the root (used for drift detection).
    Given the manifest made at boot, a file whose size and modification time are still the
    recorded ones keeps its recorded hash unread, as git's index does: a server's tree holds
    its image's dependencies, and hashing them all made every `plan` read megabytes."""
    manifest = {}
    booted = booted or {}
    for path in walk_files(rootfs):
        info = path.lstat()
        relative = str(path.relative_to(rootfs))
        seen = [info.st_size, info.st_mtime_ns]
        before = booted.get(relative)
        digest = before["sha256"] if before is not None and before.get("stat") == seen else file_sha256(path)
        manifest[relative] = {"sha256": digest, "mode": stat.S_IMODE(info.st_mode), "stat": seen}
    return manifest


def same_file(a: dict, b: dict) -> bool:
    """Two manifest entries of one path: the same content and mode (when it was seen does not count)."""
    return (a["sha256"], a["mode"]) == (b["sha256"], b["mode"])


def tree_size(root: Path) -> int:
    """Bytes of the regular files under root (links not followed)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for filename in filenames:
            try:
                info = os.lstat(os.path.join(dirpath, filename))
            except OSError:
                continue
            total += info.st_size if stat.S_ISREG(info.st_mode) else 0
    return total


def layer_label(layer: LayerSpec, index: int) -> str:
    return layer.name or str(index + 1)


def read_manifest(location: Path) -> dict | None:
    try:
        return json.loads((location / "manifest.json").read_text())
    except (OSError, ValueError):
        return None


class LocalImages:
    """Baking, finding and removing images under `.phoenix/images/` (a part of LocalCompute)."""

    images_dir: Path

    @property
    def layers_dir(self) -> Path:
        return self.images_dir / "layers"

    def _keys(self, recipe: ImageSpec, project_dir: Path, name: str) -> tuple[list[str], str]:
        """Each layer's cache key, and the image's digest (its last layer and start command)."""
        try:
            runtime = resolve_runtime(recipe.runtime) if recipe.runtime else None
        except PhoenixError as exc:
            raise SpecError(f"images.{name}.runtime: {exc}") from None
        shared = {"environment": ENVIRONMENT_VERSION, "env": recipe.env, "runtime": runtime and [runtime["real_path"], runtime["version"]]}
        base = hashlib.sha256(json.dumps(shared, sort_keys=True).encode()).hexdigest()
        keys = layer_keys(name, recipe, project_dir, base)
        image = hashlib.sha256(json.dumps({"layers": keys[-1], "start": recipe.start}).encode()).hexdigest()
        return keys, image

    def image_id(self, name: str, recipe: ImageSpec, project_dir: Path) -> str:
        return f"img-{name}-{self._keys(recipe, project_dir, name)[1][:16]}"

    def image_available(self, image_id: str, location: str) -> bool:
        return (Path(location) / "manifest.json").is_file()

    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline, no_cache: bool = False) -> BakeResult:
        started = time.monotonic()
        keys, digest = self._keys(recipe, project_dir, name)
        image_id = f"img-{name}-{digest[:16]}"
        final = self.images_dir / image_id
        layers = recipe.all_layers()
        if not no_cache and (manifest := read_manifest(final)) is not None:
            hits = tuple(LayerResult(entry["name"], entry["key"], True, 0.0, entry.get("size")) for entry in manifest.get("layers", []))
            return BakeResult(image_id, str(final), cached=True, seconds=time.monotonic() - started, layers=hits, digest=digest)
        private_dir(self.images_dir)
        building = self.images_dir / f".building-{image_id}-{uuid.uuid4().hex[:6]}"
        rootfs, home = building / "rootfs", building / "home"
        reused = 0 if no_cache else self._cached_depth(keys[:-1])
        try:
            home.mkdir(parents=True)
            results, size, linked = self._start_from_cache(layers, keys, reused, rootfs)
            for index in range(reused, len(layers)):
                layer_started = time.monotonic()
                self._bake_layer(name, recipe, index, project_dir, rootfs, home, deadline)
                seconds = time.monotonic() - layer_started
                last = index == len(layers) - 1
                grown, written = size_and_writes(rootfs, linked) if last else (tree_size(rootfs), [])
                results.append(LayerResult(layer_label(layers[index], index), keys[index], False, seconds, grown - size))
                size = grown
                if not last:
                    self._keep_layer(rootfs, results[-1], size)
                elif written and reused:  # a step wrote into the cached layer's files: no bake starts from it again
                    shutil.rmtree(self._layer_dir(keys[reused - 1]), ignore_errors=True)
            bins = image_bin_dirs(rootfs)
            manifest = {
                "image": image_id, "name": name, "digest": digest, "start": recipe.start, "env": recipe.env, "path": bins,
                "runtime": resolve_runtime(recipe.runtime) if recipe.runtime else None,
                "interpreter": start_interpreter(recipe.start, rootfs, bins),
                "layers": [{"name": r.name, "key": r.key, "size": r.size, "seconds": round(r.seconds, 3)} for r in results],
                "size": size, "created": time.time(),
            }
            (building / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
            shutil.rmtree(home, ignore_errors=True)
            self._install(building, final, image_id)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return BakeResult(image_id, str(final), cached=False, seconds=time.monotonic() - started, layers=tuple(results), digest=digest)

    def _start_from_cache(self, layers: list[LayerSpec], keys: list[str], reused: int, rootfs: Path) -> tuple[list[LayerResult], int, Linked]:
        """The build's root as the deepest cached layer left it (hard-linked, see snapshot.py),
        or empty: the reused layers' results, the root's size, what was linked."""
        if not reused:
            rootfs.mkdir()
            return [], 0, {}
        linked = link_tree(self._layer_dir(keys[reused - 1]) / "rootfs", rootfs)
        results, total = [], 0
        for index in range(reused):
            info = json.loads((self._layer_dir(keys[index]) / "layer.json").read_text())
            results.append(LayerResult(layer_label(layers[index], index), keys[index], True, 0.0, info.get("size")))
            total = info.get("total", 0)
        return results, total, linked

    def _install(self, building: Path, final: Path, image_id: str) -> None:
        """Put a finished bake in place; a `--no-cache` bake replaces the image it rebuilt
        (servers run from copies of it, never from it)."""
        if final.exists():
            old = self.images_dir / f".replaced-{image_id}-{uuid.uuid4().hex[:6]}"
            try:
                final.rename(old)
            except OSError:
                pass
            else:
                shutil.rmtree(old, ignore_errors=True)
        try:
            building.rename(final)
        except OSError:
            if not self.image_available(image_id, str(final)):  # not a concurrent bake of the same image
                raise

    def _layer_dir(self, key: str) -> Path:
        return self.layers_dir / key[:32]

    def _cached_depth(self, keys: list[str]) -> int:
        """How many of the first layers are in the cache (the deepest one kept is enough)."""
        for depth in range(len(keys), 0, -1):
            if (self._layer_dir(keys[depth - 1]) / "layer.json").is_file():
                return depth
        return 0

    def _keep_layer(self, rootfs: Path, result: LayerResult, total: int) -> None:
        """Keep a copy of the image as it is after this layer, for later bakes to start from
        (a copy: the build goes on in `rootfs`, and its steps may write into any file)."""
        target = self._layer_dir(result.key)
        if (target / "layer.json").is_file():
            return
        private_dir(self.layers_dir)
        staging = self.layers_dir / f".building-{result.key[:32]}-{uuid.uuid4().hex[:6]}"
        try:
            shutil.copytree(rootfs, staging / "rootfs", symlinks=True)
            info = {"key": result.key, "name": result.name, "size": result.size, "total": total,
                    "seconds": round(result.seconds, 3), "created": time.time()}
            (staging / "layer.json").write_text(json.dumps(info, sort_keys=True))
            try:
                staging.rename(target)
            except OSError:
                pass  # another bake kept the same layer first
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _bake_layer(self, name: str, recipe: ImageSpec, index: int, project_dir: Path, rootfs: Path, home: Path, deadline: Deadline) -> None:
        layer = recipe.all_layers()[index]
        where = recipe.layer_files()[index][0]
        self._copy_files(name, where, layer.files, project_dir, rootfs)
        env = {**clean_env(rootfs, home, recipe.env), "PHOENIX_IMAGE": name, "PHOENIX_LAYER": layer_label(layer, index)}
        if recipe.runtime:
            env["PHOENIX_RUNTIME"] = resolve_runtime(recipe.runtime)["path"]
        label = f"layer {layer_label(layer, index)} step" if recipe.layers else "step"
        for number, step in enumerate(layer.steps, start=1):
            env["PATH"] = clean_env(rootfs, home, {})["PATH"]  # a step may have made a bin directory
            self._run_step(name, f"{label} {number}", step, rootfs, env, deadline)

    @staticmethod
    def _copy_files(name: str, where: tuple, files: list[str], project_dir: Path, rootfs: Path) -> None:
        """Copy a layer's files, checked again now (they may have changed since the spec was
        loaded): each must resolve inside the project; a symlink inside them stays a link,
        rewritten to point at the image's own copy, and one leading out is refused."""
        place = ".".join(("images", name, *(str(part) for part in where)))
        try:
            entries = paths.image_entries(project_dir, files)
        except ValueError as exc:
            raise SpecError(f"bake of image {name}: {place}: {exc}") from None
        for entry, source in entries:
            target = rootfs / entry
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():  # an earlier entry's link: replaced, never written through
                target.unlink()
            if not source.is_dir():
                replace_file(source, target)
                continue
            shutil.copytree(source, target, symlinks=True, ignore=IGNORED, dirs_exist_ok=True, copy_function=replace_file)
            for relative, link in paths.links_under(target):
                link.unlink()  # copied as it was written: made again below, or refused
                image_path = (PurePosixPath(entry) / relative).as_posix()
                try:
                    points_to = paths.link_target(project_dir, entries, source / relative, image_path)
                except ValueError as exc:
                    raise SpecError(f"bake of image {name}: {exc}") from None
                link.symlink_to(points_to)

    @staticmethod
    def _run_step(name: str, what: str, step: str, rootfs: Path, env: dict, deadline: Deadline) -> None:
        try:
            result = subprocess.run(
                ["/bin/sh", "-c", step], cwd=rootfs, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                timeout=deadline.remaining() or 0.1,
            )
        except subprocess.TimeoutExpired:
            raise PhoenixError(f"bake of image {name}: {what} ({step!r}) ran out of time") from None
        if result.returncode != 0:
            last = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
            raise PhoenixError(f"bake of image {name}: {what} ({step!r}) exited {result.returncode}: {last[0]}")

    # --- what `phoenix images` shows and prunes --------------------------------------------
    def image_details(self, image_id: str, location: str) -> ImageDetails | None:
        manifest = read_manifest(Path(location))
        if manifest is None:
            return None
        layers = tuple(LayerResult(e["name"], e["key"], True, e.get("seconds", 0.0), e.get("size")) for e in manifest.get("layers", []))
        size = manifest.get("size")
        return ImageDetails(size if size is not None else tree_size(Path(location) / "rootfs"), manifest.get("created"), layers, manifest.get("runtime"))

    def forget_image(self, image_id: str, location: str) -> None:
        target = Path(location)
        if target.parent != self.images_dir or not target.name.startswith("img-"):
            raise PhoenixError(f"image {image_id}: {location} is not an image of this project's store")
        shutil.rmtree(target, ignore_errors=True)

    def prune_layers(self) -> list[str]:
        """Remove kept layers that no image left in the store was built on."""
        if not self.layers_dir.is_dir():
            return []
        used = set()
        for image in self.images_dir.glob("img-*"):
            used |= {entry["key"][:32] for entry in (read_manifest(image) or {}).get("layers", [])}
        removed = []
        for layer in sorted(self.layers_dir.iterdir()):
            if layer.name not in used and not layer.name.startswith("."):  # not a bake under way
                shutil.rmtree(layer, ignore_errors=True)
                removed.append(layer.name)
        return removed
