"""The embedded local provider: a content-addressed image store and servers as processes.

Each server is a detached process group started from its own fresh copy of an image (so
what a server writes never changes the image), bound to its own loopback address. Servers
outlive the `phoenix` command that started them, like cloud servers do; later commands
find them by pid and check the process start time so a recycled pid is never mistaken
for a server."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path, PurePosixPath

import psutil

from ... import paths
from ...boot import userdata
from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError, SpecError
from ...excerpt import error_lines
from ...spec import ImageSpec
from .identity import RunAs, private_dir, server_identity, unreachable_by_others
from ..base import BakeResult, ComputeDriver, FileChanges, ImageSample, Launched, LaunchRequest, LogExcerpt, owned_path

IGNORED = shutil.ignore_patterns(*paths.IGNORED_NAMES, *(f"*{suffix}" for suffix in paths.IGNORED_SUFFIXES))
_IGNORED_NAMES = paths.IGNORED_NAMES
LOG_READ = 128 * 1024  # of a long log, the excerpt reads this much of its start and of its end


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
            digest.update(f"\0{relative}\0{int(executable)}\0{_sha256(path)}".encode())
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 16), b""):
            digest.update(chunk)
    return digest.hexdigest()


def file_manifest(rootfs: Path) -> dict[str, dict]:
    """Every file's hash and mode, by path relative to the root (used for drift detection)."""
    manifest = {}
    for path in walk_files(rootfs):
        info = path.lstat()
        manifest[str(path.relative_to(rootfs))] = {"sha256": _sha256(path), "mode": stat.S_IMODE(info.st_mode)}
    return manifest


