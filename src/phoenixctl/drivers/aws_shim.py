"""A thin shim over the ELBv2 client for what emulators do not model (tests only).

moto marks a registered target `healthy` at once and forgets a deregistered one at once:
it never shows a target that stays unhealthy, one slow to become healthy, or `draining`.
With `PHOENIX_AWS_SHIM` set (comma-separated, e.g. `slow=3,drain=5`), describe_target_health
answers as a real balancer would:

- `unhealthy`: targets registered by this process never pass the health check;
- `slow=S`: they show `initial` for S seconds after registration, then moto's answer;
- `drain=S`: a deregistered target shows `draining` for S seconds before it is gone.

Every other call goes to the real client unchanged. The paths these cover (a swap timing
out, a slow swap, a long drain) are exercised against moto only through this shim; see
the README's AWS section."""

from __future__ import annotations

import os
import threading
import time

VARIABLE = "PHOENIX_AWS_SHIM"


def parse(text: str) -> dict[str, float]:
    options: dict[str, float] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        if name not in ("unhealthy", "slow", "drain"):
            raise ValueError(f"{VARIABLE}: unknown option {name!r} (unhealthy, slow=S, drain=S)")
        options[name] = float(value) if value else 1.0
    return options


def wrap(service: str, client):
    text = os.environ.get(VARIABLE, "")
    if service != "elbv2" or not text:
        return client
    return TargetHealthShim(client, **parse(text))


class TargetHealthShim:
    def __init__(self, client, unhealthy: float = 0.0, slow: float = 0.0, drain: float = 0.0):
        self._client = client
        self.unhealthy, self.slow, self.drain = bool(unhealthy), slow, drain
        self._registered: dict[tuple[str, str], float] = {}
        self._draining: dict[tuple[str, str], tuple[float, dict]] = {}
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
