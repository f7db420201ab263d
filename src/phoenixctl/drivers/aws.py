"""The AWS provider, through boto3: AMIs, EC2 instances, ELBv2 target groups, Elastic IPs
and Route 53 records.

- Credentials come from boto3's standard chain and are never stored or printed. The
  region comes from `provider.region` or the chain; the endpoint from
  `provider.endpoint_url` or the standard `AWS_ENDPOINT_URL` variables.
- Throttling and transient errors are retried by botocore's `adaptive` retry mode; long
  waits use botocore's waiters, each bounded by the caller's deadline; lists are paged.
- Everything Phoenix creates is tagged `phoenix:project`, `phoenix:env`, `phoenix:role`
  (and `phoenix:server`, `phoenix:fingerprint`, `phoenix:operation` on instances), so
  `discover` finds what exists even when the state store does not know it.
- An emulator (moto, LocalStack) runs nothing on its instances and hands out addresses
  that are not theirs: with `provider.emulator` (auto: the endpoint is on loopback)
  Phoenix never connects to an instance, the balancer's target health is the gate, and a
  builder counts as finished once it runs (Phoenix stops it itself)."""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import ipaddress
import math
import os
import shlex
import tarfile
import threading
import time
from email import message_from_bytes
from email.mime.text import MIMEText
from pathlib import Path
from urllib.parse import urlparse

from ..deadline import Deadline, DeadlineExceeded
from ..errors import PhoenixError
from ..spec import ImageRef, ImageSpec, ProviderSpec
from ..userdata import SERVER_ROOT, USERDATA_LIMIT, ENV_FILE
from . import aws_shim
from .base import (
    BakeResult,
    BalancerRequest,
    ComputeDriver,
    Endpoint,
    Launched,
    LaunchRequest,
    LoadBalancerDriver,
    MemberCounters,
    MemberState,
)
from .local import recipe_digest, walk_files

TAG = "phoenix:"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidAMIID.NotFound", "InvalidAllocationID.NotFound", "InvalidGroup.NotFound")
EVENTUAL_GRACE = 60.0  # seconds after a launch during which "not found" means "not visible yet"
BAKE_MARKER = "PHOENIX-BAKE:"


def aws_tags(tags: dict[str, str]) -> list[dict]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def tag_map(tags: list[dict] | None) -> dict[str, str]:
    return {tag["Key"]: tag["Value"] for tag in tags or []}


def _code(exc: Exception) -> str:
    return getattr(exc, "response", {}).get("Error", {}).get("Code", "")


