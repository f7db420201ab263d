"""A thin shim over the ELBv2 and EC2 clients for what emulators do not model: a test double,
installed through the AWS client factory's hook (`install`), never by the product.

moto marks a registered target `healthy` at once and forgets a deregistered one at once:
it never shows a target that stays unhealthy, one slow to become healthy, or `draining`;
and its instances run nothing, so an image builder never powers itself off. Installed with
options (comma-separated, e.g. `slow=3,drain=5`), the answers are a real cloud's:

- `unhealthy`: targets registered by this process never pass the health check;
- `slow=S`: they show `initial` for S seconds after registration, then moto's answer;
- `drain=S`: a deregistered target shows `draining` for S seconds before it is gone;
- `builder=ok` or `builder=failed`: a builder instance (tagged `phoenix:builder`) powers
  off when it is next looked at, and its console reports its steps' outcome.

Every other call goes to the real client unchanged. The paths these cover (a swap timing
out, a slow swap, a long drain, a real builder's end) are exercised against moto only
through this shim; see the README's AWS section."""

from __future__ import annotations

import threading
import time

from phoenixctl.drivers.aws import api


def parse(text: str) -> dict:
    options: dict = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name == "builder" and value in ("ok", "failed"):
            options[name] = value
        elif name in ("unhealthy", "slow", "drain"):
            options[name] = float(value) if value else 1.0
        else:
            raise ValueError(f"aws shim: unknown option {item!r} (unhealthy, slow=S, drain=S, builder=ok|failed)")
    return options


def install(monkeypatch, text: str) -> list:
    """Every AWS client made from now on (until `remove` or the test's end) goes through the
    shim; returns the list of shims made, so a test can read what they saw."""
    options, made = parse(text), []

    def hook(service: str, client):
        wrapped = wrap(service, client, dict(options))
        if wrapped is not client:
            made.append(wrapped)
        return wrapped

    monkeypatch.setattr(api, "CLIENT_HOOKS", [hook])
    api.AWS._shared.clear()
    return made


def remove(monkeypatch) -> None:
    monkeypatch.setattr(api, "CLIENT_HOOKS", [])
    api.AWS._shared.clear()


def wrap(service: str, client, options: dict):
    builder = options.pop("builder", None)
    if service == "elbv2" and options:
        return TargetHealthShim(client, **options)
    if service == "ec2" and builder:
        return BuilderShim(client, builder)
    return client


class BuilderShim:
    """A builder that ran its steps: stopped when next described, its console telling the outcome."""

    def __init__(self, client, outcome: str):
        self._client = client
        self.console = "PHOENIX-BAKE: ok" if outcome == "ok" else "PHOENIX-BAKE: failed at line 9 (exit 1)"
        self._builders: set[str] = set()
        self._running: set[str] = set()

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def run_instances(self, **kwargs):
        answer = self._client.run_instances(**kwargs)
        tags = [t["Key"] for spec in kwargs.get("TagSpecifications", []) for t in spec["Tags"]]
        if "phoenix:builder" in tags:
            launched = {i["InstanceId"] for i in answer["Instances"]}
            self._builders |= launched
            self._running |= launched
        return answer

    def describe_instances(self, **kwargs):
        for instance in set(kwargs.get("InstanceIds", [])) & self._running:
            self._client.stop_instances(InstanceIds=[instance])  # it powered itself off
            self._running.discard(instance)
        return self._client.describe_instances(**kwargs)

    def get_console_output(self, InstanceId: str, **kwargs):
        answer = self._client.get_console_output(InstanceId=InstanceId, **kwargs)
        if InstanceId in self._builders:
            answer["Output"] = "cloud-init: running the image's steps\n" + self.console + "\n"
        return answer
class TargetHealthShim:
    def __init__(self, client, unhealthy: float = 0.0, slow: float = 0.0, drain: float = 0.0):
        self._client = client
        self.unhealthy, self.slow, self.drain = bool(unhealthy), slow, drain
        self._registered: dict[tuple[str, str], float] = {}
        self._draining: dict[tuple[str, str], tuple[float, dict]] = {}
        self.deregistrations: list[tuple[str, str]] = []  # every deregister_targets call, in order
        self._lock = threading.Lock()

    def __getattr__(self, name: str):
        return getattr(self._client, name)

    def register_targets(self, TargetGroupArn: str, Targets: list[dict], **kwargs):
        with self._lock:
            for target in Targets:
                self._registered[(TargetGroupArn, target["Id"])] = time.monotonic()
                self._draining.pop((TargetGroupArn, target["Id"]), None)
        return self._client.register_targets(TargetGroupArn=TargetGroupArn, Targets=Targets, **kwargs)

    def deregister_targets(self, TargetGroupArn: str, Targets: list[dict], **kwargs):
        with self._lock:
            for target in Targets:
                key = (TargetGroupArn, target["Id"])
                self.deregistrations.append(key)
                if key not in self._draining:
                    self._draining[key] = (time.monotonic(), dict(target))
        return self._client.deregister_targets(TargetGroupArn=TargetGroupArn, Targets=Targets, **kwargs)

    def describe_target_health(self, TargetGroupArn: str, **kwargs):
        answer = self._client.describe_target_health(TargetGroupArn=TargetGroupArn, **kwargs)
        now = time.monotonic()
        with self._lock:
            for description in answer["TargetHealthDescriptions"]:
                registered = self._registered.get((TargetGroupArn, description["Target"]["Id"]))
                if registered is None:
                    continue
                if self.unhealthy:
                    description["TargetHealth"] = {"State": "unhealthy", "Reason": "Target.ResponseCodeMismatch"}
                elif now - registered < self.slow:
                    description["TargetHealth"] = {"State": "initial", "Reason": "Elb.InitialHealthChecking"}
            for (group, instance), (since, target) in list(self._draining.items()):
                if group != TargetGroupArn:
                    continue
                if now - since >= self.drain:
                    del self._draining[(group, instance)]
                    continue
                answer["TargetHealthDescriptions"].append(
                    {"Target": target, "TargetHealth": {"State": "draining", "Reason": "Target.DeregistrationInProgress"}}
                )
        return answer
