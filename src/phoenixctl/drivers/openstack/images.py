"""OpenStack images: Glance images baked by a builder server (the image's files and steps in
its user-data, as on AWS) and snapshotted with Nova's createImage, found by the recipe's
content address in their properties, or taken prebuilt (by id, name or a Packer manifest).
A part of OpenStackCompute."""

from __future__ import annotations

import base64
import fnmatch
import json
import time
from pathlib import Path

from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from ...spec import ImageRef, ImageSpec
from ..cloud_init import BAKE_MARKER, builder_userdata  # the same cloud-init builder on every cloud
from ..base import BakeResult
from ..recipe import recipe_digest

PROPERTY = "phoenix_"  # Glance properties: phoenix_project, phoenix_image (the content address), phoenix_digest


class OpenStackImages:
    """Baking and finding Glance images (mixed into OpenStackCompute, which provides the connection)."""

    def resolve(self, ref: ImageRef, project_dir: Path) -> str:
        """A Glance image id for a reference: as given, the newest active image whose name
        matches (shell patterns allowed), or a Packer manifest's last build."""
        key = ref.model_dump_json()
        if key in self._refs:
            return self._refs[key]
        if ref.id:
            image = ref.id
        elif ref.name:
            images = [i for i in self.os.call("list images", lambda: list(self.os.conn.image.images(status="active")))
                      if fnmatch.fnmatchcase(i.name or "", ref.name)]
            if not images:
                raise PhoenixError(f"no active image in this cloud matches {ref.describe()}")
            image = max(images, key=lambda i: (i.created_at or "", i.name or "")).id
        else:
            image = self._from_manifest(project_dir / ref.packer_manifest)
        self._refs[key] = image
        return image

    @staticmethod
    def _from_manifest(path: Path) -> str:
        try:
            manifest = json.loads(path.read_text())
            builds = manifest["builds"]
            run = manifest.get("last_run_uuid")
            last = next(b for b in builds if b.get("packer_run_uuid") == run) if run else builds[-1]
            return str(last["artifact_id"])  # Packer's openstack builder: the image id
        except (OSError, ValueError, KeyError, IndexError, StopIteration):
            raise PhoenixError(f"{path.name}: not a Packer manifest with builds (expected builds[].artifact_id)") from None

    def image_id(self, name: str, recipe: ImageSpec, project_dir: Path) -> str:
        if recipe.prebuilt:
            return self.resolve(recipe.prebuilt, project_dir)
        return f"img-{name}-{recipe_digest(recipe, project_dir, name)[:16]}"

    def _baked(self, image_id: str):
        """This project's image of that content address (its name says it, its properties prove it)."""
        named = self.os.call("list images", lambda: list(self.os.conn.image.images(name=self._image_name(image_id))))
        images = [i for i in named if i.status in ("active", "queued", "saving")
                  and (i.properties or {}).get(f"{PROPERTY}project") == self.project and (i.properties or {}).get(f"{PROPERTY}image") == image_id]
        return max(images, key=lambda i: i.created_at or "") if images else None

    def _image_name(self, image_id: str) -> str:
        return f"phoenix-{self.project}-{image_id}"

    def _image_status(self, location: str) -> str:
        image = self.os.found(f"show image {location}", self.os.conn.image.get_image, location)
        return image.status if image else "gone"

    def image_available(self, image_id: str, location: str) -> bool:
        return self._image_status(location) == "active"

    def _wait_image(self, location: str, deadline: Deadline) -> None:
        def active() -> bool:
            status = self._image_status(location)
            if status in ("killed", "deleted", "gone", "deactivated"):
                raise PhoenixError(f"image {location} is {status}, waiting for it to be active")
            return status == "active"

        self.os.wait(active, deadline, real_interval=10)

    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline, no_cache: bool = False) -> BakeResult:
        started = time.monotonic()
        image_id = self.image_id(name, recipe, project_dir)
        if recipe.prebuilt:
            if not self.image_available(image_id, image_id):
                raise PhoenixError(f"image {name}: {recipe.prebuilt.describe()} ({image_id}) is not an active image of this cloud")
            return BakeResult(image_id, image_id, cached=True, seconds=time.monotonic() - started)
        digest = recipe_digest(recipe, project_dir, name)
        existing = None if no_cache else self._baked(image_id)
        if existing is not None:
            if existing.status != "active":  # an interrupted bake left it saving
                self._wait_image(existing.id, deadline)
            return BakeResult(image_id, existing.id, cached=True, seconds=time.monotonic() - started, digest=digest)
        if recipe.base is None:
            raise PhoenixError(f"image {name}: provider openstack bakes from a base image; give images.{name}.base (or prebuilt)")
        base = self.resolve(recipe.base, project_dir)
        userdata = builder_userdata(name, recipe, project_dir)
        network = self.os.network(None)[0]  # the project's own network
        builder = self.os.call("create the image builder", self.os.conn.compute.create_server,
                               name=f"phoenix-bake-{self.project}-{image_id}", image_id=base, flavor_id=self._flavor(None).id,
                               networks=[{"uuid": network.id}], user_data=base64.b64encode(userdata).decode(),
                               metadata=self._tags(builder=image_id), **self._config_drive())
        image = None
        try:
            self._wait_builder(name, builder.id, deadline)
            properties = {f"{PROPERTY}project": self.project, f"{PROPERTY}image": image_id, f"{PROPERTY}digest": digest}
            image = self.os.call("create the image", self.os.conn.compute.create_server_image, builder.id,
                                 self._image_name(image_id), metadata=properties)
            self._wait_image(image.id, deadline)
        except BaseException:
            if image is not None:
                self._forget_image(image.id)
            raise
        finally:
            self._delete_server(builder.id)
        return BakeResult(image_id, image.id, cached=False, seconds=time.monotonic() - started, digest=digest)

    def _wait_builder(self, name: str, builder: str, deadline: Deadline) -> None:
        """The builder runs the recipe from its user-data and powers itself off (SHUTOFF); its
        console says whether the steps succeeded."""
        self._wait_status({"server_id": builder}, {"SHUTOFF"}, deadline, f"builder {builder}")

        def verdict() -> str:
            output = self.os.call("read the builder's console", self.os.conn.compute.get_server_console_output, builder).get("output") or ""
            return next((line for line in output.splitlines() if BAKE_MARKER in line), "")

        try:
            line = Deadline(min(120, max(deadline.remaining(), 1)), f"the console of builder {builder}").poll(verdict, interval=self.os.interval(5))
        except DeadlineExceeded:
            raise PhoenixError(f"bake of image {name}: builder {builder} stopped without reporting its steps' outcome") from None
        outcome = line.split(BAKE_MARKER, 1)[1].strip()
        if outcome != "ok":
            raise PhoenixError(f"bake of image {name}: the builder's steps {outcome}")

    def forget_image(self, image_id: str, location: str) -> None:
        """`phoenix images prune`: delete the Glance image."""
        self._forget_image(location)

    def _forget_image(self, location: str) -> None:
        try:
            self.os.call(f"delete image {location}", self.os.conn.image.delete_image, location, ignore_missing=True)
        except PhoenixError:
            pass  # best effort: a failure path
