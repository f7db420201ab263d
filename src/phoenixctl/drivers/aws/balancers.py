"""Ways in to a role on AWS: an ELBv2 load balancer or an Elastic IP, and a Route 53 record.

An ELBv2 load balancer with a target group per port, or an Elastic IP; optionally a
Route 53 record on either."""

from __future__ import annotations

from pathlib import Path

from ...deadline import Deadline
from ...errors import PhoenixError
from ...spec import ProviderSpec
from .api import AWS, NOT_FOUND, TAG, AWSError, aws_tags, short_name, tag_filters, tag_map
from .targets import AWSTargets
from ..base import BalancerRequest, Endpoint, LoadBalancerDriver, checker



class AWSLoadBalancers(AWSTargets, LoadBalancerDriver):
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
        self._previous_holder: dict[str, str] = {}  # allocation id -> the instance a floating IP moved from

    @property
    def poll_interval(self) -> float:
        return 0.05 if self.aws.emulator else 2.0  # target health changes every health-check interval (10 s)

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
        zone = self._zone(request.dns_name) if request.dns_name else None  # before anything is made
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
        if zone:
            handle["record"] = self._upsert_record(zone, request.dns_name, target)
        return endpoint

    def _create_balancer(self, request: BalancerRequest, handle: dict) -> Endpoint:
        vpc_id, cidr, subnets = self.aws.network(request.placement.subnets)
        ports = [p for p in (request.port, request.tls_port) if p]
        name = short_name(self.project, request.env, request.role)
        tags = self._tags(request.env, request.role, "balancer")
        groups = request.placement.security_groups or [
            self.aws.ensure_group(tags, f"phoenix-{self.project}-{request.env}-{request.role}-lb", vpc_id, ports,
                                  [{"IpRanges": [{"CidrIp": "0.0.0.0/0" if request.public else cidr}]}])
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
                "elbv2", "create_target_group", Name=short_name(self.project, request.env, f"{request.role}-{port}"),
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

    def _zone(self, name: str) -> str:
        """The hosted zone of a record name: the public zone named after its parent domain."""
        zone_name = name.split(".", 1)[1].rstrip(".") + "."
        zones = self.aws.call("route53", "list_hosted_zones_by_name", DNSName=zone_name, MaxItems="10")["HostedZones"]
        matching = [z for z in zones if z["Name"] == zone_name]
        if not matching:
            raise PhoenixError(f"DNS zone {zone_name.rstrip('.')} is not a Route 53 hosted zone of this account (Phoenix never creates zones)")
        return min(matching, key=lambda z: z.get("Config", {}).get("PrivateZone", False))["Id"]

    def _upsert_record(self, zone: str, name: str, target: dict) -> dict:
        record = {"Name": name.rstrip(".") + ".", **target}
        self.aws.call("route53", "change_resource_record_sets", HostedZoneId=zone,
                      ChangeBatch={"Comment": "phoenix", "Changes": [{"Action": "UPSERT", "ResourceRecordSet": record}]})
        return {"zone": zone, "set": record}

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
        mine_filters = tag_filters({f"{TAG}project": self.project, f"{TAG}env": env})
        addresses = self.aws.call("ec2", "describe_addresses", Filters=mine_filters)["Addresses"]
        for address in addresses:
            role = tag_map(address.get("Tags")).get(f"{TAG}role", "?")
            found[f"{role} (floating IP {address['PublicIp']})"] = {"kind": "floating_ip", "env": env, "role": role,
                                                                    "allocation_id": address["AllocationId"]}
        security = self.aws.pages("ec2", "describe_security_groups", "SecurityGroups",
                                  Filters=mine_filters + tag_filters({f"{TAG}part": "balancer"}))
        for group in security:
            entry(tag_map(group.get("Tags")).get(f"{TAG}role", "?"), "load_balancer")["security_group"] = group["GroupId"]
        return found