class AWS:
    """Clients for one provider section, made on first use and shared by both drivers."""

    _shared: dict[tuple, "AWS"] = {}
    _shared_lock = threading.Lock()

    def __init__(self, settings: ProviderSpec):
        self.settings = settings
        self._clients: dict[str, object] = {}
        self._lock = threading.Lock()
        self._named_locks: dict[str, threading.Lock] = {}
        self._session = None

    def _lock_for(self, name: str) -> threading.Lock:
        with self._lock:
            return self._named_locks.setdefault(name, threading.Lock())

    @classmethod
    def of(cls, settings: ProviderSpec) -> "AWS":
        key = (settings.region, settings.endpoint_url, settings.emulator, os.environ.get("AWS_ENDPOINT_URL"), os.environ.get(aws_shim.VARIABLE))
        with cls._shared_lock:
            return cls._shared.setdefault(key, cls(settings))

    def client(self, service: str):
        with self._lock:
            if service not in self._clients:
                self._clients[service] = self._make(service)
            return self._clients[service]

    def _make(self, service: str):
        try:
            import boto3
            from botocore.config import Config
        except ImportError:
            raise PhoenixError("provider aws needs boto3: pip install 'phoenixctl[aws]'") from None
        if self._session is None:
            self._session = boto3.Session(region_name=self.settings.region)
            if not self._session.region_name:
                raise PhoenixError("provider aws: no region; set provider.region in phoenix.yaml or AWS_DEFAULT_REGION")
        config = Config(retries={"mode": "adaptive", "max_attempts": 10}, connect_timeout=5, read_timeout=60)
        kwargs = {"config": config}
        if self.settings.endpoint_url:
            kwargs["endpoint_url"] = self.settings.endpoint_url
        if self._session.get_credentials() is None:
            if not self._emulated_endpoint(self.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")):
                raise PhoenixError("provider aws: no credentials found (boto3's chain: environment, profile, instance role)")
            # An emulator takes any credentials; the chain found none, so hand it placeholders.
            kwargs.update(aws_access_key_id="emulator", aws_secret_access_key="emulator")
        client = self._session.client(service, **kwargs)
        return aws_shim.wrap(service, client)

    @property
    def region(self) -> str:
        return self.client("ec2").meta.region_name

    @property
    def emulator(self) -> bool:
        if self.settings.emulator != "auto":
            return bool(self.settings.emulator)
        return self._emulated_endpoint(self.client("ec2").meta.endpoint_url)

    @staticmethod
    def _emulated_endpoint(url: str | None) -> bool:
        if not url:
            return False
        host = urlparse(url).hostname or ""
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return host == "localhost"

    def wait(self, service: str, waiter: str, deadline: Deadline, delay: float = 5.0, **kwargs) -> None:
        """A botocore waiter, bounded by the deadline (polled faster against an emulator)."""
        from botocore.exceptions import WaiterError

        delay = 1 if self.emulator else delay
        attempts = max(1, math.ceil(max(deadline.remaining(), 0.1) / delay))
        try:
            self.client(service).get_waiter(waiter).wait(WaiterConfig={"Delay": delay, "MaxAttempts": attempts}, **kwargs)
        except WaiterError as exc:
            reason = exc.kwargs.get("reason", "") if hasattr(exc, "kwargs") else ""
            if "Max attempts exceeded" in str(exc):
                raise DeadlineExceeded(f"timed out after {deadline.seconds:g}s waiting for {deadline.what}") from None
            raise PhoenixError(f"{deadline.what}: {reason or exc}") from None

    def call(self, service: str, operation: str, **kwargs):
        """One API call; an AWS error becomes one line naming the call and AWS's reason."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client(service), operation)(**kwargs)
        except ClientError as exc:
            message = exc.response.get("Error", {}).get("Message", "")
            raise AWSError(service, operation, _code(exc), message) from None
        except BotoCoreError as exc:
            raise PhoenixError(f"AWS {service} {operation}: {exc}") from None

    def pages(self, service: str, operation: str, key: str, **kwargs) -> list:
        from botocore.exceptions import ClientError

        try:
            paginator = self.client(service).get_paginator(operation)
            return [item for page in paginator.paginate(**kwargs) for item in page.get(key, [])]
        except ClientError as exc:
            raise AWSError(service, operation, _code(exc), exc.response.get("Error", {}).get("Message", "")) from None

    # --- the default VPC, shared by both drivers ----------------------------------------------
    def network(self, subnets: list[str] | None) -> tuple[str, str, list[dict]]:
        """(vpc id, its CIDR, subnets): the named subnets, or the default VPC's."""
        if subnets:
            found = self.call("ec2", "describe_subnets", SubnetIds=subnets)["Subnets"]
            vpc_id = found[0]["VpcId"]
        else:
            vpcs = self.call("ec2", "describe_vpcs", Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
            if not vpcs:
                raise PhoenixError(f"region {self.region} has no default VPC; name subnets in placement.subnets")
            vpc_id = vpcs[0]["VpcId"]
            found = self.pages(
                "ec2", "describe_subnets", "Subnets",
                Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "default-for-az", "Values": ["true"]}],
            )
        vpc = self.call("ec2", "describe_vpcs", VpcIds=[vpc_id])["Vpcs"][0]
        return vpc_id, vpc["CidrBlock"], sorted(found, key=lambda s: (s["AvailabilityZone"], s["SubnetId"]))

    def ensure_group(self, tags: dict[str, str], name: str, vpc_id: str, ports: list[int], source: str) -> str:
        """A security group Phoenix owns (found by its tags, else created) letting `source`
        reach `ports`."""
        filters = [{"Name": f"tag:{k}", "Values": [v]} for k, v in tags.items()] + [{"Name": "vpc-id", "Values": [vpc_id]}]
        with self._lock_for(name):  # servers of a role launch side by side: one creates the group
            existing = self.pages("ec2", "describe_security_groups", "SecurityGroups", Filters=filters)
            if existing:
                return existing[0]["GroupId"]
            try:
                group = self.call(
                    "ec2", "create_security_group", GroupName=name, Description=f"Phoenix: {name}", VpcId=vpc_id,
                    TagSpecifications=[{"ResourceType": "security-group", "Tags": aws_tags({**tags, "Name": name})}],
                )["GroupId"]
            except AWSError as exc:
                if exc.code != "InvalidGroup.Duplicate":  # another command made it meanwhile
                    raise
                return self.pages("ec2", "describe_security_groups", "SecurityGroups", Filters=[
                    {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}])[0]["GroupId"]
        self.call(
            "ec2", "authorize_security_group_ingress", GroupId=group,
            IpPermissions=[{"IpProtocol": "tcp", "FromPort": p, "ToPort": p, "IpRanges": [{"CidrIp": source}]} for p in ports],
        )
        return group

    def delete_group(self, group_id: str, deadline: Deadline) -> None:
        """Delete a security group; network interfaces of terminated instances and deleted
        balancers linger a while, so "still in use" is retried until the deadline."""

        def deleted() -> bool:
            try:
                self.call("ec2", "delete_security_group", GroupId=group_id)
            except AWSError as exc:
                if exc.code == "InvalidGroup.NotFound":
                    return True
                if exc.code == "DependencyViolation":
                    return False
                raise
            return True

        deadline.poll(deleted, interval=1.0, max_interval=5.0)


class AWSError(PhoenixError):
    def __init__(self, service: str, operation: str, code: str, message: str):
        self.code = code
        super().__init__(f"AWS {service} {operation}: {code}: {message}".rstrip(": "))


