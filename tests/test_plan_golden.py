"""Plans stay what they were: the `plan` report and the dry runs of deploy (rolling,
blue-green, canary) and rotate, for fixed fleets on a frozen clock, equal to what the code
planned before the control plane was made linear (issue 15). The goldens under
tests/golden/ were written by the code of 601659a with `python tests/test_plan_golden.py`
(the large one's reason counts and long steps then shortened as `compact` now does).

The fleets are seeded straight into the store's tables (its on-disk format, which an
upgrade must keep reading) and into the in-memory drivers' world (a stand-in for servers
and balancers, so that 10,000 of them cost nothing): dead, never in service, unhealthy,
outdated image, outdated boot configuration, older than max_age, too many, missing."""

from __future__ import annotations

import hashlib
import json
import re
import sqlite3
import sys
from collections import Counter
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from phoenixctl.engine import Executor, Project
from phoenixctl.state import LoadBalancerRow

from fakes import FakeWorld

GOLDEN = Path(__file__).parent / "golden"
# The image ids 601659a's in-memory driver gave these recipes (a content address of the
# recipe's fields of the time): the goldens name them, and the plans are compared, not ids.
IMAGE_IDS = {"app": "img-37bc39f129ae", "batch": "img-9b5282da2736"}
NOW = datetime(2026, 11, 30, 12, 0, 0)
STRATEGIES = ("rolling", "blue-green", "canary")


def spec(web: int) -> dict:
    return {
        "project": "golden",
        "provider": "fake",
        "images": {"app": {"start": "serve"}, "batch": {"start": "work"}},
        "roles": {
            "web": {"image": "app", "port": 8080},
            "api": {"image": "app", "port": 9090},
            "worker": {"image": "batch", "port": 7070},
        },
        "environments": {
            "prod": {
                "roles": {"web": web, "api": 3, "worker": 4},
                "max_age": "1d",
                "rollout": {"max_surge": "25%", "max_unavailable": "10%", "canary": "5%"},
            }
        },
    }


def kind_of(role: str, i: int) -> str:
    """What server `i` of a role is, spread over the fleet by residues."""
    if role != "web":
        return "current"
    for modulus, residue, kind in ((17, 4, "dead"), (23, 5, "not_in_service"), (10, 0, "old_image"),
                                   (10, 1, "old_config"), (10, 2, "old_age"), (10, 3, "unhealthy")):
        if i % modulus == residue:
            return kind
    return "current"


