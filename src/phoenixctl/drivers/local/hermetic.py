"""The clean environment the local provider's bake steps and servers run in: nothing from the
shell of whoever runs `phoenix` (its PATH, a pyenv wrapper, its user site-packages), only what
the spec declares. The same spec bakes the same image here and on any runner, and a
dependency the image forgot fails its bake or its server's gate instead of going unnoticed.

PATH is the image's own `bin` directories (`bin/`, and `*/bin/` such as a virtual
environment's), then the system's; HOME is a folder of the image's own; Python ignores user
site-packages; the variables are the image's `env`, plus Phoenix's own `PHOENIX_*`."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from ...errors import PhoenixError
from ..recipe import SYSTEM_PATH

FIXED = {"LANG": "C.UTF-8", "PYTHONNOUSERSITE": "1", "PYTHONUNBUFFERED": "1"}
# Part of every layer's cache key: a change to what a bake step sees rebuilds the layers.
ENVIRONMENT_VERSION = f"hermetic-1 {SYSTEM_PATH} {sorted(FIXED.items())}"

_runtimes: dict[tuple[str, int], dict] = {}


def image_bin_dirs(root: Path) -> list[str]:
    """The image's own `bin` directories, relative to its root: `bin` and `*/bin`, sorted."""
    found = [root / "bin"] + sorted(root.glob("*/bin"))
    return [str(path.relative_to(root)) for path in found if path.is_dir() and not path.parent.name.startswith(".")]


def clean_env(root: Path, home: Path, declared: dict[str, str], bin_dirs: list[str] | None = None) -> dict[str, str]:
    """The whole environment of a step or a server whose image is at `root`."""
    bins = image_bin_dirs(root) if bin_dirs is None else bin_dirs
    path = ":".join([*(str(root / entry) for entry in bins), SYSTEM_PATH])
    return {**FIXED, **declared, "PATH": path, "HOME": str(home)}


def resolve_runtime(command: str) -> dict:
    """The interpreter an image names (`runtime:`), found on the system PATH (or by its absolute
    path): its path, where that leads, and the version it reports. PhoenixError when missing."""
    found = command if os.path.isabs(command) else shutil.which(command, path=SYSTEM_PATH)
    if not found or not os.access(found, os.X_OK):
        raise PhoenixError(f"runtime {command!r} is not on the system PATH ({SYSTEM_PATH}) of a bake")
    real = os.path.realpath(found)
    key = (real, os.stat(real).st_mtime_ns)
    if key not in _runtimes:
        try:
            done = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=10, env={"PATH": SYSTEM_PATH})
            version = (done.stdout or done.stderr).strip().splitlines()[:1]
        except (OSError, subprocess.TimeoutExpired):
            version = []
        _runtimes[key] = {"command": command, "path": found, "real_path": real, "version": version[0] if version else "unknown"}
    return _runtimes[key]


def start_interpreter(start: str, root: Path, bin_dirs: list[str]) -> dict | None:
    """What the start command's first word is in the image: a program of the image's own (by
    its path in the image) or of the system, and the file it leads to. None when not found."""
    word = start.split()[0] if start.split() else ""
    if not word or "=" in word:
        return None
    if os.path.isabs(word):
        return {"command": word, "path": word, "real_path": os.path.realpath(word)}
    search = ":".join([*(str(root / entry) for entry in bin_dirs), SYSTEM_PATH])
    found = shutil.which(word, path=search)
    if found is None:
        return {"command": word, "path": None, "real_path": None}
    shown = str(Path(found).relative_to(root)) if Path(found).is_relative_to(root) else found
    return {"command": word, "path": shown, "real_path": os.path.realpath(found)}