def _short_name(*parts: str, limit: int = 32) -> str:
    """Names AWS limits to 32 characters (balancers, target groups): readable, then a hash."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:6]
    readable = "-".join(parts[-2:])[: limit - 10].strip("-")
    return f"px-{readable}-{digest}"


# --- compute ----------------------------------------------------------------------------------------


class AWSCompute(ComputeDriver):
    """Images are AMIs; servers are EC2 instances launched with the rendered user-data."""

    name = "aws"
    capabilities = frozenset({"image_refs"})

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        super().__init__(workdir, project, settings)
        self.aws = AWS.of(self.settings)
        self._lock = threading.Lock()
        self._placed: dict[str, int] = {}  # launches per subnet by this process, not yet visible in listings
        self._states: dict[str, tuple[float, str]] = {}  # instance id -> (when read, state)
        self._refs: dict[str, str] = {}  # image reference -> AMI id (resolved once per command)

    @property
    def reaches_servers(self) -> bool:
        return self.settings.server_checks and not self.aws.emulator

    def _tags(self, **extra: str) -> dict[str, str]:
        return {f"{TAG}project": self.project, **{f"{TAG}{k}": v for k, v in extra.items()}}

    # --- images -----------------------------------------------------------------------------
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
        import json

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
        return f"img-{name}-{recipe_digest(recipe, project_dir)[:16]}"

    def _baked(self, image_id: str) -> dict | None:
        images = self.aws.pages(
            "ec2", "describe_images", "Images", Owners=["self"],
            Filters=[{"Name": f"tag:{TAG}image", "Values": [image_id]}, {"Name": f"tag:{TAG}project", "Values": [self.project]}],
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

    def bake(self, name: str, recipe: ImageSpec, project_dir: Path, deadline: Deadline) -> BakeResult:
        started = time.monotonic()
        image_id = self.image_id(name, recipe, project_dir)
        if recipe.prebuilt:
            if not self.image_available(image_id, image_id):
                raise PhoenixError(f"image {name}: {recipe.prebuilt.describe()} ({image_id}) is not available in {self.aws.region}")
            return BakeResult(image_id, image_id, cached=True, seconds=time.monotonic() - started)
        existing = self._baked(image_id)
        if existing is not None:
            if existing["State"] == "pending":  # an interrupted bake left it finishing
                self.aws.wait("ec2", "image_available", deadline, delay=15, ImageIds=[existing["ImageId"]])
            return BakeResult(image_id, existing["ImageId"], cached=True, seconds=time.monotonic() - started)
        if recipe.base is None:
            raise PhoenixError(f"image {name}: provider aws bakes from a base image; give images.{name}.base (or prebuilt)")
        base = self.resolve(recipe.base, project_dir)
        userdata = builder_userdata(name, recipe, project_dir)
        _, _, subnets = self.aws.network(None)
        builder = self.aws.call(
            "ec2", "run_instances", ImageId=base, InstanceType=self.settings.instance_type, MinCount=1, MaxCount=1,
            UserData=userdata, SubnetId=subnets[0]["SubnetId"], InstanceInitiatedShutdownBehavior="stop",
            TagSpecifications=[{"ResourceType": "instance", "Tags": aws_tags({**self._tags(builder=image_id), "Name": f"phoenix-bake-{image_id}"})}],
        )["Instances"][0]["InstanceId"]
        ami = None
        try:
            self._wait_builder(name, builder, deadline)
            ami = self.aws.call(
                "ec2", "create_image", InstanceId=builder, Name=f"phoenix-{self.project}-{image_id}",
                Description=f"Phoenix image {name} of project {self.project}",
                TagSpecifications=[{"ResourceType": "image", "Tags": aws_tags({**self._tags(image=image_id), "Name": image_id})}],
            )["ImageId"]
            self.aws.wait("ec2", "image_available", deadline, delay=15, ImageIds=[ami])
            self._tag_snapshots(ami, self._tags(image=image_id))
        except BaseException:
            if ami:
                self._forget_image(ami)
            raise
        finally:
            self.aws.call("ec2", "terminate_instances", InstanceIds=[builder])
        return BakeResult(image_id, ami, cached=False, seconds=time.monotonic() - started)

    def _wait_builder(self, name: str, builder: str, deadline: Deadline) -> None:
        """The builder runs the recipe from its user-data and powers itself off; its console
        says whether the steps succeeded."""
        if self.aws.emulator:  # nothing runs there: stop it ourselves, as a finished builder would be
            self.aws.wait("ec2", "instance_running", deadline, InstanceIds=[builder])
            self.aws.call("ec2", "stop_instances", InstanceIds=[builder])
            self.aws.wait("ec2", "instance_stopped", deadline, InstanceIds=[builder])
            return
        self.aws.wait("ec2", "instance_stopped", deadline, delay=10, InstanceIds=[builder])

        def verdict() -> str:
            output = self.aws.call("ec2", "get_console_output", InstanceId=builder, Latest=True).get("Output", "")
            if output and not output.lstrip().startswith(BAKE_MARKER):
                try:
                    output = base64.b64decode(output).decode(errors="replace")
                except ValueError:
                    pass
            return next((line for line in output.splitlines() if BAKE_MARKER in line), "")

        try:
            line = Deadline(min(120, max(deadline.remaining(), 1)), f"the console of builder {builder}").poll(verdict, interval=5)
        except DeadlineExceeded:
            raise PhoenixError(f"bake of image {name}: builder {builder} stopped without reporting its steps' outcome") from None
        if "ok" not in line.split(BAKE_MARKER, 1)[1]:
            raise PhoenixError(f"bake of image {name}: {line.split(BAKE_MARKER, 1)[1].strip()}")

    def _tag_snapshots(self, ami: str, tags: dict[str, str]) -> None:
        """The image's snapshots carry its tags too (tagged here: not every API tags them at creation)."""
        image = self.aws.call("ec2", "describe_images", ImageIds=[ami])["Images"][0]
        snapshots = [m["Ebs"]["SnapshotId"] for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")]
        if snapshots:
            self.aws.call("ec2", "create_tags", Resources=snapshots, Tags=aws_tags(tags))

    def _forget_image(self, ami: str) -> None:
        try:
            self.aws.call("ec2", "deregister_image", ImageId=ami)
        except AWSError:
            pass

    # --- servers ------------------------------------------------------------------------------
    def launch(self, request: LaunchRequest, reserve_address) -> Launched:
        placement = request.placement
        vpc_id, cidr, subnets = self.aws.network(placement.subnets)
        subnet = self._spread(request.env, request.role, subnets)
        groups = placement.security_groups or [
            self.aws.ensure_group(
                self._tags(env=request.env, role=request.role, part="servers"), f"phoenix-{self.project}-{request.env}-{request.role}",
                vpc_id, [p for p in (request.port, request.tls_port) if p], cidr,
            )
        ]
        tags = self._tags(env=request.env, role=request.role, server=request.server_id, **request.tags)
        instance = self.aws.call(
            "ec2", "run_instances", ImageId=request.image_location, InstanceType=placement.instance_type,
            MinCount=1, MaxCount=1, UserData=with_start(request.userdata, request.command), SubnetId=subnet["SubnetId"],
            SecurityGroupIds=groups, ClientToken=f"{self.project}-{request.server_id}"[:64],
            MetadataOptions={"HttpTokens": "required"},
            TagSpecifications=[
                {"ResourceType": "instance", "Tags": aws_tags({**tags, "Name": f"{self.project}-{request.env}-{request.server_id}"})},
                {"ResourceType": "volume", "Tags": aws_tags(tags)},
            ],
        )["Instances"][0]
        handle = {"instance_id": instance["InstanceId"], "zone": subnet["AvailabilityZone"], "launched": time.time()}
        return Launched(address=instance.get("PrivateIpAddress", ""), port=request.port, handle=handle)

    def _spread(self, env: str, role: str, subnets: list[dict]) -> dict:
        """The subnet with the fewest of the role's servers: spread across availability zones."""
        running = self._instances(env, role)
        with self._lock:
            counts = {s["SubnetId"]: self._placed.get(s["SubnetId"], 0) for s in subnets}
            for instance in running:
                if instance.get("SubnetId") in counts:
                    counts[instance["SubnetId"]] += 1
            chosen = min(subnets, key=lambda s: (counts[s["SubnetId"]], s["AvailabilityZone"]))
            self._placed[chosen["SubnetId"]] = self._placed.get(chosen["SubnetId"], 0) + 1
        return chosen

    def _instances(self, env: str, role: str | None = None) -> list[dict]:
        filters = [
            {"Name": f"tag:{TAG}project", "Values": [self.project]},
            {"Name": f"tag:{TAG}env", "Values": [env]},
            {"Name": "instance-state-name", "Values": LIVE_STATES},
        ]
        if role:
            filters.append({"Name": f"tag:{TAG}role", "Values": [role]})
        reservations = self.aws.pages("ec2", "describe_instances", "Reservations", Filters=filters)
        return [i for r in reservations for i in r["Instances"]]

    def _state(self, handle: dict, fresh: bool = False) -> str:
        instance_id = handle.get("instance_id")
        if not instance_id:
            return "unknown"
        cached = self._states.get(instance_id)
        if cached and not fresh and time.monotonic() - cached[0] < 1.0:
            return cached[1]
        try:
            reservations = self.aws.call("ec2", "describe_instances", InstanceIds=[instance_id])["Reservations"]
            state = reservations[0]["Instances"][0]["State"]["Name"] if reservations else "gone"
        except AWSError as exc:
            if exc.code not in NOT_FOUND:
                raise
            # Eventual consistency: a new instance may not be listed yet.
            state = "pending" if time.time() - handle.get("launched", 0) < EVENTUAL_GRACE else "gone"
        self._states[instance_id] = (time.monotonic(), state)
        return state

    def is_alive(self, handle: dict) -> bool:
        return self._state(handle) in ("pending", "running")

    def listening(self, handle: dict, address: str, port: int) -> bool:
        if self.reaches_servers:
            return super().listening(handle, address, port)
        return self._state(handle, fresh=True) == "running"  # the balancer's own check comes next

    def health(self, handle: dict, address: str, port: int, path: str, timeout: float) -> str:
        if self.reaches_servers:
            return super().health(handle, address, port, path, timeout)
        return ""  # not reachable from here: the balancer's health check is the gate

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        instance_id = handle.get("instance_id")
        if not instance_id:
            return
        try:
            self.aws.call("ec2", "terminate_instances", InstanceIds=[instance_id])
        except AWSError as exc:
            if exc.code in NOT_FOUND:
                return
            raise
        self.aws.wait("ec2", "instance_terminated", deadline, delay=5, InstanceIds=[instance_id])
        self._states.pop(instance_id, None)

    def terminate(self, handle: dict) -> None:
        self.aws.call("ec2", "terminate_instances", InstanceIds=[handle["instance_id"]])
        self._states.pop(handle["instance_id"], None)

    def discover(self, env: str) -> dict[str, dict]:
        found = {}
        for instance in self._instances(env):
            tags = tag_map(instance.get("Tags"))
            server_id = tags.get(f"{TAG}server")
            if server_id:
                found[server_id] = {"instance_id": instance["InstanceId"], "zone": instance["Placement"]["AvailabilityZone"], "launched": 0}
        return found

    def teardown(self, env: str, deadline: Deadline) -> list[str]:
        groups = self.aws.pages(
            "ec2", "describe_security_groups", "SecurityGroups",
            Filters=[
                {"Name": f"tag:{TAG}project", "Values": [self.project]},
                {"Name": f"tag:{TAG}env", "Values": [env]},
                {"Name": f"tag:{TAG}part", "Values": ["servers"]},
            ],
        )
        for group in groups:
            self.aws.delete_group(group["GroupId"], deadline)
        return [f"security group {g['GroupId']} ({g['GroupName']})" for g in groups]

    def describe(self, handle: dict) -> dict:
        return {"instance": handle.get("instance_id"), "zone": handle.get("zone")}

    def label(self, handle: dict) -> str:
        return f"instance {handle.get('instance_id')}"

    # --- doctor -------------------------------------------------------------------------------
    def capability_report(self, probe: bool, deadline: Deadline) -> list[dict]:
        report: list[dict] = []
        check = checker(report)
        check("account", lambda: f"account {self.aws.call('sts', 'get_caller_identity')['Account']}, region {self.aws.region}"
              + (" (an emulator: its servers run nothing)" if self.aws.emulator else ""))
        check("network", lambda: "default VPC {} with subnets in {} zones".format(
            (n := self.aws.network(None))[0], len({s["AvailabilityZone"] for s in n[2]})))
        check("images", lambda: f"{len(self.aws.pages('ec2', 'describe_images', 'Images', Owners=['self']))} own AMIs; create_image by `bake`")
        check("user-data", lambda: f"cloud-init user-data up to {USERDATA_LIMIT} bytes (gzipped when larger)")
        if probe:
            report += self._probe(deadline)
        return report

    def _probe(self, deadline: Deadline) -> list[dict]:
        """Time what decides how fast a change reaches users: launching a server, making an image."""
        base = self.resolve(ImageRef(name="al2023-ami-2023.*-x86_64", owners=["amazon"]), Path("."))
        _, _, subnets = self.aws.network(None)
        started = time.monotonic()
        instance = self.aws.call(
            "ec2", "run_instances", ImageId=base, InstanceType=self.settings.instance_type, MinCount=1, MaxCount=1,
            SubnetId=subnets[0]["SubnetId"],
            TagSpecifications=[{"ResourceType": "instance", "Tags": aws_tags({**self._tags(probe="doctor"), "Name": "phoenix-doctor"})}],
        )["Instances"][0]["InstanceId"]
        results = []
        ami = None
        try:
            self.aws.wait("ec2", "instance_running", deadline, delay=2, InstanceIds=[instance])
            results.append({"capability": "probe: launch", "ok": True, "detail": "an instance from launch to running", "seconds": round(time.monotonic() - started, 3)})
            started = time.monotonic()
            ami = self.aws.call("ec2", "create_image", InstanceId=instance, Name=f"phoenix-doctor-{int(time.time())}",
                                TagSpecifications=[{"ResourceType": "image", "Tags": aws_tags(self._tags(probe="doctor"))}])["ImageId"]
            self.aws.wait("ec2", "image_available", deadline, delay=10, ImageIds=[ami])
            results.append({"capability": "probe: image", "ok": True, "detail": "create_image until available", "seconds": round(time.monotonic() - started, 3)})
        finally:
            if ami:
                self._forget_image(ami)
            self.aws.call("ec2", "terminate_instances", InstanceIds=[instance])
        return results


def checker(report: list[dict]):
    """`check(name, action)`: run one capability check into the report; an error is a row, not a failure."""

    def check(name: str, action) -> None:
        try:
            report.append({"capability": name, "ok": True, "detail": action()})
        except PhoenixError as exc:
            report.append({"capability": name, "ok": False, "detail": str(exc)})

    return check


def builder_userdata(name: str, recipe: ImageSpec, project_dir: Path) -> bytes:
    """The builder's user-data: the image's files (a gzipped tar), its steps run in the
    server root, the boot-time start service, a marker on the console, then power off."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz", compresslevel=9) as tar:
        for entry in recipe.files:
            for path in walk_files(project_dir / entry):
                tar.add(path, arcname=str(path.relative_to(project_dir)), recursive=False)
    steps = "\n".join(recipe.steps)
    script = f"""#!/bin/bash
# Phoenix image builder for {name}: unpack, run the steps, report on the console, power off.
set -euo pipefail
trap 'echo "{BAKE_MARKER} failed at line $LINENO (exit $?)" > /dev/console; poweroff' ERR
mkdir -p {SERVER_ROOT}
base64 -d /var/lib/phoenix/image.tgz.b64 | tar -xz -C {SERVER_ROOT}
rm -f /var/lib/phoenix/image.tgz.b64
cd {SERVER_ROOT}
{steps}
cloud-init clean --logs   # servers made from this image boot as new instances
echo "{BAKE_MARKER} ok" > /dev/console
poweroff
"""
    cloud_config = (
        "#cloud-config\nwrite_files:\n- path: /var/lib/phoenix/image.tgz.b64\n  permissions: '0600'\n  content: "
        + base64.b64encode(archive.getvalue()).decode()
        + "\n"
    )
    document = _multipart([("cloud-config", "image.yaml", cloud_config), ("x-shellscript", "bake.sh", script)])
    packed = gzip.compress(document, mtime=0)
    if len(packed) > USERDATA_LIMIT:
        raise PhoenixError(
            f"image {name}: its files make a {len(packed)}-byte builder user-data (gzipped), over EC2's {USERDATA_LIMIT}; "
            "bake it with Packer and reference it with images.{name}.prebuilt"
        )
    return packed


def with_start(userdata: bytes, command: str) -> bytes:
    """The rendered user-data plus a last part that starts the server as a service with its
    boot variables (the part a local server gets from the local provider itself)."""
    raw = gzip.decompress(userdata) if userdata[:2] == b"\x1f\x8b" else userdata
    message = message_from_bytes(raw)
    start = (
        "#!/bin/sh\n# Phoenix: start the server with its boot variables, restarted if it exits.\n"
        f"exec systemd-run --unit=phoenix-server --property=Restart=on-failure --working-directory={SERVER_ROOT} "
        f"--property=EnvironmentFile={SERVER_ROOT}/{ENV_FILE} /bin/sh -c {shlex.quote(command)}\n"
    )
    part = MIMEText(start, "x-shellscript", "us-ascii")
    part.add_header("Content-Disposition", "attachment", filename="phoenix-start.sh")
    message.attach(part)
    document = message.as_bytes()
    if len(document) > USERDATA_LIMIT:
        document = gzip.compress(document, mtime=0)
        if len(document) > USERDATA_LIMIT:
            raise PhoenixError(f"user-data with the start part is {len(document)} bytes gzipped, over EC2's {USERDATA_LIMIT}")
    return document


def _multipart(parts: list[tuple[str, str, str]]) -> bytes:
    from email.mime.multipart import MIMEMultipart

    message = MIMEMultipart(boundary="==phoenix-builder==")
    for subtype, filename, text in parts:
        part = MIMEText(text, subtype, "utf-8" if not text.isascii() else "us-ascii")
        part.add_header("Content-Disposition", "attachment", filename=filename)
        message.attach(part)
    return message.as_bytes()


# --- service discovery ------------------------------------------------------------------------------

TARGET_STATES = {"healthy": "UP", "initial": "DOWN (initial)", "unhealthy": "DOWN", "draining": "DRAIN", "unused": "MAINT", "unavailable": "DOWN"}


class AWSLoadBalancers(LoadBalancerDriver):
    """Per role: an ELBv2 load balancer with a target group per port (application; network
    when the role passes TLS through), or an Elastic IP; optionally a Route 53 record."""

    name = "aws"
    assigns_addresses = True
    capabilities = frozenset({"floating_ip", "dns"})

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        super().__init__(workdir, project, settings)
        self.aws = AWS.of(self.settings)
        self._instance_of: dict[str, str] = {}  # server id -> instance id
        self._server_of: dict[str, str] = {}  # instance id -> server id

    def _tags(self, env: str, role: str, part: str) -> dict[str, str]:
        return {f"{TAG}project": self.project, f"{TAG}env": env, f"{TAG}role": role, f"{TAG}part": part}

    # --- creating ---------------------------------------------------------------------------
    def create(self, request: BalancerRequest) -> Endpoint:
        handle: dict = {"kind": request.kind, "env": request.env, "role": request.role}
        try:
            return self._create(request, handle)
        except BaseException:
            # Nothing half-made stays behind: remove what this call created, then fail.
            try:
                self.destroy(handle, Deadline(300, f"removal of the half-made {request.role} balancer"))
            except PhoenixError:
                pass  # `destroy` of the environment finds the rest by its tags
            raise

    def _create(self, request: BalancerRequest, handle: dict) -> Endpoint:
        if request.kind == "floating_ip":
            address = self.aws.call(
                "ec2", "allocate_address", Domain="vpc",
                TagSpecifications=[{"ResourceType": "elastic-ip", "Tags": aws_tags(self._tags(request.env, request.role, "floating-ip"))}],
            )
            handle.update(allocation_id=address["AllocationId"], public_ip=address["PublicIp"])
            endpoint = Endpoint(address["PublicIp"], request.port, handle)
            target = {"Type": "A", "TTL": 60, "ResourceRecords": [{"Value": address["PublicIp"]}]}
        else:
            endpoint = self._create_balancer(request, handle)
            target = {"Type": "A", "AliasTarget": {"HostedZoneId": handle["zone_id"], "DNSName": handle["dns"], "EvaluateTargetHealth": False}}
        if request.dns_name:
            handle["record"] = self._upsert_record(request.dns_name, target)
        return endpoint

    def _create_balancer(self, request: BalancerRequest, handle: dict) -> Endpoint:
        vpc_id, cidr, subnets = self.aws.network(request.placement.subnets)
        ports = [p for p in (request.port, request.tls_port) if p]
        name = _short_name(self.project, request.env, request.role)
        tags = self._tags(request.env, request.role, "balancer")
        groups = request.placement.security_groups or [
            self.aws.ensure_group(tags, f"phoenix-{self.project}-{request.env}-{request.role}-lb", vpc_id, ports,
                                  "0.0.0.0/0" if request.public else cidr)
        ]
        if not request.placement.security_groups:
            handle["security_group"] = groups[0]
        kind = "network" if request.tls_port else "application"  # TLS passes through only a network balancer
        zones = {}
        for subnet in subnets:  # one subnet per zone
            zones.setdefault(subnet["AvailabilityZone"], subnet["SubnetId"])
        balancer = self.aws.call(
            "elbv2", "create_load_balancer", Name=name, Subnets=list(zones.values()), SecurityGroups=groups,
            Scheme="internet-facing" if request.public else "internal", Type=kind, Tags=aws_tags(tags),
        )["LoadBalancers"][0]  # idempotent: the same name and settings return the existing one
        handle.update(arn=balancer["LoadBalancerArn"], dns=balancer["DNSName"], zone_id=balancer["CanonicalHostedZoneId"], target_groups=[],
                      tls_port=request.tls_port)
        protocol = "TCP" if kind == "network" else "HTTP"
        for port in ports:
            group = self.aws.call(
                "elbv2", "create_target_group", Name=_short_name(self.project, request.env, f"{request.role}-{port}"),
                Protocol=protocol, Port=port, VpcId=vpc_id, TargetType="instance",
                HealthCheckProtocol="HTTP", HealthCheckPort=str(request.port), HealthCheckPath=request.health_path,
                HealthCheckIntervalSeconds=10, HealthCheckTimeoutSeconds=5, HealthyThresholdCount=2, UnhealthyThresholdCount=2,
                Tags=aws_tags(self._tags(request.env, request.role, "target-group")),
            )["TargetGroups"][0]["TargetGroupArn"]
            handle["target_groups"].append([group, port])
            # The balancer always ends a drain before Phoenix's drain deadline does.
            delay = max(0, int(request.drain_seconds * 0.8))
            self.aws.call("elbv2", "modify_target_group_attributes", TargetGroupArn=group,
                          Attributes=[{"Key": "deregistration_delay.timeout_seconds", "Value": str(delay)}])
            listeners = self.aws.pages("elbv2", "describe_listeners", "Listeners", LoadBalancerArn=handle["arn"])
            if not any(listener["Port"] == port for listener in listeners):
                self.aws.call("elbv2", "create_listener", LoadBalancerArn=handle["arn"], Protocol=protocol, Port=port,
                              DefaultActions=[{"Type": "forward", "TargetGroupArn": group}])
        self.aws.wait("elbv2", "load_balancer_available", Deadline(600, f"load balancer {name} to be active"), delay=10,
                      LoadBalancerArns=[handle["arn"]])
        return Endpoint(balancer["DNSName"], request.port, handle)

    def _upsert_record(self, name: str, target: dict) -> dict:
        zone_name = name.split(".", 1)[1] + "."
        zones = self.aws.call("route53", "list_hosted_zones_by_name", DNSName=zone_name, MaxItems="1")["HostedZones"]
        if not zones or zones[0]["Name"] != zone_name:
            raise PhoenixError(f"DNS zone {zone_name.rstrip('.')} is not a Route 53 hosted zone of this account (Phoenix never creates zones)")
        record = {"Name": name + ".", **target}
        self.aws.call("route53", "change_resource_record_sets", HostedZoneId=zones[0]["Id"],
                      ChangeBatch={"Comment": "phoenix", "Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]})
        return {"zone": zones[0]["Id"], "set": record}

    # --- members ------------------------------------------------------------------------------
    def _instance(self, server_id: str) -> str:
        if server_id not in self._instance_of:
            reservations = self.aws.pages(
                "ec2", "describe_instances", "Reservations",
                Filters=[{"Name": f"tag:{TAG}server", "Values": [server_id]}, {"Name": f"tag:{TAG}project", "Values": [self.project]},
                         {"Name": "instance-state-name", "Values": LIVE_STATES}],
            )
            instances = [i for r in reservations for i in r["Instances"]]
            if not instances:
                raise PhoenixError(f"no instance is tagged {TAG}server={server_id}")
            self._remember(server_id, instances[0]["InstanceId"])
        return self._instance_of[server_id]

    def _remember(self, server_id: str, instance_id: str) -> None:
        self._instance_of[server_id], self._server_of[instance_id] = instance_id, server_id

    def _servers(self, instance_ids: list[str]) -> dict[str, str]:
        unknown = [i for i in instance_ids if i not in self._server_of]
        if unknown:
            for reservation in self.aws.pages("ec2", "describe_instances", "Reservations", InstanceIds=unknown):
                for instance in reservation["Instances"]:
                    server_id = tag_map(instance.get("Tags")).get(f"{TAG}server")
                    if server_id:
                        self._remember(server_id, instance["InstanceId"])
        return {i: self._server_of[i] for i in instance_ids if i in self._server_of}

    def add_member(self, handle: dict, name: str, address: str, port: int, tls_port: int | None = None, standby: bool = False) -> None:
        if standby:
            raise PhoenixError("provider aws keeps no standby members")
        instance = self._instance(name)
        if handle["kind"] == "floating_ip":
            self.aws.call("ec2", "associate_address", AllocationId=handle["allocation_id"], InstanceId=instance, AllowReassociation=True)
            return
        for group, group_port in handle["target_groups"]:
            self.aws.call("elbv2", "register_targets", TargetGroupArn=group, Targets=[{"Id": instance, "Port": group_port}])

    def members(self, handle: dict) -> dict[str, MemberState]:
        if handle["kind"] == "floating_ip":
            addresses = self.aws.call("ec2", "describe_addresses", AllocationIds=[handle["allocation_id"]])["Addresses"]
            holder = addresses[0].get("InstanceId") if addresses else None
            names = self._servers([holder]) if holder else {}
            return {names[holder]: MemberState("UP", True, 0)} if holder in names else {}
        group = handle["target_groups"][0][0]
        targets = self.aws.call("elbv2", "describe_target_health", TargetGroupArn=group)["TargetHealthDescriptions"]
        names = self._servers([t["Target"]["Id"] for t in targets])
        members = {}
        for target in targets:
            state = target["TargetHealth"]["State"]
            name = names.get(target["Target"]["Id"])
            if name:
                # A draining target may still have requests in flight; the balancer does not say how many.
                members[name] = MemberState(TARGET_STATES.get(state, state.upper()), state == "healthy", 1 if state == "draining" else 0)
        return members

    def drain_member(self, handle: dict, name: str) -> None:
        self._deregister(handle, name)

    def remove_member(self, handle: dict, name: str, deadline: Deadline) -> None:
        self._deregister(handle, name)
        if handle["kind"] != "floating_ip":
            try:
                deadline.poll(lambda: name not in self.members(handle), interval=0.5, max_interval=5)
            except DeadlineExceeded:
                pass  # still draining: terminating the instance ends what is left

    def _deregister(self, handle: dict, name: str) -> None:
        try:
            instance = self._instance(name)
        except PhoenixError:
            return  # no such instance any more: nothing to take out
        if handle["kind"] == "floating_ip":
            addresses = self.aws.call("ec2", "describe_addresses", AllocationIds=[handle["allocation_id"]])["Addresses"]
            if addresses and addresses[0].get("InstanceId") == instance and addresses[0].get("AssociationId"):
                self.aws.call("ec2", "disassociate_address", AssociationId=addresses[0]["AssociationId"])
            return
        for group, group_port in handle["target_groups"]:
            targets = self.aws.call("elbv2", "describe_target_health", TargetGroupArn=group)["TargetHealthDescriptions"]
            if not any(t["Target"]["Id"] == instance and t["TargetHealth"]["State"] != "draining" for t in targets):
                continue  # not registered, or already leaving: deregistering again is an error on some endpoints
            try:
                self.aws.call("elbv2", "deregister_targets", TargetGroupArn=group, Targets=[{"Id": instance, "Port": group_port}])
            except AWSError as exc:
                if exc.code != "InvalidTarget":  # gone meanwhile
                    raise

    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        raise PhoenixError("provider aws keeps no standby members to switch to")

    def counters(self, handle: dict) -> dict[str, MemberCounters]:
        raise PhoenixError("provider aws does not count requests per member")

    def capability_report(self) -> list[dict]:
        report: list[dict] = []
        check = checker(report)
        check("load balancer", lambda: f"ELBv2: {len(self.aws.pages('elbv2', 'describe_load_balancers', 'LoadBalancers'))} balancers")
        check("floating IP", lambda: f"Elastic IPs: {len(self.aws.call('ec2', 'describe_addresses')['Addresses'])} allocated")
        check("DNS", lambda: f"Route 53: {len(self.aws.pages('route53', 'list_hosted_zones', 'HostedZones'))} hosted zones")
        return report

    # --- existence and removal ------------------------------------------------------------------
    def is_alive(self, handle: dict) -> bool:
        try:
            if handle["kind"] == "floating_ip":
                return bool(self.aws.call("ec2", "describe_addresses", AllocationIds=[handle["allocation_id"]])["Addresses"])
            found = self.aws.call("elbv2", "describe_load_balancers", LoadBalancerArns=[handle["arn"]])["LoadBalancers"]
            return bool(found) and found[0]["State"]["Code"] in ("active", "provisioning")
        except AWSError as exc:
            if exc.code in NOT_FOUND or exc.code in ("LoadBalancerNotFound", "InvalidAddress.NotFound"):
                return False
            raise

    def destroy(self, handle: dict, deadline: Deadline) -> None:
        record = handle.get("record")
        if record:
            try:
                self.aws.call("route53", "change_resource_record_sets", HostedZoneId=record["zone"],
                              ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": record["set"]}]})
            except AWSError as exc:
                if exc.code != "InvalidChangeBatch":  # already gone
                    raise
        if handle["kind"] == "floating_ip":
            if handle.get("allocation_id"):
                self._release(handle["allocation_id"])
            return
        if handle.get("arn"):
            try:
                self.aws.call("elbv2", "delete_load_balancer", LoadBalancerArn=handle["arn"])
            except AWSError as exc:
                if exc.code != "LoadBalancerNotFound":
                    raise
            self.aws.wait("elbv2", "load_balancers_deleted", deadline, delay=10, LoadBalancerArns=[handle["arn"]])
        for group, _ in handle.get("target_groups", []):
            self._delete_target_group(group, deadline)
        if handle.get("security_group"):
            self.aws.delete_group(handle["security_group"], deadline)

    def _release(self, allocation_id: str) -> None:
        try:
            addresses = self.aws.call("ec2", "describe_addresses", AllocationIds=[allocation_id])["Addresses"]
        except AWSError as exc:
            if exc.code in NOT_FOUND or exc.code == "InvalidAddress.NotFound":
                return
            raise
        if addresses and addresses[0].get("AssociationId"):
            self.aws.call("ec2", "disassociate_address", AssociationId=addresses[0]["AssociationId"])
        self.aws.call("ec2", "release_address", AllocationId=allocation_id)

    def _delete_target_group(self, group: str, deadline: Deadline) -> None:
        def deleted() -> bool:
            try:
                self.aws.call("elbv2", "delete_target_group", TargetGroupArn=group)
            except AWSError as exc:
                if exc.code == "TargetGroupNotFound":
                    return True
                if exc.code == "ResourceInUse":  # its listener goes with the balancer, eventually
                    return False
                raise
            return True

        deadline.poll(deleted, interval=1.0, max_interval=5.0)

    def discover(self, env: str) -> dict[str, dict]:
        """Balancers, target groups, Elastic IPs and balancer security groups tagged for the
        environment, grouped by role into handles `destroy` understands."""
        found: dict[str, dict] = {}

        def entry(role: str, kind: str) -> dict:
            return found.setdefault(role, {"kind": kind, "env": env, "role": role, "target_groups": []})

        mine = lambda tags: tags.get(f"{TAG}project") == self.project and tags.get(f"{TAG}env") == env  # noqa: E731
        balancers = self.aws.pages("elbv2", "describe_load_balancers", "LoadBalancers")
        groups = self.aws.pages("elbv2", "describe_target_groups", "TargetGroups")
        arns = [b["LoadBalancerArn"] for b in balancers] + [g["TargetGroupArn"] for g in groups]
        for start in range(0, len(arns), 20):  # describe_tags takes 20 resources at a time
            for description in self.aws.call("elbv2", "describe_tags", ResourceArns=arns[start : start + 20])["TagDescriptions"]:
                tags = tag_map(description.get("Tags"))
                if not mine(tags):
                    continue
                arn, role = description["ResourceArn"], tags.get(f"{TAG}role", "?")
                if ":loadbalancer/" in arn:
                    entry(role, "load_balancer")["arn"] = arn
                else:
                    entry(role, "load_balancer")["target_groups"].append([arn, 0])
        addresses = self.aws.call("ec2", "describe_addresses", Filters=[{"Name": f"tag:{TAG}project", "Values": [self.project]},
                                                                          {"Name": f"tag:{TAG}env", "Values": [env]}])["Addresses"]
        for address in addresses:
            role = tag_map(address.get("Tags")).get(f"{TAG}role", "?")
            found[f"{role} (floating IP {address['PublicIp']})"] = {"kind": "floating_ip", "env": env, "role": role,
                                                                    "allocation_id": address["AllocationId"]}
        security = self.aws.pages("ec2", "describe_security_groups", "SecurityGroups", Filters=[
            {"Name": f"tag:{TAG}project", "Values": [self.project]}, {"Name": f"tag:{TAG}env", "Values": [env]},
            {"Name": f"tag:{TAG}part", "Values": ["balancer"]}])
        for group in security:
            entry(tag_map(group.get("Tags")).get(f"{TAG}role", "?"), "load_balancer")["security_group"] = group["GroupId"]
        return found