class LocalCompute(ComputeDriver):
    name = "local"
    capabilities = frozenset({"persistent_layer"})

    def __init__(self, workdir: Path, project: str, settings=None):
        super().__init__(workdir, project, settings)
        self.images_dir = workdir / "images"
        self.servers_dir = workdir / "servers"
        self.logs_dir = workdir / "logs"
        self._children: dict[int, subprocess.Popen] = {}  # reaped by us, so no zombies linger

    # --- images ---------------------------------------------------------------------------
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

    def capability_report(self, probe: bool, deadline: Deadline, sample: ImageSample | None = None) -> list[dict]:
        images = [p for p in self.images_dir.glob("img-*")] if self.images_dir.is_dir() else []
        report = [
            {"capability": "images", "ok": True, "detail": f"content-addressed copies under {self.images_dir} ({len(images)} kept)"},
            {"capability": "user-data", "ok": True, "detail": "applied by the provider as cloud-init would: write_files, runcmd, shell parts"},
            {"capability": "servers", "ok": True, "detail": "processes on their own loopback addresses"},
        ]
        if probe:
            report += self._probe(deadline, sample)
        return report

    def _probe(self, deadline: Deadline, sample: ImageSample | None) -> list[dict]:
        """Time a bake of the spec's first image (its files and steps, in a scratch store) and
        a server started on loopback until it listens."""
        import socket
        import tempfile

        with tempfile.TemporaryDirectory(prefix="phoenix-doctor-") as scratch:
            probe = LocalCompute(Path(scratch) / "work", self.project, self.settings)
            if sample is None:
                source = Path(scratch) / "project"
                (source / "site").mkdir(parents=True)
                (source / "site" / "index.html").write_text("<p>phoenix doctor</p>\n")
                sample = ImageSample("doctor", ImageSpec(files=["site"], start="python -m http.server"), source)
            baked = probe.bake(sample.name, sample.recipe, sample.project_dir, deadline)
            with socket.socket() as free:
                free.bind(("127.0.0.1", 0))
                port = free.getsockname()[1]
            started = time.monotonic()
            process = subprocess.Popen(
                [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
                cwd=Path(baked.location) / "rootfs", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                deadline.poll(lambda: probe.listening({}, "127.0.0.1", port), interval=0.01)
                launch = time.monotonic() - started
            finally:
                process.kill()
                process.wait()
        return [
            {"capability": "probe: image", "ok": True, "detail": f"bake of image {sample.name} (files and steps)", "seconds": round(baked.seconds, 3)},
            {"capability": "probe: launch", "ok": True, "detail": "a python server from start to listening", "seconds": round(launch, 3)},
        ]

    # --- servers --------------------------------------------------------------------------
    def launch(self, request: LaunchRequest, reserve_address) -> Launched:
        address = reserve_address(request.port)
        run_as = server_identity(self.workdir, request.env, self.settings.server_user)
        if run_as is not None:
            self._check_reachable(run_as)
        # Phoenix's folders are its own; servers pass through `servers/` (0711) to their own.
        private_dir(self.logs_dir)
        private_dir(self.servers_dir, 0o711)
        private_dir(self.servers_dir / request.env, 0o711)
        server_dir = self.servers_dir / request.env / request.server_id
        root = server_dir / "root"
        log_path = self.logs_dir / request.env / request.role / f"{request.server_id}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        handle = {"pid": None, "started": 0.0, "root": str(root), "dir": str(server_dir), "log": str(log_path)}
        try:
            shutil.copytree(Path(request.image_location) / "rootfs", root, symlinks=True)
            private_dir(server_dir, 0o711)  # its manifest and scripts stay Phoenix's: the server owns root/ and home/
            home = private_dir(server_dir / "home")
            if run_as is not None:
                run_as.own(root)
                run_as.own(home)
                os.chmod(root, 0o700)  # nothing of it for other environments' uids
            env = {
                "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                "HOME": str(home),
                "LANG": os.environ.get("LANG", "C.UTF-8"),
                "PYTHONUNBUFFERED": "1",
                "PHOENIX_ADDRESS": address,
            }
            with log_path.open("ab") as log:
                env.update(self._apply_userdata(request, root, server_dir, env, log, run_as))
                env.update(request.boot_env)
                self._attach_persistent(root, env, run_as)
                # The root as booted: what drift is measured against.
                # Mode 0600: it hashes the secret files written beside it.
                manifest = os.open(server_dir / "boot-manifest.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(manifest, "w") as manifest_file:
                    manifest_file.write(json.dumps(file_manifest(root), sort_keys=True))
                process = subprocess.Popen(
                    ["/bin/sh", "-c", f"exec {request.command}"],
                    cwd=root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: it outlives us and dies whole
                    **(run_as.popen() if run_as else {}),
                )
        except BaseException:
            shutil.rmtree(server_dir, ignore_errors=True)
            raise
        self._children[process.pid] = process
        try:
            started = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            started = 0.0
        handle.update(pid=process.pid, started=started)
        return Launched(address=address, port=request.port, handle=handle)

    def _check_reachable(self, run_as: RunAs) -> None:
        """An unprivileged server needs to pass through every folder above its root and reach
        the interpreter: say so before launching rather than let it die on EACCES."""
        if blocked := unreachable_by_others(Path(sys.executable)):
            raise PhoenixError(
                f"servers run as uid {run_as.uid} (phoenix runs as root) but {blocked} keeps them from the interpreter "
                f"{sys.executable}: install phoenix in a virtualenv made from a system Python (make setup does), "
                "or set provider.server_user: self"
            )
        if blocked := unreachable_by_others(self.workdir.parent, folder=True):
            raise PhoenixError(
                f"servers run as uid {run_as.uid} (phoenix runs as root) but {blocked} (mode "
                f"{stat.S_IMODE(blocked.stat().st_mode):o}) keeps them from the project: let others pass "
                f"(chmod o+x {blocked}), move the project, or set provider.server_user: self"
            )

    def _apply_userdata(self, request: LaunchRequest, root: Path, server_dir: Path, env: dict, log, run_as: RunAs | None) -> dict[str, str]:
        """Do what cloud-init would: write_files into the server's copy, then runcmd, then
        the shell parts. Returns the boot variables for the start command."""
        parsed = userdata.parse(request.userdata)
        variables: dict[str, str] = {}
        for entry in parsed.cloud_config.get("write_files", []):
            target = self._inside(root, entry["path"])
            content = userdata.decode_content(entry)
            target.parent.mkdir(parents=True, exist_ok=True)
            mode = int(entry.get("permissions", "0644"), 8)
            target.unlink(missing_ok=True)
            descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(content)
            os.chmod(target, mode)  # exactly as asked, whatever the umask
            owner = entry.get("owner", "root:root")
            if run_as is not None:  # the server's own files, secrets included (0600: its eyes only)
                run_as.own(target)
                for parent in target.relative_to(root).parents:
                    os.lchown(root / parent, run_as.uid, run_as.gid)
            elif owner != "root:root":
                user, _, group = owner.partition(":")
                shutil.chown(target, user or None, group or None)
            if entry["path"] == f"{userdata.SERVER_ROOT}/{userdata.ENV_FILE}":
                variables = userdata.read_env_file(content)
        boot_env = {**env, **variables, **request.boot_env}
        deadline = Deadline(request.boot_timeout, f"boot commands of {request.server_id}")
        for index, command in enumerate(parsed.cloud_config.get("runcmd", [])):
            argv = ["/bin/sh", "-c", command] if isinstance(command, str) else [str(part) for part in command]
            self._run_boot_step(request, f"runcmd {index + 1}", argv, root, boot_env, log, deadline, run_as)
        scripts_dir = server_dir / "scripts"
        for name, script in parsed.scripts:
            private_dir(scripts_dir, 0o711)
            path = scripts_dir / name
            path.write_bytes(script)
            path.chmod(0o700)
            if run_as is not None:
                run_as.own(path)
            # by a path from the server's root: the project's folders above may be closed to the server
            self._run_boot_step(request, f"script {name}", [f"../scripts/{name}"], root, boot_env, log, deadline, run_as)
        return variables

    def _attach_persistent(self, root: Path, env: dict[str, str], run_as: RunAs | None) -> None:
        """Persistent directories appear in the server as `persistent/<name>`: relative links
        (the folders above the project may be closed to an unprivileged server), owned by the
        environment's uid; PHOENIX_PERSISTENT_<NAME> gives the mount, relative to the root."""
        for key, directory in list(env.items()):
            if key.startswith("PHOENIX_PERSISTENT_"):
                target = Path(directory)
                private_dir(target.parent.parent, 0o711)  # .phoenix/persistent
                private_dir(target.parent, 0o711 if run_as else 0o700)  # .phoenix/persistent/<env>
                target.mkdir(exist_ok=True)
                if run_as is not None:
                    os.lchown(target, run_as.uid, run_as.gid)
                    os.chmod(target, 0o700)  # the environment's own data
                name = key.removeprefix("PHOENIX_PERSISTENT_").lower().replace("_", "-")
                link = root / "persistent" / name
                link.parent.mkdir(exist_ok=True)
                link.symlink_to(os.path.relpath(target, link.parent), target_is_directory=True)
                if run_as is not None:
                    os.lchown(link.parent, run_as.uid, run_as.gid)
                    os.lchown(link, run_as.uid, run_as.gid)
                env[key] = f"persistent/{name}"

    def file_changes(self, handle: dict) -> FileChanges | None:
        try:
            booted = json.loads((Path(handle["dir"]) / "boot-manifest.json").read_text())
        except (OSError, KeyError, ValueError):
            return None
        now = file_manifest(Path(handle["root"]))
        return FileChanges(
            modified=sorted(p for p in booted if p in now and now[p] != booted[p]),
            added=sorted(p for p in now if p not in booted),
            deleted=sorted(p for p in booted if p not in now),
        )

    @staticmethod
    def _inside(root: Path, path: str) -> Path:
        relative = path.removeprefix(userdata.SERVER_ROOT).lstrip("/")
        target = (root / relative).resolve()
        if not target.is_relative_to(root.resolve()):
            raise PhoenixError(f"user-data writes {path}, outside the server")
        return target

    def _run_boot_step(
        self, request: LaunchRequest, what: str, argv: list[str], root: Path, env: dict, log, deadline: Deadline, run_as: RunAs | None
    ) -> None:
        log.write(f"phoenix: {what}\n".encode())
        log.flush()
        process = subprocess.Popen(
            argv, cwd=root, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, **(run_as.popen() if run_as else {}),
        )
        try:
            process.wait(timeout=deadline.remaining() or 0.1)
        except subprocess.TimeoutExpired:
            self._signal_group(process.pid, signal.SIGKILL)  # whatever it started goes with it
            process.wait()
            raise PhoenixError(f"{request.server_id}: {what} ran out of time") from None
        result = process
        if result.returncode != 0:
            log.flush()
            excerpt = self.log_excerpt({"log": log.name, "root": str(root)})
            raise PhoenixError(f"{request.server_id}: {what} exited {result.returncode}; {excerpt}")

    def is_alive(self, handle: dict) -> bool:
        """True while the server's process is the one we started and not a zombie."""
        pid = handle.get("pid")
        if not pid:
            return False
        child = self._children.get(pid)
        if child is not None:
            # Our own child: its pid cannot be recycled before we reap it, and waitpid is cheap.
            return child.poll() is None
        try:
            process = psutil.Process(pid)
            if abs(process.create_time() - handle.get("started", 0)) > 0.05:
                return False  # the pid was recycled by another process
            return process.status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            return False

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        recorded = handle.get("dir") or handle.get("root")
        tree = owned_path(self.workdir, recorded, "server directory") if recorded else None  # checked before any signal
        if handle.get("pid") and self._group_alive(handle["pid"], handle):  # the leader, or children it left
            pgid = handle["pid"]
            self._signal_group(pgid, signal.SIGTERM)
            try:
                deadline.poll(lambda: not self._group_alive(pgid, handle), interval=0.02, max_interval=0.2)
            except DeadlineExceeded:
                self._signal_group(pgid, signal.SIGKILL)
                Deadline(5, f"server process {pgid} to die after SIGKILL").poll(
                    lambda: not self._group_alive(pgid, handle), interval=0.02
                )
        child = self._children.pop(handle.get("pid"), None)
        if child is not None:
            child.wait(timeout=5)
        if tree is not None:  # a launch that failed before it was recorded left nothing here
            shutil.rmtree(tree, ignore_errors=True)

    def terminate(self, handle: dict) -> None:
        if handle.get("pid") and self._group_alive(handle["pid"], handle):
            self._signal_group(handle["pid"], signal.SIGKILL)
            child = self._children.get(handle["pid"])
            if child is not None:
                child.wait(timeout=5)

    def _group_alive(self, pgid: int, handle: dict) -> bool:
        """Is anything left of the server's own process group (children it forked included)?

        The group is ours only when its identity is proven: its leader is the process we
        started (pid and start time), or the leader is gone and what is left in its group
        started after it (the kernel never hands out a pid still used as a group id, so
        orphans of our leader keep the id ours). A leader pid alive with another start time
        means the pid was recycled: our group is gone, and the other one is not ours."""
        if self.is_alive(handle):
            return True
        started = handle.get("started") or 0.0
        if not started:
            return False  # no recorded identity: nothing can be proven ours
        try:
            if psutil.Process(pgid).is_running():
                return False  # pid recycled by another process (its start time did not match)
        except psutil.NoSuchProcess:
            pass
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        # Something is left: maybe only zombies waiting for init to reap them.
        for process in psutil.process_iter(["pid", "status", "create_time"]):
            try:
                if (
                    os.getpgid(process.pid) == pgid
                    and process.info["status"] != psutil.STATUS_ZOMBIE
                    and process.info["create_time"] >= started - 0.05
                ):
                    return True
            except (ProcessLookupError, psutil.Error):
                continue
        return False

    @staticmethod
    def _signal_group(pgid: int, sig: int) -> None:
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            pass

    def discover(self, env: str) -> dict[str, dict]:
        """Server processes found by their working directory, `servers/<env>/<id>/root`."""
        base = (self.servers_dir / env).resolve()
        found: dict[str, dict] = {}
        for process in psutil.process_iter(["pid", "cwd", "create_time", "status"]):
            cwd = process.info.get("cwd")
            if not cwd or process.info.get("status") == psutil.STATUS_ZOMBIE:
                continue
            path = Path(cwd)
            if path.name != "root" or path.parent.parent != base:
                continue
            server_id = path.parent.name
            pid = process.info["pid"]
            if server_id in found and found[server_id]["pid"] < pid:
                continue  # keep the group leader (the first process), not a child it forked
            found[server_id] = {
                "pid": pid,
                "started": process.info["create_time"],
                "root": str(path),
                "dir": str(path.parent),
                "log": str(self.logs_dir / env / "unknown" / f"{server_id}.log"),
            }
        return found

    def describe(self, handle: dict) -> dict:
        return {"pid": handle.get("pid"), "root": handle.get("root")}

    def label(self, handle: dict) -> str:
        return f"process {handle.get('pid')}"

    def adopt(self, recorded: dict, found: dict) -> dict:
        return {**recorded, **{key: found[key] for key in ("pid", "started", "root", "dir")}}  # the recorded log path stays

    def log_excerpt(self, handle: dict) -> LogExcerpt | None:
        """The server's log (named relative to the project directory) and what in it explains
        a failure; paths inside the server's root read as the project's (`app/server.py`)."""
        if not handle.get("log"):
            return None
        path = Path(handle["log"])
        try:
            size = path.stat().st_size
            with path.open("rb") as log:
                data = log.read(LOG_READ if size > 2 * LOG_READ else size)
                if size > 2 * LOG_READ:  # a long log: its start and its end
                    log.seek(size - LOG_READ)
                    data += b"\n" + log.read().partition(b"\n")[2]
        except OSError:
            return None  # no log where the handle says (a server adopted by recovery: its role was unknown)
        root = handle.get("root")
        roots = {str(Path(root)) + os.sep, str(Path(root).resolve()) + os.sep} if root else set()
        for base in (self.workdir.parent, self.workdir.parent.resolve()):  # the project directory
            if path.is_relative_to(base):
                path = path.relative_to(base)
                break
        return LogExcerpt(str(path), tuple(error_lines(data.decode(errors="replace"), strip=tuple(roots))))
