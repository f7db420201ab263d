"""The AWS provider against moto's server (ThreadedMotoServer on 127.0.0.1), through boto3.

moto stands in for AWS: instances run nothing there, so the example runs with its live-server
gates off (an endpoint on loopback is an emulator: Phoenix never connects to an instance).
moto also marks targets healthy at once and never shows `draining`; the tests of an
unhealthy target, a slow one and a long drain go through the documented shim
(`tests/aws_shim.py`, installed through the AWS client factory's hook): those paths are
covered only that way. The image builder's own script, which nothing runs on moto, is run
here with bash in a fake root (`run_builder`). Leftovers are counted over everything in the
account, tagged or not."""

from __future__ import annotations

import base64
import logging
import gzip
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import boto3
import httpx
import pytest
from moto.server import ThreadedMotoServer

from phoenixctl.drivers.aws.api import AWS
from phoenixctl.drivers.cloud_init import BAKE_MARKER, builder_userdata
from phoenixctl.deadline import Deadline
from phoenixctl.errors import PhoenixError
from phoenixctl.example import example_dir
from phoenixctl.excerpt import error_lines
from phoenixctl.engine import Executor, Project
from phoenixctl.spec import ImageSpec
from phoenixctl.boot.userdata import decode_content
from phoenixctl.boot.userdata import parse as parse_userdata

import aws_shim
from conftest import PHOENIX, edited_example

REGION = "us-east-1"
PRODUCTION = {"frontend": 3, "backend": 2, "edit": 1}


@pytest.fixture(scope="session")
def moto_url():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one log line per API call otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


