"""The local provider's in-place update: what a configuration-management run does to a
long-lived server (a snowflake), for environments with `mode: in-place`.

The files the new image changed (against the image the server runs) are copied over the
server's root, files the new build no longer has stay behind (as they do on a real
snowflake), the image's steps run again in the root, the boot configuration is applied
again, and the start command is restarted. A team's own deployment script may do the file
part instead. What the server ran before is kept (a copy of its root) until the update is
confirmed, so a failed update can be put back. A part of LocalCompute.

Drift stays measured against what the last deploy wrote: a file edited by hand that the
deploy did not write is still reported as modified afterwards, and a leftover of an older
build as added."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

from ...deadline import Deadline
from ...errors import PhoenixError
from ..base import UpdateRequest, owned_path

from ..recipe import SYSTEM_PATH, walk_files
from .hermetic import clean_env
from .identity import RunAs, private_dir
from .images import file_manifest, read_manifest
from .snapshot import replace_file

KEPT = ("start.json", "boot-manifest.json")  # beside the root: what it was started with, its drift baseline


def write_baseline(server_dir: Path, manifest: dict) -> None:
    """What drift is measured against (mode 0600: it hashes the secret files written beside it)."""
    descriptor = os.open(server_dir / "boot-manifest.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as baseline:
        baseline.write(json.dumps(manifest, sort_keys=True))


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def image_files(rootfs: Path) -> set[str]:
    return {str(path.relative_to(rootfs)) for path in walk_files(rootfs)}


def changed_files(old_rootfs: Path, new_rootfs: Path) -> list[str]:
    """The files of the new image that the old one lacks or holds otherwise. Layers reused
    from the bake cache are hard links to the same files: those are skipped unread."""
    changed = []
    for path in walk_files(new_rootfs):
        relative = path.relative_to(new_rootfs)
        old = old_rootfs / relative
        try:
            if os.path.samefile(path, old) or (old.stat().st_size == path.stat().st_size and old.read_bytes() == path.read_bytes()):
                continue
        except OSError:
            pass  # not in the old image
        changed.append(str(relative))
    return changed


class LocalInPlace:
    """Updating a server where it stands, and putting it back (mixed into LocalCompute)."""

    workdir: Path
    logs_dir: Path

    def update_in_place(self, handle: dict, request: UpdateRequest, deadline: Deadline) -> dict:
        launch = request.launch
        server_dir = owned_path(self.workdir, handle.get("dir", ""), "server directory")
        root = server_dir / "root"
        started = read_json(server_dir / "start.json")
        run_as = RunAs(*started["run_as"]) if started.get("run_as") else None
        # What it runs now, kept as a copy (a team's script may write into files in place).
        previous = server_dir / "previous"
        shutil.rmtree(previous, ignore_errors=True)
        private_dir(previous)
        shutil.copytree(root, previous / "root", symlinks=True)
        for name in KEPT:
            if (server_dir / name).exists():
                shutil.copy2(server_dir / name, previous / name)
        baseline = read_json(server_dir / "boot-manifest.json")
        before = file_manifest(root)
        new_rootfs, old_rootfs = Path(launch.image_location) / "rootfs", Path(request.previous_location) / "rootfs"
        manifest = read_manifest(Path(launch.image_location)) or {}
        home = private_dir(server_dir / "home")
        with open(handle["log"], "ab") as log:
            self.ship(launch, log)  # its lines from now on are the new release's
            log.write(f"phoenix: in-place update to {launch.image_id}\n".encode())
            log.flush()
            if request.script:
                self._run_script(request, handle, log, deadline)
            else:
                for relative in changed_files(old_rootfs, new_rootfs):
                    target = root / relative
                    target.parent.mkdir(parents=True, exist_ok=True)
                    replace_file(str(new_rootfs / relative), str(target))
                self._own(root, run_as)
                env = clean_env(root, home, manifest.get("env", {}), manifest.get("path", []))
                if manifest.get("runtime"):
                    env["PHOENIX_RUNTIME"] = manifest["runtime"]["path"]
                for number, step in enumerate(request.steps, start=1):
                    env["PATH"] = clean_env(root, home, {}, None)["PATH"]  # a step may have made a bin directory
                    self._run_boot_step(launch, f"image step {number}", ["/bin/sh", "-c", step], root, env, log, deadline, run_as)
            self._own(root, run_as)
            address = started.get("env", {}).get("PHOENIX_ADDRESS", "")
            env = {**clean_env(root, home, manifest.get("env", {}), manifest.get("path", [])), "PHOENIX_ADDRESS": address}
            env.update(self._apply_userdata(launch, root, server_dir, env, log, run_as))
            env.update(launch.boot_env)
            self._attach_persistent(root, env, run_as)
            leftovers = image_files(old_rootfs) - image_files(new_rootfs)
            write_baseline(server_dir, self._deployed(baseline, before, file_manifest(root), leftovers))
            self.stop(handle, deadline)
            return {**handle, **self._start(server_dir, launch.command, env, log, run_as)}

    @staticmethod
    def _deployed(baseline: dict, before: dict, after: dict, leftovers: set[str]) -> dict:
        """The new drift baseline: what the deploy wrote. A path it did not touch keeps what
        the last deploy wrote there (so a hand edit still shows), a hand-added file stays
        unrecorded, and a leftover of the older build is no longer expected."""
        deployed = {}
        for path in set(baseline) | set(after):
            if before.get(path) != after.get(path):  # the deploy wrote (or removed) it
                if path in after:
                    deployed[path] = after[path]
            elif path not in leftovers and path in baseline:
                deployed[path] = baseline[path]
        return deployed

    def _run_script(self, request: UpdateRequest, handle: dict, log, deadline: Deadline) -> None:
        """The team's deployment script, once for this server, from the project directory."""
        launch = request.launch
        started = read_json(Path(handle["dir"]) / "start.json").get("env", {})
        env = {
            "PATH": SYSTEM_PATH, "HOME": str(Path(handle["dir"]) / "home"), "LANG": "C.UTF-8",
            "PHOENIX_SERVER_ID": launch.server_id, "PHOENIX_SERVER_ADDRESS": started.get("PHOENIX_ADDRESS", ""),
            "PHOENIX_SERVER_PORT": str(launch.port), "PHOENIX_SERVER_ROOT": handle["root"], "PHOENIX_ROLE": launch.role,
            "PHOENIX_ENV": launch.env, "PHOENIX_IMAGE": str(Path(launch.image_location) / "rootfs"),
            "PHOENIX_PREVIOUS_IMAGE": str(Path(request.previous_location) / "rootfs"),
        }
        log.write(f"phoenix: in_place.command {request.script}\n".encode())
        log.flush()
        try:
            result = subprocess.run(
                ["/bin/sh", "-c", request.script], cwd=request.project_dir, env=env, stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, timeout=deadline.remaining() or 0.1, start_new_session=True,
            )
        except subprocess.TimeoutExpired:
            raise PhoenixError(f"{launch.server_id}: the deployment script ({request.script}) ran out of time") from None
        if result.returncode != 0:
            log.flush()
            raise PhoenixError(
                f"{launch.server_id}: the deployment script ({request.script}) exited {result.returncode}; {self.log_excerpt(handle)}"
            )

    @staticmethod
    def _own(root: Path, run_as: RunAs | None) -> None:
        if run_as is not None:
            run_as.own(root)

    def restore_previous(self, handle: dict, deadline: Deadline) -> dict:
        server_dir = owned_path(self.workdir, handle.get("dir", ""), "server directory")
        previous = server_dir / "previous"
        if not (previous / "root").is_dir():
            raise PhoenixError(f"{handle.get('root')}: nothing kept to go back to")
        self.stop(handle, deadline)
        shutil.rmtree(server_dir / "root")
        os.rename(previous / "root", server_dir / "root")
        for name in KEPT:
            if (previous / name).exists():
                os.replace(previous / name, server_dir / name)
        shutil.rmtree(previous, ignore_errors=True)
        started = read_json(server_dir / "start.json")
        run_as = RunAs(*started["run_as"]) if started.get("run_as") else None
        self._own(server_dir / "root", run_as)
        with open(handle["log"], "ab") as log:
            log.write(b"phoenix: in-place update undone: back on the previous build\n")
            log.flush()
            return {**handle, **self._start(server_dir, started["command"], started["env"], log, run_as)}

    def forget_previous(self, handle: dict) -> None:
        if handle.get("dir"):
            shutil.rmtree(owned_path(self.workdir, handle["dir"], "server directory") / "previous", ignore_errors=True)
