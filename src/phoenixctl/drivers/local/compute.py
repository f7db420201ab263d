"""The embedded local provider: a content-addressed image store and servers as processes.

Each server is a detached process group started from its own fresh copy of an image (so
what a server writes never changes the image), bound to its own loopback address. Servers
outlive the `phoenix` command that started them, like cloud servers do; later commands
find them by pid and check the process start time so a recycled pid is never mistaken
for a server."""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil

from ...boot import userdata
from ...deadline import Deadline
from ...errors import PhoenixError
from ...excerpt import error_lines
from ...spec import ImageSpec
from .identity import RunAs, private_dir, server_identity, unreachable_by_others
from .loopback import LoopbackPool
from ..base import ComputeDriver, FileChanges, ImageSample, Launched, LaunchRequest, LogExcerpt
from .hermetic import clean_env
from .images import LocalImages, file_manifest, read_manifest, same_file
from .in_place import LocalInPlace, write_baseline
from .processes import LocalProcesses
from .shipping import LocalShipping

LOG_READ = 128 * 1024  # of a long log, the excerpt reads this much of its start and of its end


class LocalCompute(LocalInPlace, LocalImages, LocalProcesses, LocalShipping, ComputeDriver):
    name = "local"
    capabilities = frozenset({"persistent_layer", "in_place"})

    def __init__(self, workdir: Path, project: str, settings=None):
        super().__init__(workdir, project, settings)
        self.addresses = LoopbackPool(workdir)
        self.images_dir = workdir / "images"
        self.servers_dir = workdir / "servers"
        self.logs_dir = workdir / "logs"
        self._children: dict[int, subprocess.Popen] = {}  # reaped by us, so no zombies linger

    def capability_report(self, probe: bool, deadline: Deadline, sample: ImageSample | None = None) -> list[dict]:
        images = [p for p in self.images_dir.glob("img-*")] if self.images_dir.is_dir() else []
        report = [
            {"capability": "images", "ok": True, "detail": f"content-addressed copies under {self.images_dir} ({len(images)} kept)"},
            {"capability": "user-data", "ok": True, "detail": "applied by the provider as cloud-init would: write_files, runcmd, shell parts"},
            {"capability": "servers", "ok": True, "detail": "processes on their own loopback addresses"},
            self.aggregator_report(),
        ]
        run_as = server_identity(self.workdir, "doctor", self.settings.server_user)
        if run_as is not None:
            unisolated = self._unreachable(run_as)
            report.append({"capability": "server isolation", "ok": not unisolated,
                           "detail": unisolated or "each environment's servers run as an unprivileged uid of their own"})
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
    def launch(self, request: LaunchRequest) -> Launched:
        address = self.addresses.reserve(request.port)
        run_as = server_identity(self.workdir, request.env, self.settings.server_user)
        unisolated = self._unreachable(run_as) if run_as is not None else ""
        if unisolated and self.settings.server_user == "isolated":
            raise PhoenixError(f"{unisolated}, or set provider.server_user: auto or self")
        if unisolated:
            run_as = None  # auto: as root rather than not at all; the server's log says why
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
            # Hermetic: nothing of the shell that runs phoenix, only what the image declares.
            manifest = read_manifest(Path(request.image_location)) or {}
            env = {**clean_env(root, home, manifest.get("env", {}), manifest.get("path", [])), "PHOENIX_ADDRESS": address}
            with log_path.open("ab") as log:
                self.ship(request, log)  # before its first line: the aggregator reads this file as it grows
                if unisolated:
                    log.write(f"phoenix: running as root: {unisolated}\n".encode())
                env.update(self._apply_userdata(request, root, server_dir, env, log, run_as))
                env.update(request.boot_env)
                self._attach_persistent(root, env, run_as)
                write_baseline(server_dir, file_manifest(root))  # the root as booted: what drift is measured against
                handle.update(self._start(server_dir, request.command, env, log, run_as))
        except BaseException:
            shutil.rmtree(server_dir, ignore_errors=True)
            raise
        return Launched(address=address, port=request.port, handle=handle)

    def _start(self, server_dir: Path, command: str, env: dict[str, str], log, run_as: RunAs | None) -> dict:
        """Start the server's command in its root; what it was started with is kept beside it
        (mode 0600: its environment may hold boot values), for an in-place update to go back
        to. Returns the process's identity (pid and start time)."""
        start = os.open(server_dir / "start.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(start, "w") as start_file:
            start_file.write(json.dumps({"command": command, "env": env, "run_as": [run_as.uid, run_as.gid] if run_as else None}))
        process = subprocess.Popen(
            ["/bin/sh", "-c", f"exec {command}"],
            cwd=server_dir / "root",
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: it outlives us and dies whole
            **(run_as.popen() if run_as else {}),
        )
        self._children[process.pid] = process
        try:
            started = psutil.Process(process.pid).create_time()
        except psutil.NoSuchProcess:
            started = 0.0
        return {"pid": process.pid, "started": started}

    def _unreachable(self, run_as: RunAs) -> str:
        """Why an unprivileged server could not run here ('' when it can): it must pass through
        every folder above its root and reach the interpreter."""
        if blocked := unreachable_by_others(Path(sys.executable)):
            return (
                f"an unprivileged uid ({run_as.uid}) cannot run the servers: {blocked} keeps it from the interpreter "
                f"{sys.executable} (install phoenix under folders others may pass through, from a system Python)"
            )
        if blocked := unreachable_by_others(self.workdir.parent, folder=True):
            return (
                f"an unprivileged uid ({run_as.uid}) cannot run the servers: {blocked} (mode "
                f"{stat.S_IMODE(blocked.stat().st_mode):o}) keeps it from the project (chmod o+x {blocked}, or move the project)"
            )
        return ""

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
                if link.is_symlink():  # applied again by an in-place update
                    link.unlink()
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
        now = file_manifest(Path(handle["root"]), booted)
        return FileChanges(
            modified=sorted(p for p in booted if p in now and not same_file(now[p], booted[p])),
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
        # What explains a failure is the server's own output, not the lines Phoenix wrote into
        # its log (`phoenix: runcmd 1`, `phoenix: running as root: ...`).
        output = "\n".join(line for line in data.decode(errors="replace").splitlines() if not line.startswith("phoenix: "))
        return LogExcerpt(str(path), tuple(error_lines(output, strip=tuple(roots))))
