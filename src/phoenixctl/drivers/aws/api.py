"""The AWS API as both AWS drivers use it: clients, retries, waiters, paged lists, tags.

Clients made once with botocore's adaptive retries, waiters bounded by deadlines, paged
lists, errors as one line, tags, the default VPC and the security groups Phoenix owns."""

from __future__ import annotations

import hashlib
import ipaddress
import math
import os
import threading
from urllib.parse import urlparse

from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from ...spec import ProviderSpec

TAG = "phoenix:"
LIVE_STATES = ["pending", "running", "stopping", "stopped"]
NOT_FOUND = ("InvalidInstanceID.NotFound", "InvalidAMIID.NotFound", "InvalidAllocationID.NotFound", "InvalidGroup.NotFound")
# The client factory's hook: each function gets (service, client) and returns the client to
# use. Empty in the product; tests put stand-ins for what an emulator does not model here, and clear
# `AWS._shared` so that new clients are made.
CLIENT_HOOKS: list = []


def aws_tags(tags: dict[str, str]) -> list[dict]:
    return [{"Key": key, "Value": value} for key, value in sorted(tags.items())]


def tag_filters(tags: dict[str, str]) -> list[dict]:
    """Describe-call filters matching every one of the tags."""
    return [{"Name": f"tag:{key}", "Values": [value]} for key, value in tags.items()]


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
        key = (settings.region, settings.endpoint_url, settings.emulator, os.environ.get("AWS_ENDPOINT_URL"))
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
        # adaptive: client-side rate limiting on throttling, on top of retries with backoff
        config = Config(retries={"mode": "adaptive", "max_attempts": 8}, connect_timeout=5, read_timeout=20)
        kwargs = {"config": config}
        if self.settings.endpoint_url:
            kwargs["endpoint_url"] = self.settings.endpoint_url
        if self._session.get_credentials() is None:
            if not self._emulated_endpoint(self.settings.endpoint_url or os.environ.get("AWS_ENDPOINT_URL")):
                raise PhoenixError("provider aws: no credentials found (boto3's chain: environment, profile, instance role)")
            # An emulator takes any credentials; the chain found none, so hand it placeholders.
            kwargs.update(aws_access_key_id="emulator", aws_secret_access_key="emulator")
        client = self._session.client(service, **kwargs)
        for hook in CLIENT_HOOKS:  # e.g. a test's stand-in for what an emulator does not model
            client = hook(service, client)
        return client

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
        from botocore.exceptions import BotoCoreError, WaiterError

        delay = 1 if self.emulator else delay
        attempts = max(1, math.ceil(max(deadline.remaining(), 0.1) / delay))
        try:
            self.client(service).get_waiter(waiter).wait(WaiterConfig={"Delay": delay, "MaxAttempts": attempts}, **kwargs)
        except WaiterError as exc:
            reason = exc.kwargs.get("reason", "") if hasattr(exc, "kwargs") else ""
            if "Max attempts exceeded" in str(exc):
                raise DeadlineExceeded(f"timed out after {deadline.seconds:g}s waiting for {deadline.what}") from None
            raise PhoenixError(f"{deadline.what}: {reason or exc}") from None
        except BotoCoreError as exc:
            raise PhoenixError(f"{deadline.what}: {exc}") from None

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
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            paginator = self.client(service).get_paginator(operation)
            return [item for page in paginator.paginate(**kwargs) for item in page.get(key, [])]
        except ClientError as exc:
            raise AWSError(service, operation, _code(exc), exc.response.get("Error", {}).get("Message", "")) from None
        except BotoCoreError as exc:
            raise PhoenixError(f"AWS {service} {operation}: {exc}") from None

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

    def ensure_group(self, tags: dict[str, str], name: str, vpc_id: str, ports: list[int], sources: list[dict]) -> str:
        """A security group Phoenix owns (found by its tags, else created) letting each source
        (`{"IpRanges": [...]}` or `{"UserIdGroupPairs": [...]}`) reach `ports`; rules are
        added on every call, so a port or source added to the spec is opened too."""
        filters = tag_filters(tags) + [{"Name": "vpc-id", "Values": [vpc_id]}]
        with self._lock_for(name):  # servers of a role launch side by side: one creates the group, rules first
            existing = self.pages("ec2", "describe_security_groups", "SecurityGroups", Filters=filters)
            if existing:
                group = existing[0]["GroupId"]
            else:
                try:
                    group = self.call(
                        "ec2", "create_security_group", GroupName=name, Description=f"Phoenix: {name}", VpcId=vpc_id,
                        TagSpecifications=[{"ResourceType": "security-group", "Tags": aws_tags({**tags, "Name": name})}],
                    )["GroupId"]
                except AWSError as exc:
                    if exc.code != "InvalidGroup.Duplicate":  # another command made it meanwhile
                        raise
                    group = self.pages("ec2", "describe_security_groups", "SecurityGroups", Filters=[
                        {"Name": "group-name", "Values": [name]}, {"Name": "vpc-id", "Values": [vpc_id]}])[0]["GroupId"]
            for port in ports:
                for source in sources:
                    try:
                        self.call("ec2", "authorize_security_group_ingress", GroupId=group,
                                  IpPermissions=[{"IpProtocol": "tcp", "FromPort": port, "ToPort": port, **source}])
                    except AWSError as exc:
                        if exc.code != "InvalidPermission.Duplicate":
                            raise
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


def short_name(*parts: str, limit: int = 32) -> str:
    """Names AWS limits to 32 characters (balancers, target groups): readable, then a hash."""
    digest = hashlib.sha256("/".join(parts).encode()).hexdigest()[:6]
    readable = "-".join(parts[-2:])[: limit - 10].strip("-")
    return f"px-{readable}-{digest}"
