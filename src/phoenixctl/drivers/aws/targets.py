"""Members of a role's way in on AWS: instances registered in the balancer's target groups
(healthy, draining, gone), or the instance an Elastic IP points at. A part of
AWSLoadBalancers."""

from __future__ import annotations


from ...deadline import Deadline, DeadlineExceeded
from ...errors import PhoenixError
from .api import LIVE_STATES, NOT_FOUND, TAG, AWSError, tag_filters, tag_map
from ..base import MemberCounters, MemberState

TARGET_STATES = {"healthy": "UP", "initial": "DOWN (initial)", "unhealthy": "DOWN", "draining": "DRAIN", "unused": "MAINT", "unavailable": "DOWN"}
STATE_ORDER = {"draining": 0, "unused": 1, "unavailable": 2, "unhealthy": 3, "initial": 4, "healthy": 5}  # worst first


class AWSTargets:
    """Registering, watching and deregistering members (mixed into AWSLoadBalancers)."""

    def _instance(self, server_id: str) -> str:
        if server_id not in self._instance_of:
            reservations = self.aws.pages(
                "ec2", "describe_instances", "Reservations",
                Filters=tag_filters({f"{TAG}project": self.project, f"{TAG}server": server_id})
                + [{"Name": "instance-state-name", "Values": LIVE_STATES}],
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

    def add_member(
        self, handle: dict, name: str, address: str, port: int, tls_port: int | None = None, standby: bool = False, server: dict | None = None
    ) -> None:
        if standby:
            raise PhoenixError("provider aws keeps no standby members")
        if server and server.get("instance_id"):  # from the launch itself: no tag lookup that may lag behind
            self._remember(name, server["instance_id"])
        instance = self._instance(name)
        if handle["kind"] == "floating_ip":
            addresses = self.aws.call("ec2", "describe_addresses", AllocationIds=[handle["allocation_id"]])["Addresses"]
            holder = addresses[0].get("InstanceId") if addresses else None
            if holder and holder != instance:
                self._previous_holder[handle["allocation_id"]] = holder  # where the address goes back if this one fails
            self.aws.call("ec2", "associate_address", AllocationId=handle["allocation_id"], InstanceId=instance, AllowReassociation=True)
            return
        for group, group_port in handle["target_groups"]:
            self.aws.call("elbv2", "register_targets", TargetGroupArn=group, Targets=[{"Id": instance, "Port": group_port}])

    def members(self, handle: dict) -> dict[str, MemberState]:
        """Per server: UP only when healthy in every target group of the role (HTTP and TLS);
        a floating IP's member is the instance it is on (gated before the move)."""
        if handle["kind"] == "floating_ip":
            addresses = self.aws.call("ec2", "describe_addresses", AllocationIds=[handle["allocation_id"]])["Addresses"]
            holder = addresses[0].get("InstanceId") if addresses else None
            names = self._servers([holder]) if holder else {}
            return {names[holder]: MemberState("UP", True, 0)} if holder in names else {}
        states: dict[str, list[str]] = {}
        for group, _ in handle["target_groups"]:
            for target in self.aws.call("elbv2", "describe_target_health", TargetGroupArn=group)["TargetHealthDescriptions"]:
                states.setdefault(target["Target"]["Id"], []).append(target["TargetHealth"]["State"])
        names = self._servers(list(states))
        members = {}
        for instance, seen in states.items():
            if instance not in names:
                continue
            worst = min(seen, key=lambda state: STATE_ORDER.get(state, -1))
            if len(seen) < len(handle["target_groups"]) and worst == "healthy":
                worst = "initial"  # registered in some groups only, so far
            # A draining target may still have requests in flight; the balancer does not say how many.
            members[names[instance]] = MemberState(TARGET_STATES.get(worst, worst.upper()), worst == "healthy", 1 if "draining" in seen else 0)
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
            if not (addresses and addresses[0].get("InstanceId") == instance and addresses[0].get("AssociationId")):
                return
            previous = self._previous_holder.pop(handle["allocation_id"], None)
            if previous and self._running(previous):
                # The new server failed after the move: the address goes back to the one that served.
                self.aws.call("ec2", "associate_address", AllocationId=handle["allocation_id"], InstanceId=previous, AllowReassociation=True)
            else:
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

    def _running(self, instance_id: str) -> bool:
        try:
            reservations = self.aws.call("ec2", "describe_instances", InstanceIds=[instance_id])["Reservations"]
        except AWSError as exc:
            if exc.code in NOT_FOUND:
                return False
            raise
        return bool(reservations) and reservations[0]["Instances"][0]["State"]["Name"] == "running"

    def switch(self, handle: dict, enable: list[str], disable: list[str]) -> None:
        raise PhoenixError("provider aws keeps no standby members to switch to")

    def counters(self, handle: dict) -> dict[str, MemberCounters]:
        raise PhoenixError("provider aws does not count requests per member")