def seed(directory: Path, web: int) -> Executor:
    """A project whose prod environment has `web` web servers (some in every condition), 5
    api servers for 3 wanted and 2 worker servers for 4 wanted; returns its executor."""
    spec_path = directory / "phoenix.yaml"
    spec_path.write_text(yaml.safe_dump(spec(web)))
    executor = Executor(Project(spec_path))
    world = FakeWorld.of(directory / ".phoenix")
    store, inspector, compute = executor.store, executor.engine.inspector, executor.compute
    fleet = world.fleet("prod")
    for role, port in (("web", 8080), ("api", 9090), ("worker", 7070)):
        fleet.balancers[role] = {}
        handle = json.dumps({"env": "prod", "role": role})
        store.save_load_balancer(LoadBalancerRow(env="prod", role=role, address=f"fake-lb-prod/{role}", port=port, handle=handle))
    compute.image_id = lambda name, recipe, project_dir: IMAGE_IDS[name]  # this project's driver only
    boots = inspector.desired_boot("prod", IMAGE_IDS, inspector.lb_addresses("prod"), inspector.secrets_for("prod", read_only=True))
    rows = []
    for role, count in (("web", web), ("api", 5), ("worker", 2)):
        boot = boots[role]
        for i in range(count):
            kind, sid = kind_of(role, i), f"{role}-{i:05d}"
            launched = NOW - timedelta(hours=1) + timedelta(seconds=i % 600, microseconds=i)
            image_id, fingerprint = boot.image_id, boot.fingerprint
            if kind == "old_image":
                image_id, fingerprint = "img-old", "fp-old-image"
            elif kind == "old_config":
                fingerprint = "fp-old-config"
            elif kind == "old_age":
                launched = NOW - timedelta(days=3, seconds=i)
            in_service = kind != "not_in_service"
            fleet.servers[sid] = {
                "role": role, "launched": 0.0, "listening_at": 0.0, "healthy_at": 0.0,
                "alive": kind != "dead", "healthy": kind != "unhealthy", "answer": "HTTP 503",
            }
            if in_service:
                fleet.balancers[role][sid] = {"state": "ready", "idle_at": 0.0}
            rows.append((
                sid, "prod", role, image_id, fingerprint, f"fake-{i}", boot.port, "in_service" if in_service else "ready",
                in_service, launched.strftime("%Y-%m-%d %H:%M:%S.%f"), json.dumps({"env": "prod", "id": sid}),
            ))
    with sqlite3.connect(directory / ".phoenix" / "state.db") as db:
        db.executemany(
            "INSERT INTO servers (id, env, role, image_id, fingerprint, address, port, state, in_service, launched_at, handle) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
    return executor


def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every phoenixctl module's `utcnow` answers NOW (the clock the goldens were made with)."""
    from phoenixctl import state

    original = state.utcnow
    for name, module in list(sys.modules.items()):
        if name.startswith("phoenixctl") and getattr(module, "utcnow", None) is original:
            monkeypatch.setattr(module, "utcnow", lambda: NOW)


def plans(executor: Executor) -> dict:
    """Everything planned for prod: the `plan` report, and each dry run."""
    reports = executor.reports
    result = {"plan": reports.reconcile_plan("prod").as_json(), "rotate": reports.describe("prod", "rotate").as_json()}
    for strategy in STRATEGIES:
        result[f"deploy {strategy}"] = reports.describe("prod", "deploy", strategy).as_json()
    return result


def digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def short(text: str) -> str:
    return text if len(text) <= 120 else f"{text[:100]} ... sha256:{hashlib.sha256(text.encode()).hexdigest()[:16]}"


def compact(planned: dict) -> dict:
    """A large fleet's plans, stored small: a digest of each, the reasons counted (their
    numbers left out), a sample of the decisions and steps (a long step by its digest)."""
    out = {}
    for name, value in planned.items():
        roles = value["roles"]
        decisions = {key: [d for r in roles for d in r.get(key, [])] for key in ("replace", "retire", "remove", "retire_extra")}
        out[name] = {
            "sha256": digest(value),
            "reasons": {
                key: dict(sorted(Counter(re.sub(r"\d+", "#", d["reason"]) for d in ds).items())) for key, ds in decisions.items() if ds
            },
            "sample": {key: ds[:5] + ds[-5:] for key, ds in decisions.items() if ds},
            "steps": {r["role"]: [short(step) for step in r.get("steps", [])[:3] + r.get("steps", [])[-2:]] for r in roles},
        }
    return out


CASES = {"small": (40, False), "large": (10_000, True)}


def produce(directory: Path, web: int, compacted: bool) -> dict:
    planned = plans(seed(directory, web))
    return compact(planned) if compacted else planned


@pytest.mark.parametrize("case", list(CASES))
def test_plans_equal_the_golden_plans(case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    frozen_clock(monkeypatch)
    web, compacted = CASES[case]
    expected = json.loads((GOLDEN / f"plan_{case}.json").read_text())
    assert produce(tmp_path, web, compacted) == expected


if __name__ == "__main__":  # write the goldens (only with the code they are to hold the new code to)
    import tempfile

    with pytest.MonkeyPatch.context() as patch:
        frozen_clock(patch)
        GOLDEN.mkdir(exist_ok=True)
        for case, (web, compacted) in CASES.items():
            if sys.argv[1:] and case not in sys.argv[1:]:
                continue
            with tempfile.TemporaryDirectory() as directory:
                result = produce(Path(directory), web, compacted)
            (GOLDEN / f"plan_{case}.json").write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
            print(f"wrote {GOLDEN / f'plan_{case}.json'}")