class Cloud:
    """boto3 clients on the moto server, for the tests' own look at what exists."""

    def __init__(self, url: str):
        options = dict(endpoint_url=url, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
        self.ec2 = boto3.client("ec2", **options)
        self.elb = boto3.client("elbv2", **options)
        self.route53 = boto3.client("route53", **options)

    def instances(self, **tags: str) -> list[dict]:
        filters = [{"Name": f"tag:phoenix:{k}", "Values": [v]} for k, v in tags.items()]
        filters.append({"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]})
        return [i for r in self.ec2.describe_instances(Filters=filters)["Reservations"] for i in r["Instances"]]

    def targets(self, group_arn: str) -> dict[str, str]:
        return {t["Target"]["Id"]: t["TargetHealth"]["State"] for t in self.elb.describe_target_health(TargetGroupArn=group_arn)["TargetHealthDescriptions"]}

    def inventory(self) -> dict[str, set[str]]:
        """Everything of these kinds in the account, tagged or not: a leak Phoenix forgot to tag
        shows as well. Snapshots that back a registered AMI of the account are left out: AMIs
        stay after a destroy (rollbacks need them), and their snapshots with them."""
        ec2, pages = self.ec2, lambda client, method, key, **kw: [i for page in client.get_paginator(method).paginate(**kw) for i in page[key]]
        kept = {m["Ebs"]["SnapshotId"] for image in ec2.describe_images(Owners=["self"])["Images"]
                for m in image.get("BlockDeviceMappings", []) if m.get("Ebs", {}).get("SnapshotId")}
        records = set()
        for zone in pages(self.route53, "list_hosted_zones", "HostedZones"):
            for record in pages(self.route53, "list_resource_record_sets", "ResourceRecordSets", HostedZoneId=zone["Id"]):
                if not (record["Type"] in ("SOA", "NS") and record["Name"] == zone["Name"]):
                    records.add(f"{record['Name']} {record['Type']}")
        return {
            "instances": {i["InstanceId"] for r in pages(ec2, "describe_instances", "Reservations") for i in r["Instances"]
                          if i["State"]["Name"] != "terminated"},
            "volumes": {v["VolumeId"] for v in pages(ec2, "describe_volumes", "Volumes")},
            "snapshots": {s["SnapshotId"] for s in pages(ec2, "describe_snapshots", "Snapshots", OwnerIds=["self"])} - kept,
            "security groups": {f"{g['GroupId']} ({g['GroupName']})" for g in pages(ec2, "describe_security_groups", "SecurityGroups")
                                if g["GroupName"] != "default"},
            "elastic IPs": {a["AllocationId"] for a in ec2.describe_addresses()["Addresses"]},
            "load balancers": {b["LoadBalancerArn"] for b in pages(self.elb, "describe_load_balancers", "LoadBalancers")},
            "target groups": {g["TargetGroupArn"] for g in pages(self.elb, "describe_target_groups", "TargetGroups")},
            "Route 53 records": records,
        }

    def mark(self) -> None:
        """What exists now is the test's own (made before Phoenix ran): not a leftover."""
        self.before = self.inventory()

    def leftovers(self) -> dict[str, list[str]]:
        """What exists now that did not before the test (or its `mark`), kind by kind."""
        return {kind: sorted(found - self.before[kind]) for kind, found in self.inventory().items()}


NOTHING = {kind: [] for kind in ("instances", "volumes", "snapshots", "security groups", "elastic IPs", "load balancers", "target groups", "Route 53 records")}


@pytest.fixture
def cloud(moto_url, monkeypatch) -> Cloud:
    httpx.post(f"{moto_url}/moto-api/reset").raise_for_status()  # every test starts from an empty account
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_url)
    for name in ("AWS_PROFILE", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)  # no credentials: an emulator gets placeholders
    AWS._shared.clear()
    cloud = Cloud(moto_url)
    cloud.mark()  # what the fresh account holds (moto's default VPC, its public images' snapshots)
    return cloud


def aws_example(tmp_path: Path, *edits: tuple[str, str]) -> Path:
    """A copy of examples/website-aws (with a TLS pair per environment), edited as asked."""
    return edited_example(tmp_path, "website-aws", *edits)


def executor(spec: Path) -> Executor:
    return Executor(Project(spec))


def tags_of(resource: dict) -> dict[str, str]:
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


def userdata_of(cloud: Cloud, instance_id: str) -> str:
    value = cloud.ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    raw = base64.b64decode(value)
    return (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode()


def serving(cloud: Cloud, ex: Executor, env: str) -> dict[str, set[str]]:
    """Per role, the instances the balancer (or the Elastic IP) sends traffic to."""
    result = {}
    for row in ex.store.load_balancers(env):
        handle = row.handle_data
        if handle["kind"] == "floating_ip":
            address = cloud.ec2.describe_addresses(AllocationIds=[handle["allocation_id"]])["Addresses"][0]
            result[row.role] = {address["InstanceId"]} if address.get("InstanceId") else set()
        else:
            result[row.role] = {i for i, state in cloud.targets(handle["target_groups"][0][0]).items() if state == "healthy"}
    return result


# --- the example, from its directory, with nothing prepared --------------------------------------


def test_example_ci_up_rotate_destroy_from_its_directory(cloud, moto_url, tmp_path):
    # the example as the repository has it: no TLS pair made beforehand (ci's comes from its secret command)
    shutil.copytree(example_dir("website-aws"), tmp_path / "website-aws", ignore=shutil.ignore_patterns(".phoenix", "secrets"))
    spec = tmp_path / "website-aws" / "phoenix.yaml"
    env = {k: v for k, v in os.environ.items() if k != "PHOENIX_FAILPOINT"}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PHOENIX, *args], cwd=spec.parent, env=env, capture_output=True, text=True, timeout=120)

    up = run("up", "ci")
    assert up.returncode == 0, up.stderr
    assert "not warmed" in up.stderr  # the emulator's instances cannot be reached: no warm-up, said so
    first = {i["InstanceId"] for i in cloud.instances(env="ci")}
    assert len(first) == 3
    status = json.loads(run("status", "ci", "--json").stdout)
    assert sorted(s["role"] for s in status["servers"] if s["in_service"]) == ["backend", "edit", "frontend"]
    assert all(s["instance"] in first for s in status["servers"])

    rotate = run("rotate", "ci", "--json")
    assert rotate.returncode == 0, rotate.stderr
    second = {i["InstanceId"] for i in cloud.instances(env="ci")}
    assert len(second) == 3 and not second & first  # every server replaced, the old ones terminated

    destroy = run("destroy", "ci")
    assert destroy.returncode == 0, destroy.stderr
    assert cloud.leftovers() == NOTHING


# --- production: up, deploy, rollback, rotate, destroy ----------------------------------------------------


def test_production_lifecycle_on_aws(cloud, tmp_path):
    cloud.route53.create_hosted_zone(Name="website.test", CallerReference="phoenix-test")  # zones are never Phoenix's to create
    spec = aws_example(tmp_path)
    ex = executor(spec)
    try:
        result = ex.up("production")
        assert len(result.launched) == 6 and result.baked

        # Servers: tagged, placed as the spec says, spread across zones, with production's own user-data.
        instances = cloud.instances(env="production")
        by_role: dict[str, list[dict]] = {}
        for instance in instances:
            by_role.setdefault(tags_of(instance)["phoenix:role"], []).append(instance)
        assert {role: len(items) for role, items in by_role.items()} == PRODUCTION
        rows = {row.id: row for row in ex.store.servers("production")}
        for instance in instances:
            tags = tags_of(instance)
            row = rows[tags["phoenix:server"]]
            assert tags["phoenix:project"] == "website" and tags["phoenix:env"] == "production"
            assert tags["phoenix:fingerprint"] == row.fingerprint and tags["phoenix:operation"] == result.id
        assert {i["InstanceType"] for i in by_role["frontend"]} == {"c7i.large"}  # environment x role placement
        assert {i["InstanceType"] for i in by_role["backend"] + by_role["edit"]} == {"t3.small"}  # environment placement
        assert len({i["Placement"]["AvailabilityZone"] for i in by_role["frontend"]}) == 3
        parsed = parse_userdata(userdata_of(cloud, by_role["frontend"][0]["InstanceId"]).encode())
        files = {entry["path"]: entry for entry in parsed.cloud_config["write_files"]}
        cert = files["/srv/phoenix/tls/cert.pem"]
        expected = (spec.parent / "secrets/production/tls.crt").read_bytes().removesuffix(b"\n")  # less its one trailing newline
        assert decode_content(cert) == expected  # production's, not ci's
        assert files["/srv/phoenix/tls/key.pem"]["permissions"] == "0600"
        assert [name for name, _ in parsed.scripts] == ["phoenix-start.sh"]
        assert b"python3 app/server.py" in parsed.scripts[0][1]

        # The ways in: an NLB passing TLS through for the frontend, an internal ALB for the
        # backend, an Elastic IP on the editor, a Route 53 alias for www; all tagged.
        lbs = {row.role: row.handle_data for row in ex.store.load_balancers("production")}
        frontend = cloud.elb.describe_load_balancers(LoadBalancerArns=[lbs["frontend"]["arn"]])["LoadBalancers"][0]
        backend = cloud.elb.describe_load_balancers(LoadBalancerArns=[lbs["backend"]["arn"]])["LoadBalancers"][0]
        assert (frontend["Type"], frontend["Scheme"]) == ("network", "internet-facing")
        assert (backend["Type"], backend["Scheme"]) == ("application", "internal")
        assert sorted(port for _, port in lbs["frontend"]["target_groups"]) == [8080, 8443]
        for handle in (lbs["frontend"], lbs["backend"]):
            arns = [handle["arn"]] + [arn for arn, _ in handle["target_groups"]]
            for description in cloud.elb.describe_tags(ResourceArns=arns)["TagDescriptions"]:
                assert tags_of(description)["phoenix:env"] == "production", description["ResourceArn"]
        eip = cloud.ec2.describe_addresses(AllocationIds=[lbs["edit"]["allocation_id"]])["Addresses"][0]
        assert tags_of(eip)["phoenix:role"] == "edit"
        assert serving(cloud, ex, "production") == {role: {i["InstanceId"] for i in items} for role, items in by_role.items()}
        attributes = cloud.elb.describe_target_group_attributes(TargetGroupArn=lbs["backend"]["target_groups"][0][0])["Attributes"]
        assert {a["Key"]: a["Value"] for a in attributes}["deregistration_delay.timeout_seconds"] == "48"  # 80% of drain: 60s
        tls_group = next(arn for arn, port in lbs["frontend"]["target_groups"] if port == 8443)
        assert cloud.targets(tls_group) == {i["InstanceId"]: "healthy" for i in by_role["frontend"]}  # the TLS group too
        health = cloud.elb.describe_target_groups(TargetGroupArns=[tls_group])["TargetGroups"][0]
        assert (health["Protocol"], health["HealthCheckProtocol"], health["HealthCheckPath"], health["HealthCheckPort"]) == ("TCP", "HTTP", "/healthz", "8080")
        zone = cloud.route53.list_hosted_zones_by_name(DNSName="website.test.")["HostedZones"][0]["Id"]
        records = {r["Name"]: r for r in cloud.route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]}
        assert records["www.website.test."]["AliasTarget"]["DNSName"].rstrip(".") == frontend["DNSName"]
        assert records["edit.website.test."]["ResourceRecords"] == [{"Value": eip["PublicIp"]}]

        key_line = (spec.parent / "secrets/production/tls.key").read_text().splitlines()[1]
        state = b"".join(p.read_bytes() for p in (spec.parent / ".phoenix").glob("state.db*"))
        assert key_line.encode() not in state and base64.b64encode(key_line.encode())[:16] not in state

        # A new build: a new AMI, every server replaced, the Elastic IP moved to the new editor.
        old_image = ex.store.servers("production")[0].image_id
        (spec.parent / "VERSION").write_text("2.0.0\n")
        ex = executor(spec)
        deployed = ex.deploy("production")
        assert len(deployed.launched) == 6 and len(deployed.retired) == 6 and deployed.baked
        new_image = {row.image_id for row in ex.store.servers("production") if row.in_service}
        assert new_image != {old_image} and len(new_image) == 1
        amis = cloud.ec2.describe_images(Owners=["self"])["Images"]
        assert len(amis) == 2 and all(tags_of(a)["phoenix:project"] == "website" for a in amis)
        now = serving(cloud, ex, "production")
        live = {i["InstanceId"] for i in cloud.instances(env="production")}
        assert set().union(*now.values()) == live and not live & set().union(*[{i["InstanceId"] for i in v} for v in by_role.values()])
        assert len(now["edit"]) == 1

        # Back to the previous build, rolling.
        back = ex.rollback("production")
        assert len(back.launched) == 6
        assert {row.image_id for row in ex.store.servers("production") if row.in_service} == {old_image}

        # The phoenix rebirth: the same build, every server new.
        before = {i["InstanceId"] for i in cloud.instances(env="production")}
        rotated = ex.rotate("production")
        assert len(rotated.launched) == 6
        assert not before & {i["InstanceId"] for i in cloud.instances(env="production")}
    finally:
        executor(spec).destroy("production")
    assert cloud.leftovers() == NOTHING
    records = cloud.route53.list_resource_record_sets(HostedZoneId=zone)["ResourceRecordSets"]
    assert not {"www.website.test.", "edit.website.test."} & {r["Name"] for r in records}


