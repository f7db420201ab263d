"""AWS images: AMIs baked by a builder instance (the image's files in its user-data, its steps
reported on its console), found by content address, or taken prebuilt (by id, name or a
Packer manifest). A part of AWSCompute."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from ...spec import ImageRef, ImageSpec
from .api import NOT_FOUND, AWSError, aws_tags, tag_filters
from ..base import BakeResult
from ..cloud_init import BAKE_MARKER, builder_userdata
from ..recipe import recipe_digest



class AWSImages:
    """Baking and finding AMIs (mixed into AWSCompute, which provides the client and waits)."""

    def resolve(self, ref: ImageRef, project_dir: Path) -> str:
        """An AMI id for a reference: as given, the newest by name, or a Packer manifest's last build."""
        key = ref.model_dump_json()
        if key in self._refs:
            return self._refs[key]
        if ref.id:
            ami = ref.id
        elif ref.name:
            images = self.aws.pages(
                "ec2", "describe_images", "Images", Owners=ref.owners or ["self"],
                Filters=[{"Name": "name", "Values": [ref.name]}, {"Name": "state", "Values": ["available"]}],
            )
            if not images:
                raise PhoenixError(f"no available image in {self.aws.region} matches {ref.describe()}")
            ami = max(images, key=lambda i: (i.get("CreationDate", ""), i.get("Name", "")))["ImageId"]
        else:
            ami = self._from_manifest(project_dir / ref.packer_manifest)
        self._refs[key] = ami
        return ami

    def _from_manifest(self, path: Path) -> str:
        try:
            manifest = json.loads(path.read_text())
            builds = manifest["builds"]
            last = next(b for b in builds if b.get("packer_run_uuid") == manifest.get("last_run_uuid")) if manifest.get("last_run_uuid") else builds[-1]
        except (OSError, ValueError, KeyError, IndexError, StopIteration):
            raise PhoenixError(f"{path.name}: not a Packer manifest with builds (expected builds[].artifact_id)") from None
        # artifact_id is "region:ami-id[,region:ami-id...]"
        for artifact in str(last.get("artifact_id", "")).split(","):
            region, _, ami = artifact.partition(":")
            if region == self.aws.region and ami:
                return ami
        raise PhoenixError(f"{path.name}: the last build has no image in region {self.aws.region}")

    def image_id(self, name: str, recipe: ImageSpec, project_dir: Path) -> str:
        if recipe.prebuilt:
            return self.resolve(recipe.prebuilt, project_dir)
        return f"img-{name}-{recipe_digest(recipe, project_dir, name)[:16]}"

    def _baked(self, image_id: str) -> dict | None:
        images = self.aws.pages(
            "ec2", "describe_images", "Images", Owners=["self"],
            Filters=tag_filters(self._tags(image=image_id)),
        )
        usable = [i for i in images if i["State"] in ("available", "pending")]
        return max(usable, key=lambda i: i.get("CreationDate", "")) if usable else None

    def image_available(self, image_id: str, location: str) -> bool:
        try:
            images = self.aws.call("ec2", "describe_images", ImageIds=[location])["Images"]
        except AWSError as exc:
            if exc.code in NOT_FOUND or exc.code == "InvalidAMIID.Malformed":
                return False
            raise
        return bool(images) and images[0]["State"] == "available"

    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline, no_cache: bool = False) -> BakeResult:
        started = time.monotonic()
        image_id = self.image_id(name, recipe, project_dir)
        digest = "" if recipe.prebuilt else recipe_digest(recipe, project_dir, name)  # the whole of it, on the AMI's tags
        if recipe.prebuilt:
            if not self.image_available(image_id, image_id):
                raise PhoenixError(f"image {name}: {recipe.prebuilt.describe()} ({image_id}) is not available in {self.aws.region}")
            return BakeResult(image_id, image_id, cached=True, seconds=time.monotonic() - started)
        existing = None if no_cache else self._baked(image_id)
        if existing is not None:
            if existing["State"] == "pending":  # an interrupted bake left it finishing
                self.aws.wait("ec2", "image_available", deadline, delay=15, ImageIds=[existing["ImageId"]])
            return BakeResult(image_id, existing["ImageId"], cached=True, seconds=time.monotonic() - started, digest=digest)
        if recipe.base is None:
            raise PhoenixError(f"image {name}: provider aws bakes from a base image; give images.{name}.base (or prebuilt)")
        base = self.resolve(recipe.base, project_dir)
        userdata = builder_userdata(name, recipe, project_dir)
        _, _, subnets = self.aws.network(None)
        builder = self._run_instance(
            ImageId=base, InstanceType=self.settings.instance_type, UserData=userdata, SubnetId=subnets[0]["SubnetId"], InstanceInitiatedShutdownBehavior="stop",
            TagSpecifications=[{"ResourceType": "instance", "Tags": aws_tags({**self._tags(builder=image_id), "Name": f"phoenix-bake-{image_id}"})}],
        )["InstanceId"]
        ami = None
        try:
            self._wait_builder(name, builder, deadline)
            ami = self.aws.call(
                "ec2", "create_image", InstanceId=builder, Name=f"phoenix-{self.project}-{image_id}",
                Description=f"Phoenix image {name} of project {self.project}",
                TagSpecifications=[{"ResourceType": "image", "Tags": aws_tags({**self._tags(image=image_id, digest=digest), "Name": image_id})}],
            )["ImageId"]
            self.aws.wait("ec2", "image_available", deadline, delay=15, ImageIds=[ami])
            self._tag_snapshots(ami, self._tags(image=image_id))
        except BaseException:
            if ami:
                self._forget_image(ami)
            raise
        finally:
            self.aws.call("ec2", "terminate_instances", InstanceIds=[builder])
        return BakeResult(image_id, ami, cached=False, seconds=time.monotonic() - started, digest=digest)

    def _wait_builder(self, name: str, builder: str, deadline: Deadline) -> None:
        """The builder runs the recipe from its user-data and powers itself off; its console
        says whether the steps succeeded."""
        if self.aws.emulator:  # nothing runs there: stop it ourselves, as a finished builder would be
            self._wait_state({"instance_id": builder}, {"running"}, deadline, f"builder {builder}")
            self.aws.call("ec2", "stop_instances", InstanceIds=[builder])
            self._wait_state({"instance_id": builder}, {"stopped"}, deadline, f"builder {builder}")
            return
        self._wait_state({"instance_id": builder, "launched": time.time()}, {"stopped"}, deadline, f"builder {builder}")

        def verdict() -> str:
            output = self.aws.call("ec2", "get_console_output", InstanceId=builder, Latest=True).get("Output", "")  # decoded by botocore
            return next((line for line in output.splitlines() if BAKE_MARKER in line), "")

        try:
            line = Deadline(min(120, max(deadline.remaining(), 1)), f"the console of builder {builder}").poll(verdict, interval=5)
        except DeadlineExceeded:
            raise PhoenixError(f"bake of image {name}: builder {builder} stopped without reporting its steps' outcome") from None
        outcome = line.split(BAKE_MARKER, 1)[1].strip()
        if outcome != "ok":
            raise PhoenixError(f"bake of image {name}: the builder's steps {outcome}")

    def _tag_snapshots(self, ami: str, tags: dict[str, str]) -> None:
        """The image's snapshots carry its tags too (tagged here: not every API tags them at creation)."""
        image = self.aws.call("ec2", "describe_images", ImageIds=[ami])["Images"][0]
        snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
        if snapshots:
            self.aws.call("ec2", "create_tags", Resources=snapshots, Tags=aws_tags(tags))

    def forget_image(self, image_id: str, location: str) -> None:
        """`phoenix images prune`: deregister the AMI and delete its snapshots."""
        self._forget_image(location)

    def _forget_image(self, ami: str) -> None:
        """Deregister an image Phoenix made and delete its snapshots (best effort: a failure path)."""
        try:
            images = self.aws.call("ec2", "describe_images", ImageIds=[ami])["Images"]
            snapshots = [m["Ebs"]["SnapshotId"] for i in images for m in i.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
            self.aws.call("ec2", "deregister_image", ImageId=ami)
            for snapshot in snapshots:
                self.aws.call("ec2", "delete_snapshot", SnapshotId=snapshot)
        except PhoenixError:
            pass
