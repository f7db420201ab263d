"""Wheels of installed distributions: how the example ships its dependencies with no network.

`phoenix init` gives the example website a `wheels/` folder holding aiohttp and what it
needs, repacked from the distributions Phoenix itself runs on (a wheel is a zip of the
files its RECORD lists), so its dependency layer installs them with `pip --no-index`. An
application of one's own fills its wheel folder with `pip download` or `pip wheel` instead."""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from importlib import metadata
from pathlib import Path

_made: dict[tuple[str, ...], Path] = {}  # requirements -> a folder of wheels made in this process


def _name(requirement: str) -> str:
    return re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)


def closure(requirements: list[str]) -> list[metadata.Distribution]:
    """The installed distributions the requirements need, their dependencies included. A
    dependency under a marker (an extra, an older Python) counts only where it is installed."""
    found: dict[str, metadata.Distribution] = {}
    pending = list(requirements)
    while pending:
        requirement = pending.pop()
        spec, _, marker = requirement.partition(";")
        if "extra" in marker:
            continue
        key = re.sub(r"[-_.]+", "-", _name(spec)).lower()
        if key in found:
            continue
        try:
            found[key] = metadata.distribution(_name(spec))
        except metadata.PackageNotFoundError:
            if marker.strip():
                continue  # for another Python or platform
            raise
        pending += found[key].requires or []
    return list(found.values())


def wheel_of(dist: metadata.Distribution, folder: Path) -> Path:
    """Repack one installed distribution as a wheel in `folder`."""
    tags = [line.split(":", 1)[1].strip() for line in (dist.read_text("WHEEL") or "").splitlines() if line.startswith("Tag:")]
    parts = [".".join(sorted({tag.split("-")[i] for tag in tags})) for i in range(3)] if tags else ["py3", "none", "any"]
    name = re.sub(r"[-_.]+", "_", dist.metadata["Name"])
    path = folder / f"{name}-{dist.version}-{'-'.join(parts)}.whl"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as wheel:
        for file in dist.files or []:
            if file.parts[0] == ".." or "__pycache__" in file.parts:
                continue  # scripts outside site-packages are made again by the installer
            wheel.write(file.locate(), str(file))
    return path


def ship_wheels(requirements_file: Path, folder: Path) -> list[Path]:
    """Wheels for every requirement in `requirements_file` (and what they need) in `folder`."""
    requirements = tuple(
        line.split("#", 1)[0].strip() for line in requirements_file.read_text().splitlines() if line.split("#", 1)[0].strip()
    )
    if requirements not in _made:
        made = Path(tempfile.mkdtemp(prefix="phoenix-wheels-"))
        for dist in closure(list(requirements)):
            wheel_of(dist, made)
        _made[requirements] = made
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(wheel, folder / wheel.name)) for wheel in sorted(_made[requirements].glob("*.whl"))]
