"""What every cloud provider puts in cloud-init user-data, the same on AWS and OpenStack: the
image builder (each layer's files unpacked, its steps run in a clean environment, a marker on
the console, power off) and the part that starts a server as a service."""

from __future__ import annotations

import base64
import gzip
import io
import shlex
import tarfile
from email import message_from_bytes
from pathlib import Path

from ..boot.userdata import ENV_FILE, SERVER_ROOT, USERDATA_LIMIT, mime_document
from ..errors import PhoenixError
from ..spec import ImageSpec
from .recipe import SYSTEM_PATH, walk_files

BAKE_MARKER = "PHOENIX-BAKE:"  # a builder's last line on the console: "ok", or where it failed


def builder_userdata(name: str, recipe: ImageSpec, project_dir: Path) -> bytes:
    """The builder's user-data: each layer's files (a gzipped tar), unpacked in the server root
    before that layer's steps, which run in order in a clean environment as the local
    provider's do; then the boot-time start service, a marker on the console, power off."""
    archives, commands = [], []
    for index, layer in enumerate(recipe.all_layers(), start=1):
        archive = f"/var/lib/phoenix/layer-{index}.tgz.b64"
        archives.append((archive, _layer_archive(layer.files, project_dir)))
        commands.append(f"# layer {layer.name or index}")
        commands.append(f"base64 -d {archive} | tar -xz -C {SERVER_ROOT} && rm -f {archive}")
        # Each step as its own `/bin/sh -c`, as the local provider runs it: its exit status alone
        # decides (bash's `set -e` ignores a failure inside `a && b`, and the step would pass).
        commands += [f'env -i PATH="$(image_path)" "${{CLEAN[@]}}" /bin/sh -c {shlex.quote(step)}' for step in layer.steps]
    declared = " ".join(f"{key}={shlex.quote(value)}" for key, value in {**recipe.env, "PHOENIX_IMAGE": name}.items())
    runtime = f'PHOENIX_RUNTIME="$(PATH={SYSTEM_PATH} command -v {shlex.quote(recipe.runtime)})"' if recipe.runtime else "PHOENIX_RUNTIME="
    steps = "\n".join(commands)
    script = f"""#!/bin/bash
# Phoenix image builder for {name}: unpack each layer and run its steps, report on the console, power off.
set -euo pipefail
trap 'echo "{BAKE_MARKER} failed at line $LINENO (exit $?)" > /dev/console; poweroff' ERR
mkdir -p {SERVER_ROOT}
cd {SERVER_ROOT}
{runtime}
image_path() {{ for bin in {SERVER_ROOT}/bin {SERVER_ROOT}/*/bin; do if [ -d "$bin" ]; then printf %s: "$bin"; fi; done; echo {SYSTEM_PATH}; }}
CLEAN=(HOME=/root LANG=C.UTF-8 PYTHONNOUSERSITE=1 PYTHONUNBUFFERED=1 PHOENIX_RUNTIME="$PHOENIX_RUNTIME" {declared})  # nothing else
{steps}
cloud-init clean --logs   # servers made from this image boot as new instances
echo "{BAKE_MARKER} ok" > /dev/console
poweroff
"""
    cloud_config = "#cloud-config\nwrite_files:\n" + "".join(
        f"- path: {path}\n  permissions: '0600'\n  content: {content}\n" for path, content in archives
    )
    document = mime_document([("cloud-config", "image.yaml", cloud_config.encode()), ("x-shellscript", "bake.sh", script.encode())])
    packed = gzip.compress(document, mtime=0)
    if len(packed) > USERDATA_LIMIT:
        raise PhoenixError(
            f"image {name}: its files make a {len(packed)}-byte builder user-data (gzipped), over the {USERDATA_LIMIT}-byte user-data limit Phoenix keeps to on every cloud (EC2's); "
            f"bake it with Packer and reference it with images.{name}.prebuilt"
        )
    return packed


def _layer_archive(files: list[str], project_dir: Path) -> str:
    """One layer's files as a gzipped tar, base64-encoded."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=9) as tar:
        for entry in files:
            for path in walk_files(project_dir / entry):
                tar.add(path, arcname=str(path.relative_to(project_dir)), recursive=False)
    return base64.b64encode(archive.getvalue()).decode()


def with_start(userdata: bytes, command: str, identifier: str = "phoenix-server") -> bytes:
    """The rendered user-data plus a last part that starts the server as a service with its
    boot variables (the part a local server gets from the local provider itself). Its output
    goes to the journal as `identifier` (`SERVER@RELEASE`): what the user-data's rsyslog
    configuration ships the server's lines by (see `boot/syslog.py`)."""
    raw = gzip.decompress(userdata) if userdata[:2] == b"\x1f\x8b" else userdata
    parts = [
        (part.get_content_subtype(), part.get_filename(), part.get_payload(decode=True))
        for part in message_from_bytes(raw).walk() if not part.is_multipart()
    ]
    start = (
        "#!/bin/sh\n# Phoenix: start the server with its boot variables, restarted if it exits.\n"
        f"exec systemd-run --unit=phoenix-server --property=Restart=on-failure --working-directory={SERVER_ROOT} "
        f"--property=SyslogIdentifier={shlex.quote(identifier)} "
        f"--property=EnvironmentFile={SERVER_ROOT}/{ENV_FILE} /bin/sh -c {shlex.quote(command)}\n"
    )
    document = mime_document(parts + [("x-shellscript", "phoenix-start.sh", start.encode())])
    if len(document) > USERDATA_LIMIT:
        document = gzip.compress(document, mtime=0)
        if len(document) > USERDATA_LIMIT:
            raise PhoenixError(f"user-data with the start part is {len(document)} bytes gzipped, over the {USERDATA_LIMIT}-byte user-data limit Phoenix keeps to on every cloud (EC2's)")
    return document