def test_subnets_and_security_groups_the_spec_names(cloud, tmp_path):
    vpc = cloud.ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    subnets = sorted(cloud.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"], key=lambda s: s["AvailabilityZone"])[:2]
    group = cloud.ec2.create_security_group(GroupName="team-web", Description="the team's own", VpcId=vpc)["GroupId"]
    cloud.route53.create_hosted_zone(Name="website.test", CallerReference="phoenix-test")
    cloud.mark()  # the team's group is theirs, not Phoenix's
    placement = f"placement: {{subnets: [{subnets[0]['SubnetId']}, {subnets[1]['SubnetId']}], security_groups: [{group}]}}"
    spec = aws_example(tmp_path, ("    placement: {instance_type: t3.small}", f"    {placement}"))
    ex = executor(spec)
    try:
        ex.up("production")
        instances = cloud.instances(env="production")
        assert len(instances) == 6
        assert {i["SubnetId"] for i in instances} == {s["SubnetId"] for s in subnets}  # spread over both
        assert {g["GroupId"] for i in instances for g in i["SecurityGroups"]} == {group}
        frontend = [i for i in instances if tags_of(i)["phoenix:role"] == "frontend"]
        assert sorted(len([i for i in frontend if i["SubnetId"] == s["SubnetId"]]) for s in subnets) == [1, 2]
        assert cloud.leftovers()["security groups"] == []  # Phoenix made none
    finally:
        ex.destroy("production")
    assert cloud.leftovers() == NOTHING
    assert cloud.ec2.describe_security_groups(GroupIds=[group])["SecurityGroups"]  # and left the team's in place


# --- nothing hides: recovery by tags ---------------------------------------------------------------


def test_recovery_finds_an_instance_only_its_tags_know(cloud, tmp_path):
    spec = aws_example(tmp_path)
    ex = executor(spec)
    try:
        ex.up("ci")
        # A command killed between run_instances and writing the record leaves an instance
        # the state store never heard of: the kill is real (SIGKILL at the `launch` failpoint).
        env = {**os.environ, "PHOENIX_FAILPOINT": "launch"}
        killed = subprocess.run([PHOENIX, "rotate", "ci", "--role", "backend", "-f", str(spec)], env=env, capture_output=True, text=True, timeout=120)
        assert killed.returncode == -9
        known = {row.handle_data.get("instance_id") for row in executor(spec).store.servers("ci")}
        unknown = [i for i in cloud.instances(env="ci") if i["InstanceId"] not in known]
        assert len(unknown) == 1 and tags_of(unknown[0])["phoenix:role"] == "backend"

        recovered = executor(spec).recover("ci")
        adopted = f"instance {unknown[0]['InstanceId']} runs: adopted"
        assert any(adopted in action for action in recovered.recovered), recovered.recovered
        live = {i["InstanceId"] for i in cloud.instances(env="ci")}
        assert unknown[0]["InstanceId"] not in live and len(live) == 3  # adopted, then destroyed: it never served

        # An instance the record has no row for at all (say, a lost state file) is an orphan.
        image = cloud.instances(env="ci")[0]["ImageId"]
        tags = [{"Key": f"phoenix:{k}", "Value": v} for k, v in dict(project="website", env="ci", role="edit", server="edit-0rphan").items()]
        orphan = cloud.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        orphan_id = orphan["Instances"][0]["InstanceId"]
        recovered = executor(spec).recover("ci")
        assert f"edit-0rphan: instance {orphan_id} unknown to the record (an orphan): destroyed" in recovered.recovered
        assert orphan_id not in {i["InstanceId"] for i in cloud.instances(env="ci")}
    finally:
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING


def test_destroy_removes_balancers_the_record_lost(cloud, tmp_path):
    spec = aws_example(tmp_path)
    ex = executor(spec)
    ex.up("ci")
    for row in ex.store.load_balancers("ci"):
        ex.store.delete_load_balancer("ci", row.role)  # as if the state store had lost them
    result = executor(spec).destroy("ci")
    assert sum("orphan" in action for action in result.recovered) >= 3
    assert cloud.leftovers() == NOTHING


# --- what moto does not model, through the shim ----------------------------------------------------


def test_a_target_that_stays_unhealthy_leaves_the_old_servers_serving(cloud, tmp_path, monkeypatch):
    spec = aws_example(tmp_path, ("swap: 5m", "swap: 2s"))
    executor(spec).up("ci")
    before = serving(cloud, executor(spec), "ci")
    aws_shim.install(monkeypatch, "unhealthy")
    ex = executor(spec)
    try:
        with pytest.raises(PhoenixError, match=r"failed its load balancer gate: the backend load balancer to report .* UP: not done after 2s"):
            ex.rotate("ci", role="backend")
        aws_shim.remove(monkeypatch)
        assert serving(cloud, executor(spec), "ci") == before  # still the old ones, healthy
        assert {i["InstanceId"] for i in cloud.instances(env="ci")} == set().union(*before.values())  # the new one is gone
    finally:
        aws_shim.remove(monkeypatch)
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING


def test_slow_to_become_healthy_and_a_long_drain(cloud, tmp_path, monkeypatch):
    spec = aws_example(tmp_path, ("swap: 5m", "swap: 20s"))
    executor(spec).up("ci")
    old = {i["InstanceId"] for i in cloud.instances(env="ci", role="backend")}
    aws_shim.install(monkeypatch, "slow=1.5,drain=1.5")
    ex = executor(spec)
    try:
        result = ex.rotate("ci", role="backend")
        assert len(result.launched) == 1 and len(result.retired) == 1
        phases = {name: entry for name, entry in ex.history("ci", 1)[0]["phases"].items()}
        assert phases["swap"]["max_s"] >= 1.5  # waited for `initial` to become `healthy`
        assert phases["drain"]["max_s"] >= 1.5  # waited through `draining` before terminating
        assert not old & {i["InstanceId"] for i in cloud.instances(env="ci")}
    finally:
        aws_shim.remove(monkeypatch)
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING


class Crash(BaseException):
    """A command killed where it stands (as SIGKILL would), raised in-process at a failpoint."""


def test_a_target_still_draining_when_a_command_crashes_is_retired_by_recovery(cloud, tmp_path, monkeypatch):
    """A rotation dies right after deregistering the old backend (its target `draining`); the
    next command's recovery retires it without deregistering it again (the skip-if-draining
    branch), waits for the drain to end, and terminates it: one backend serving, nothing left."""
    from phoenixctl.engine import lifecycle

    spec = aws_example(tmp_path, ("swap: 5m", "swap: 20s"))
    executor(spec).up("ci")
    old = {i["InstanceId"] for i in cloud.instances(env="ci", role="backend")}
    shims = aws_shim.install(monkeypatch, "drain=2")

    def crash_at_drain(name: str) -> None:
        if name == "drain":
            raise Crash()

    monkeypatch.setattr(lifecycle, "failpoint", crash_at_drain)
    ex = executor(spec)
    try:
        with pytest.raises(Crash):
            ex.rotate("ci", role="backend")
        interrupted = ex.store.operations("ci", limit=1)[0]
        ex.store.set_operation_status(interrupted.id, "running")  # what a SIGKILL leaves in the journal
        [old_row] = [row for row in ex.store.servers("ci", "backend") if row.state == "draining"]
        monkeypatch.setattr(lifecycle, "failpoint", lambda name: None)
        result = executor(spec).recover("ci")
        assert any(f"{old_row.id} was draining and the role is served without it: retired" in line for line in result.recovered), result.recovered
        deregistered = [key for shim in shims if hasattr(shim, "deregistrations") for key in shim.deregistrations]
        assert deregistered and all(instance in old for _, instance in deregistered)
        assert len(deregistered) == len(set(deregistered))  # once per target group: never again while draining
        assert not old & {i["InstanceId"] for i in cloud.instances(env="ci")}
        assert len(serving(cloud, executor(spec), "ci")["backend"]) == 1
    finally:
        aws_shim.remove(monkeypatch)
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING


# --- images built elsewhere ------------------------------------------------------------------------


def test_images_by_id_by_newest_name_and_from_a_packer_manifest(cloud, tmp_path):
    subnet = cloud.ec2.describe_subnets()["Subnets"][0]["SubnetId"]
    base = cloud.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = cloud.ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, SubnetId=subnet)["Instances"][0]["InstanceId"]
    older = cloud.ec2.create_image(InstanceId=instance, Name="website-2026-01")["ImageId"]
    newer = cloud.ec2.create_image(InstanceId=instance, Name="website-2026-02")["ImageId"]
    cloud.mark()  # the test's own instance and images
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"builds": [{"packer_run_uuid": "a", "artifact_id": f"eu-west-1:ami-0elsewhere,{REGION}:{older}"}], "last_run_uuid": "a"}))
    recipe = "    base: {name: \"al2023-ami-2023.*-x86_64\", owners: [amazon]}   # the builder starts from the newest match\n"
    for prebuilt, expected in ((f"{{id: {older}}}", older), ('{name: "website-*"}', newer), (f"{{packer_manifest: {manifest}}}", older)):
        spec = aws_example(tmp_path / expected / prebuilt[:6].strip("{: "), (recipe, f"    prebuilt: {prebuilt}\n"))
        ex = executor(spec)
        assert ex.bake() == [("web", expected, True, pytest.approx(0, abs=5))]
        try:
            ex.up("ci")
            assert {i["ImageId"] for i in cloud.instances(env="ci")} == {expected}
        finally:
            ex.destroy("ci")
        assert cloud.leftovers() == NOTHING


