"""The AWS compute driver, through boto3: images as AMIs, servers as EC2 instances.

The AWS provider as a whole: AMIs, EC2 instances, ELBv2 target groups, Elastic IPs and
Route 53 records (the last three in `balancers.py`).

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

import threading
import time
from collections import Counter
from pathlib import Path

from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from ...excerpt import error_lines
from ...spec import ImageRef, ProviderSpec
from ...boot.userdata import USERDATA_LIMIT
from .api import AWS, LIVE_STATES, NOT_FOUND, TAG, AWSError, aws_tags, tag_filters, tag_map
from ..base import ComputeDriver, ImageSample, Launched, LaunchRequest, LogExcerpt, checker
from ..cloud_init import with_start
from .images import AWSImages

IMDS_V2_ONLY = {"HttpTokens": "required", "HttpEndpoint": "enabled"}  # session tokens for the metadata service
EVENTUAL_GRACE = 60.0  # seconds after a launch during which "not found" means "not visible yet"


class AWSCompute(AWSImages, ComputeDriver):
    """Images are AMIs; servers are EC2 instances launched with the rendered user-data."""

    name = "aws"
    capabilities = frozenset({"image_refs"})

    def __init__(self, workdir: Path, project: str, settings: ProviderSpec | None = None):
        super().__init__(workdir, project, settings)
        self.aws = AWS.of(self.settings)
        self._lock = threading.Lock()
        self._in_flight: Counter[str] = Counter()  # subnet -> launches whose run_instances has not answered yet
        self._unlisted: dict[str, tuple[str, float]] = {}  # instance -> (subnet, when): launched here, not listed yet
        self._states: dict[str, tuple[float, str]] = {}  # instance id -> (when read, state)
        self._refs: dict[str, str] = {}  # image reference -> AMI id (resolved once per command)

    @property
    def reaches_servers(self) -> bool:
        return self.settings.server_checks and not self.aws.emulator

    @property
    def poll_interval(self) -> float:
        return 0.05 if self.aws.emulator else 2.0

    def _tags(self, **extra: str) -> dict[str, str]:
        return {f"{TAG}project": self.project, **{f"{TAG}{k}": v for k, v in extra.items()}}

    def _run_instance(self, **kwargs) -> dict:
        """Launch one instance: every launch (builders, the doctor's probe, servers) goes
        through here, and every instance requires IMDSv2."""
        return self.aws.call("ec2", "run_instances", MinCount=1, MaxCount=1, MetadataOptions=IMDS_V2_ONLY, **kwargs)["Instances"][0]

    def _wait_state(self, handle: dict, wanted: set[str], deadline: Deadline, what: str) -> None:
        """Poll an instance until its state is one of `wanted`; a state it cannot come back
        from fails at once. (botocore's instance waiters fail on states a fresh instance
        passes through, such as `pending` while waiting for `stopped`.)"""
        final = {"terminated", "gone"} - wanted
        seen = ""

        def arrived() -> bool:
            nonlocal seen
            seen = self._state(handle, fresh=True)
            if seen in final or (seen == "shutting-down" and "terminated" not in wanted):
                raise PhoenixError(f"{what} is {seen}, waiting for it to be {' or '.join(sorted(wanted))}")
            return seen in wanted

        try:
            deadline.poll(arrived, interval=0.2 if self.aws.emulator else 2.0, max_interval=1.0 if self.aws.emulator else 10.0)
        except DeadlineExceeded:
            raise DeadlineExceeded(f"{what} still {seen} after {deadline.seconds:g}s (waiting for {' or '.join(sorted(wanted))})") from None

    # --- servers ------------------------------------------------------------------------------
    def launch(self, request: LaunchRequest) -> Launched:
        placement = request.placement
        vpc_id, cidr, subnets = self.aws.network(placement.subnets)
        groups = placement.security_groups or [self._server_group(request, vpc_id, cidr)]
        tags = self._tags(env=request.env, role=request.role, server=request.server_id, **request.tags)
        subnet = self._spread(request.env, request.role, subnets)
        instance = None
        try:
            instance = self._run_instance(
                ImageId=request.image_location, InstanceType=placement.instance_type,
                UserData=with_start(request.userdata, request.command, f"{request.server_id}@{request.tags.get('release', '')}"), SubnetId=subnet["SubnetId"],
                SecurityGroupIds=groups, ClientToken=f"{self.project}-{request.server_id}"[:64],
                TagSpecifications=[
                    {"ResourceType": "instance", "Tags": aws_tags({**tags, "Name": f"{self.project}-{request.env}-{request.server_id}"})},
                    {"ResourceType": "volume", "Tags": aws_tags(tags)},
                ],
            )
        finally:
            with self._lock:
                self._in_flight[subnet["SubnetId"]] -= 1
                if instance is not None:
                    self._unlisted[instance["InstanceId"]] = (subnet["SubnetId"], time.monotonic())
        handle = {"instance_id": instance["InstanceId"], "zone": subnet["AvailabilityZone"], "launched": time.time()}
        return Launched(address=instance.get("PrivateIpAddress", ""), port=request.port, handle=handle)

    def _server_group(self, request: LaunchRequest, vpc_id: str, cidr: str) -> str:
        """The role's security group: its ports open to the VPC (balancers and their health
        checks), to the role's balancer group (a network balancer keeps clients' addresses),
        and to everyone for a public floating IP."""
        discovery = request.discovery
        sources: list[dict] = [{"IpRanges": [{"CidrIp": cidr}]}]
        if discovery.type == "floating_ip" and discovery.public:
            sources.append({"IpRanges": [{"CidrIp": "0.0.0.0/0"}]})
        elif discovery.type == "load_balancer":
            balancer_groups = self.aws.pages("ec2", "describe_security_groups", "SecurityGroups",
                                             Filters=tag_filters(self._tags(env=request.env, role=request.role, part="balancer")))
            sources += [{"UserIdGroupPairs": [{"GroupId": g["GroupId"]}]} for g in balancer_groups]
        return self.aws.ensure_group(
            self._tags(env=request.env, role=request.role, part="servers"), f"phoenix-{self.project}-{request.env}-{request.role}",
            vpc_id, [p for p in (request.port, request.tls_port) if p], sources,
        )

    def _spread(self, env: str, role: str, subnets: list[dict]) -> dict:
        """The subnet with the fewest of the role's servers, counting those listed, those this
        command launched that listings do not show yet, and launches under way: servers are
        spread across availability zones even when they launch side by side."""
        listed = {i["InstanceId"]: i.get("SubnetId") for i in self._instances(env, role)}
        with self._lock:
            now = time.monotonic()
            for instance in [i for i, (_, when) in self._unlisted.items() if i in listed or now - when > EVENTUAL_GRACE]:
                del self._unlisted[instance]
            counts = Counter(listed.values()) + Counter(subnet for subnet, _ in self._unlisted.values()) + self._in_flight
            chosen = min(subnets, key=lambda s: (counts[s["SubnetId"]], s["AvailabilityZone"]))
            self._in_flight[chosen["SubnetId"]] += 1
        return chosen

    def _instances(self, env: str, role: str | None = None) -> list[dict]:
        tags = self._tags(env=env, **({"role": role} if role else {}))
        filters = tag_filters(tags) + [{"Name": "instance-state-name", "Values": LIVE_STATES}]
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
        self._wait_state(handle, {"terminated", "gone"}, deadline, f"instance {instance_id}")
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
        groups = self.aws.pages("ec2", "describe_security_groups", "SecurityGroups", Filters=tag_filters(self._tags(env=env, part="servers")))
        for group in groups:
            self.aws.delete_group(group["GroupId"], deadline)
        return [f"security group {g['GroupId']} ({g['GroupName']})" for g in groups]

    def describe(self, handle: dict) -> dict:
        return {"instance": handle.get("instance_id"), "zone": handle.get("zone")}

    def label(self, handle: dict) -> str:
        return f"instance {handle.get('instance_id')}"

    def log_excerpt(self, handle: dict) -> LogExcerpt | None:
        """The instance's console output (cloud-init and its boot commands; it can lag by
        minutes); the server's own output is in the instance's journal. An emulator's
        console is a canned text: nothing is quoted from it."""
        instance_id = handle.get("instance_id")
        if not instance_id:
            return None
        source = f"the console output of instance {instance_id} (the server's own output: journalctl -u phoenix-server on it)"
        if self.aws.emulator:
            return LogExcerpt(source)
        try:
            output = self.aws.call("ec2", "get_console_output", InstanceId=instance_id, Latest=True).get("Output", "")  # decoded by botocore
        except PhoenixError:
            output = ""  # not available (yet): the pointer still helps
        return LogExcerpt(source, tuple(error_lines(output)))

    # --- doctor -------------------------------------------------------------------------------
    def capability_report(self, probe: bool, deadline: Deadline, sample: ImageSample | None = None) -> list[dict]:
        report: list[dict] = []
        check = checker(report)
        check("account", lambda: f"account {self.aws.call('sts', 'get_caller_identity')['Account']}, region {self.aws.region}"
              + (" (an emulator: its servers run nothing)" if self.aws.emulator else ""))
        check("network", lambda: "default VPC {} with subnets in {} zones".format(
            (n := self.aws.network(None))[0], len({s["AvailabilityZone"] for s in n[2]})))
        check("images", lambda: f"{len(self.aws.pages('ec2', 'describe_images', 'Images', Owners=['self']))} own AMIs; create_image by `bake`")
        check("user-data", lambda: f"cloud-init user-data up to {USERDATA_LIMIT} bytes (gzipped when larger)")
        if probe:
            report += self._probe(deadline, sample)
        return report

    def _probe(self, deadline: Deadline, sample: ImageSample | None) -> list[dict]:
        """Time what decides how fast a change reaches users: launching a server (from the
        spec's first image's base, else Amazon Linux) and making an image of it."""
        ref = sample and (sample.recipe.base or sample.recipe.prebuilt)
        base = self.resolve(ref or ImageRef(name="al2023-ami-2023.*-x86_64", owners=["amazon"]), sample.project_dir if sample else Path("."))
        _, _, subnets = self.aws.network(None)
        started = time.monotonic()
        instance = self._run_instance(
            ImageId=base, InstanceType=self.settings.instance_type, SubnetId=subnets[0]["SubnetId"],
            TagSpecifications=[{"ResourceType": "instance", "Tags": aws_tags({**self._tags(probe="doctor"), "Name": "phoenix-doctor"})}],
        )["InstanceId"]
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