# --- bad input: one line, the place named, nothing half-made -------------------------------------------


@pytest.mark.parametrize(
    "edit, message",
    [
        (("rollout: {max_surge: 1, max_unavailable: 0}", "rollout: {strategy: canary}"), "defaults.rollout.strategy: provider aws cannot run canary"),
        (("    roles: {backend: 1, edit: 1, frontend: 1}", "    roles: {backend: 1, edit: 2, frontend: 1}"), "environments.ci.roles.edit: a floating IP points at one server"),
        (("  server_checks: true ", "  server_checks: false "), "roles.frontend.warmup: warm-up needs provider.server_checks"),
        (("    port: 8081\n", "    port: 8081\n    persistent: [content]\n"), "roles.backend.persistent: provider aws has no persistent layer"),
    ],
)
def test_spec_errors_name_the_place(cloud, tmp_path, edit, message):
    spec = aws_example(tmp_path, edit)
    result = subprocess.run([PHOENIX, "up", "ci", "-f", str(spec)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and message in result.stderr and "Traceback" not in result.stderr
    assert re.match(r"phoenix: error: .*phoenix\.yaml:\d+: ", result.stderr)
    assert len(result.stderr.strip().splitlines()) == 1
    assert cloud.leftovers() == NOTHING


def test_a_strategy_the_provider_cannot_run_is_refused_before_anything(cloud, tmp_path):
    spec = aws_example(tmp_path)
    result = subprocess.run([PHOENIX, "deploy", "ci", "--strategy", "blue-green", "-f", str(spec)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == "phoenix: error: provider aws cannot run blue-green deployments (its balancers lack standby members)"
    assert cloud.leftovers() == NOTHING and cloud.ec2.describe_images(Owners=["self"])["Images"] == []


def test_a_missing_dns_zone_is_one_line_and_leaves_nothing(cloud, tmp_path):
    spec = aws_example(tmp_path)
    result = subprocess.run([PHOENIX, "up", "production", "-f", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == (
        "phoenix: error: DNS zone website.test is not a Route 53 hosted zone of this account (Phoenix never creates zones)"
    )
    executor(spec).destroy("production")  # what came before the frontend (backend, edit) goes with destroy
    assert cloud.leftovers() == NOTHING


# --- doctor -----------------------------------------------------------------------------------------


def test_doctor_reports_capabilities_and_probe_timings(cloud, tmp_path):
    spec = aws_example(tmp_path)
    snapshots = lambda: {s["SnapshotId"] for s in cloud.ec2.describe_snapshots(OwnerIds=["self"])["Snapshots"]}  # noqa: E731
    before = snapshots()
    result = subprocess.run([PHOENIX, "doctor", "--probe", "--json", "-f", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    report = {row["capability"]: row for row in json.loads(result.stdout)["capabilities"]}
    for name in ("account", "images", "user-data", "load balancer", "floating IP", "DNS"):
        assert report[name]["ok"], report[name]
    assert not report["canary"]["ok"] and not report["blue-green"]["ok"]
    assert report["probe: launch"]["seconds"] >= 0 and report["probe: image"]["seconds"] >= 0
    assert "emulator" in report["account"]["detail"]
    assert cloud.leftovers() == NOTHING  # the probe's instance is gone
    assert cloud.ec2.describe_images(Owners=["self"])["Images"] == []  # and its image
    assert snapshots() == before  # and the image's snapshots


# --- IMDSv2 on every instance Phoenix launches -----------------------------------------------------


def test_every_instance_phoenix_launches_requires_imdsv2(cloud, tmp_path):
    """The image builder, the doctor's probe and the servers: IMDSv2 only (`HttpTokens:
    required`). moto keeps the MetadataOptions a launch asked for and describes them, even
    once the instance is terminated, so this looks at the instances themselves (no request
    hook needed)."""
    spec = aws_example(tmp_path)
    ex = executor(spec)
    try:
        ex.bake()  # a builder, terminated once the AMI exists
        ex.doctor(probe=True)  # a probe instance, terminated after its image
        ex.up("ci")  # the servers
    finally:
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING
    every = [i for r in cloud.ec2.describe_instances()["Reservations"] for i in r["Instances"]]
    kinds = {}
    for instance in every:
        tags = tags_of(instance)
        kind = "builder" if "phoenix:builder" in tags else "probe" if "phoenix:probe" in tags else tags.get("phoenix:role", "?")
        kinds.setdefault(kind, []).append(instance["MetadataOptions"].get("HttpTokens"))
    assert set(kinds) == {"builder", "probe", "frontend", "backend", "edit"}, kinds
    assert {kind: set(tokens) for kind, tokens in kinds.items()} == {kind: {"required"} for kind in kinds}


def test_one_helper_launches_every_instance():
    """Every `run_instances` of the AWS driver goes through the helper that requires IMDSv2."""
    package = Path(__file__).resolve().parents[1] / "src" / "phoenixctl" / "drivers" / "aws"
    assert sum(source.read_text().count('"run_instances"') for source in package.glob("*.py")) == 1


# --- the real builder script, run here with bash -------------------------------------------------

# The builder script writes to these absolute paths and honours no variable for them: the test
# rewrites each into a fake root under its temporary folder (the line count stays the same).
BUILDER_PATHS = ("/srv/phoenix", "/var/lib/phoenix", "/dev/console")


def run_builder(tmp_path: Path, steps: list[str], layers: list[dict] | None = None) -> tuple[subprocess.CompletedProcess, Path, list[str], str]:
    """The builder user-data Phoenix generates for the example's image (its files, these
    steps), applied as cloud-init would: the cloud-config's file written, then the shell part
    run with bash. `poweroff` and `cloud-init` are stubs first on PATH that record their
    calls. Returns the run, the fake root, the calls, and the script as it ran."""
    project_dir = aws_example(tmp_path / "project").parent
    recipe = (
        ImageSpec(layers=layers, start="python3 app/server.py") if layers
        else ImageSpec(files=["app", "VERSION"], steps=steps, start="python3 app/server.py")
    )
    parsed = parse_userdata(builder_userdata("web", recipe, project_dir))
    [(name, script)] = parsed.scripts
    root, stubs = tmp_path / "fake-root", tmp_path / "bin"
    for entry in parsed.cloud_config["write_files"]:  # cloud-init's write_files, under the fake root
        target = root / entry["path"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(decode_content(entry))
    (root / "dev").mkdir()
    text = script.decode()
    for path in BUILDER_PATHS:
        assert path in text, path
        text = text.replace(path, f"{root}{path}")
    assert not re.search(r"(?<![\w.-])/(srv|var|dev|etc|opt|home|root|boot)/", text), text  # nothing outside the fake root
    calls = tmp_path / "calls"
    stubs.mkdir()
    for command in ("poweroff", "cloud-init"):
        (stubs / command).write_text(f'#!/bin/sh\necho "{command} $*" >> "{calls}"\n')
        (stubs / command).chmod(0o755)
    (tmp_path / name).write_text(text)
    env = {**os.environ, "PATH": f"{stubs}:{os.environ['PATH']}", "FROM_THE_HOST": "leaked"}
    result = subprocess.run(["bash", str(tmp_path / name)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    recorded = calls.read_text().splitlines() if calls.exists() else []
    return result, root, recorded, text


def console_of(root: Path) -> str:
    console = root / "dev" / "console"
    return console.read_text() if console.exists() else ""


def test_the_builder_script_runs_its_steps_reports_ok_and_powers_off(tmp_path):
    result, root, calls, _ = run_builder(tmp_path, ["python3 -m py_compile app/server.py", "cat VERSION > built-from.txt"])
    assert result.returncode == 0, result.stderr
    assert console_of(root) == f"{BAKE_MARKER} ok\n"
    assert calls == ["cloud-init clean --logs", "poweroff "]  # cleaned for the servers to come, then off
    server_root = root / "srv" / "phoenix"
    assert (server_root / "app" / "server.py").is_file()  # the image's files, unpacked
    assert (server_root / "built-from.txt").read_text() == (tmp_path / "project" / "website-aws" / "VERSION").read_text()  # steps ran there
    assert not (root / "var" / "lib" / "phoenix" / "image.tgz.b64").exists()


def test_the_builder_runs_the_layers_in_order_in_a_clean_environment(tmp_path):
    """Each layer's files arrive just before its steps (a later layer's are not there yet), and
    a step sees the system PATH and the image's own bin directories, never the host's variables."""
    layers = [
        {"name": "deps", "files": ["VERSION"], "steps": ["mkdir -p venv/bin && printf '#!/bin/sh\\necho tool\\n' > venv/bin/tool && chmod +x venv/bin/tool",
                                                       "test ! -e app && echo no-app-yet > deps.txt"]},
        {"name": "code", "files": ["app"], "steps": ["tool > tool.txt", 'echo "${FROM_THE_HOST:-clean}" > env.txt']},
    ]
    result, root, _, _ = run_builder(tmp_path, [], layers)
    assert result.returncode == 0, result.stdout + result.stderr
    assert console_of(root) == f"{BAKE_MARKER} ok\n"
    server_root = root / "srv" / "phoenix"
    assert (server_root / "deps.txt").read_text() == "no-app-yet\n"  # the code layer came after the deps layer's steps
    assert (server_root / "tool.txt").read_text() == "tool\n"  # the image's venv/bin is on a step's PATH
    assert (server_root / "env.txt").read_text() == "clean\n"  # nothing of the host's environment


@pytest.mark.parametrize("failing, status", [("false && true", 1), ("exit 3", 3), ("test -f no-such-file && echo found", 1)])
def test_the_builder_script_names_the_failing_steps_line_and_powers_off(tmp_path, failing, status):
    """`false && true` is the example's own form (`dnf install ... && pip3 install ...`): its
    first command failing must fail the bake too."""
    result, root, calls, script = run_builder(tmp_path, ["echo before > before.txt", failing, "echo after > after.txt"])
    line = next(n for n, text in enumerate(script.splitlines(), 1) if failing in text)
    assert console_of(root) == f"{BAKE_MARKER} failed at line {line} (exit {status})\n", result.stdout + result.stderr
    assert calls == ["poweroff "]  # powered off, not cleaned: the image is never made
    assert result.returncode != 0
    server_root = root / "srv" / "phoenix"
    assert (server_root / "before.txt").exists() and not (server_root / "after.txt").exists()  # it stopped at that step


# --- a builder as on a real cloud (through the shim: moto's instances run nothing) -----------------


REAL_CLOUD = (
    ("  server_checks: true ", "  server_checks: false\n  emulator: false "),  # never probe moto's addresses
    ("    warmup: {paths", "    warmup: {enabled: false, paths"),
    ("discovery: {type: floating_ip, dns: edit}", "discovery: {type: load_balancer}"),
)


@pytest.mark.parametrize("outcome", ["ok", "failed"])
def test_a_builder_powers_off_and_its_console_decides(cloud, tmp_path, monkeypatch, outcome):
    spec = aws_example(tmp_path, *REAL_CLOUD)
    aws_shim.install(monkeypatch, f"builder={outcome}")
    ex = executor(spec)
    if outcome == "ok":
        [(name, image_id, cached, _)] = ex.bake()
        ami = ex.store.image(image_id).location
        image = cloud.ec2.describe_images(ImageIds=[ami])["Images"][0]
        assert (name, cached, image["State"], tags_of(image)["phoenix:image"]) == ("web", False, "available", image_id)
        assert re.fullmatch(r"[0-9a-f]{64}", tags_of(image)["phoenix:digest"])  # the whole content address
        assert tags_of(image)["phoenix:digest"].startswith(image_id.rsplit("-", 1)[1])
        assert ex.bake()[0][2] is True  # the same inputs: the AMI is reused
    else:
        with pytest.raises(PhoenixError, match="bake of image web: the builder's steps failed at line 9"):
            ex.bake()
        assert cloud.ec2.describe_images(Owners=["self"])["Images"] == []
    assert cloud.leftovers() == NOTHING  # the builder is terminated either way


def test_a_failed_gate_points_at_the_instance_console(cloud, tmp_path):
    ami = cloud.ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = cloud.ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    source = f"the console output of instance {instance} (the server's own output: journalctl -u phoenix-server on it)"
    try:
        # an emulator's console is canned: the pointer only
        emulated = executor(aws_example(tmp_path / "emulated")).compute.log_excerpt({"instance_id": instance})
        assert (emulated.source, emulated.lines) == (source, ())
        # a real cloud's console is read and quoted (here moto's canned text, read through the API)
        real = executor(aws_example(tmp_path / "real", *REAL_CLOUD)).compute
        console = cloud.ec2.get_console_output(InstanceId=instance)["Output"]
        excerpt = real.log_excerpt({"instance_id": instance})
        assert excerpt.source == source and excerpt.lines == tuple(error_lines(console)) and excerpt.lines
        assert real.log_excerpt({"instance_id": "i-0123456789abcdef0"}).lines == ()  # no console to read: the pointer still
        assert real.log_excerpt({}) is None
    finally:
        cloud.ec2.terminate_instances(InstanceIds=[instance])


def test_a_floating_ip_goes_back_when_the_new_server_fails(cloud, tmp_path):
    spec = aws_example(tmp_path)
    ex = executor(spec)
    try:
        ex.up("ci")
        old = cloud.instances(env="ci", role="edit")[0]
        lb = ex.store.load_balancer("ci", "edit").handle_data
        image = old["ImageId"]
        tags = [{"Key": f"phoenix:{k}", "Value": v} for k, v in dict(project="website", env="ci", role="edit", server="edit-new").items()]
        new = cloud.ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}])
        new_id = new["Instances"][0]["InstanceId"]
        balancers = ex.lbs
        balancers.add_member(lb, "edit-new", "", 8082, server={"instance_id": new_id})
        holder = lambda: cloud.ec2.describe_addresses(AllocationIds=[lb["allocation_id"]])["Addresses"][0].get("InstanceId")  # noqa: E731
        assert holder() == new_id
        balancers.remove_member(lb, "edit-new", Deadline(5, "removal"))  # the new one failed a later step
        assert holder() == old["InstanceId"]
        cloud.ec2.terminate_instances(InstanceIds=[new_id])
    finally:
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING


def test_keeping_servers_phoenix_on_aws(cloud, tmp_path):
    """plan, drift, chaos with healing and a watch pass: instances only, no traffic sent
    (the emulator's balancers cannot be reached from here)."""
    spec = aws_example(tmp_path)
    executor(spec).up("ci")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([PHOENIX, *args, "-f", str(spec)], capture_output=True, text=True, timeout=120)

    try:
        assert run("plan", "ci").returncode == 0  # nothing to replace
        drift = json.loads(run("drift", "ci", "--json").stdout)
        assert [s["supported"] for s in drift["servers"]] == [False, False, False]  # EC2 cannot look inside
        victim_before = {i["InstanceId"] for i in cloud.instances(env="ci", role="backend")}
        chaos = run("chaos", "ci", "--kill", "1", "--role", "backend", "--allow-outage", "--heal", "--json")
        assert chaos.returncode == 0, chaos.stderr
        report = json.loads(chaos.stdout)
        assert report["requests"] == 0  # no load: the balancers cannot be reached from here
        backend = {i["InstanceId"] for i in cloud.instances(env="ci", role="backend")}
        assert len(backend) == 1 and not backend & victim_before  # a new instance replaced the terminated one
        assert run("watch", "ci", "--passes", "1").returncode == 0
        assert {i["InstanceId"] for i in cloud.instances(env="ci", role="backend")} == backend  # nothing more to do
    finally:
        executor(spec).destroy("ci")
    assert cloud.leftovers() == NOTHING
