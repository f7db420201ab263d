"""A game day that touches nothing of the environment: `phoenix drill ENV [--into NAME]`.

A scratch copy of ENV (`NAME`, by default `ENV-drill`) is rebuilt from nothing with the
release of ENV's newest good backup and that backup's data, exactly as `rebuild` would
rebuild ENV itself, then checked against ENV while ENV serves on:

- the same image on every role (by the record of what each serves);
- the same pages: each role that is warmed is crawled on both balancers (its warm-up's
  paths, sitemap and links, up to its max_pages), each page's status and body compared with
  the servers' names and the environments' addresses masked;
- the scratch copy's persistent files equal to the backup's checksums; ENV's own files that
  changed since the backup are counted (data newer than the recovery point: they explain
  pages that differ, and do not fail the drill).

The copy is then torn down whatever happened (servers, balancers, data, its secrets), and
the drill is recorded as an operation of ENV of kind `drill` whose status is `succeeded`
only when nothing unexplained differed; its summary gives the recovery time and point.

The copy derived from ENV has its own loopback addresses (fixed `lb_address`es dropped) and
throwaway secrets of the same shape as ENV's (a fresh self-signed TLS pair for a certificate
and key, random values for the rest): ENV's secrets never reach another environment. A
NAME that is an environment of the spec keeps its own definition and secrets instead."""

from __future__ import annotations

import copy
import os
import re
import secrets as random_secrets
import shutil
from pathlib import Path

import yaml

from ..boot.config import persistent_dir
from ..boot.secrets import create_tls_pair
from ..deadline import Deadline
from ..errors import SpecError
from .backup_store import BackupInfo, sha256_file
from .operation import Operation
from .part import Part
from .project import Project
from .rebuild import RecoveryReport, cleanup

PEM_CERTIFICATE = b"-----BEGIN CERTIFICATE-----"
CHANGED_SINCE = "files changed in the environment since the backup"
PEM_KEY = re.compile(rb"-----BEGIN [A-Z ]*PRIVATE KEY-----")


class Drill(Part):
    """Rebuild a scratch copy of an environment, compare it with the original, tear it down."""

    def scratch_name(self, env: str, into: str | None) -> str:
        name = into or f"{env}-drill"
        if name == env:
            raise SpecError(f"drill {env}: --into names the environment itself; a drill rebuilds a copy (use `phoenix rebuild {env}`)")
        if not re.fullmatch(r"[a-z][a-z0-9-]{0,30}", name):
            raise SpecError(f"drill {env}: {name!r} is not an environment name ([a-z][a-z0-9-]{{0,30}}); pass --into NAME")
        return name

    def run(self, op: Operation, env: str, scratch: str) -> RecoveryReport:
        made: list[str] = []  # the scratch spec, made once (its throwaway secrets are written then)

        def derive(text: str) -> str:
            if not made:
                made.append(self.derive(text, env, scratch))
            return made[0]

        try:
            report = self.engine.rebuilder.rebuild(op, env, into=scratch, derive=derive)
            info = self.engine.backups.catalogue(env).get(report.backup)
            with op.phase("compare"):
                self.compare(env, scratch, info, report, Project.from_release(self.project, made[0]).spec)
        finally:
            with op.phase("teardown"):
                self.teardown(op, scratch)
        report.torn_down = True
        changed = report.compared.get(CHANGED_SINCE, 0)
        report.ok = not [d for d in report.differences if not (changed and d.startswith("page "))]
        return report

    # --- the scratch copy's spec ---------------------------------------------------------
    def derive(self, text: str, env: str, scratch: str) -> str:
        """The release's spec with the scratch environment added: ENV's definition with its
        own addresses and throwaway secrets, or the spec's own environment of that name."""
        data = yaml.safe_load(text)
        environments = data.setdefault("environments", {})
        if scratch in self.spec.environments:  # an environment of the (current) spec: as it is defined there
            environments[scratch] = yaml.safe_load(self.project.loaded.text)["environments"][scratch]
            return yaml.safe_dump(data, sort_keys=False)
        own = copy.deepcopy(environments[env])
        for key in ("drill", "backup"):
            own.pop(key, None)
        for role, value in (own.get("roles") or {}).items():
            if isinstance(value, dict):
                value.pop("lb_address", None)
        own["secrets"] = self._throwaway_secrets(env, scratch)
        environments[scratch] = own
        return yaml.safe_dump(data, sort_keys=False)

    def _throwaway_secrets(self, env: str, scratch: str) -> dict:
        values = self.project.secrets.resolve(env)
        if not values:
            return {}
        directory = self.secrets_dir(scratch)
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True, mode=0o700)
        cert, key = None, None
        if any(PEM_CERTIFICATE in value for value in values.values()):
            cert, key = create_tls_pair(directory, f"{scratch}.drill.invalid")
        sources = {}
        for name, value in values.items():
            if PEM_CERTIFICATE in value and cert:
                path = cert
            elif PEM_KEY.search(value) and key:
                path = key
            else:
                path = directory / f"{name}.secret"
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
                with os.fdopen(descriptor, "w") as handle:
                    handle.write(random_secrets.token_urlsafe(32))
            sources[name] = {"file": str(path)}
        return sources

    def secrets_dir(self, scratch: str) -> Path:
        return self.project.workdir / "drills" / scratch

    # --- checked against the environment -------------------------------------------------
    def compare(self, env: str, scratch: str, info: BackupInfo, report: RecoveryReport, scratch_spec) -> None:
        differences = report.differences
        for role in scratch_spec.environments[scratch].roles:
            here = {row.image_id for row in self.store.servers(env, role) if row.in_service}
            there = {row.image_id for row in self.store.servers(scratch, role) if row.in_service}
            if here != there:
                differences.append(f"role {role}: {env} serves {', '.join(sorted(here)) or 'nothing'}, the copy {', '.join(sorted(there)) or 'nothing'}")
        report.compared["roles"] = len(scratch_spec.environments[scratch].roles)
        # the copy's data is the backup's; the environment's own may have moved on since
        names = self.engine.backups.persistent_dirs(env, scratch_spec)
        copy_files = self._files(scratch, names)
        backup_files = {path: entry["sha256"] for path, entry in info.files.items()}
        for path in sorted(set(copy_files) | set(backup_files)):
            if copy_files.get(path) != backup_files.get(path):
                differences.append(f"file {path}: the copy's does not match the backup")
        report.compared["files"] = len(copy_files)
        live = self._files(env, names)
        report.compared[CHANGED_SINCE] = sum(1 for path in set(live) | set(backup_files) if live.get(path) != backup_files.get(path))
        report.compared["pages"] = self.compare_pages(env, scratch, scratch_spec, differences)

    def _files(self, env: str, names: dict[str, Path]) -> dict[str, str]:
        found = {}
        for name in names:
            directory = persistent_dir(self.project.workdir, env, name)
            for path in sorted(directory.rglob("*")) if directory.is_dir() else []:
                if path.is_file() and not path.is_symlink() and not path.name.endswith(".tmp"):
                    found[f"{name}/{path.relative_to(directory).as_posix()}"] = sha256_file(path)
        return found

    def compare_pages(self, env: str, scratch: str, scratch_spec, differences: list[str]) -> int:
        """Crawl each warmed role on both balancers and compare page by page."""
        from .page_compare import crawl_and_compare

        lbs = {lb.role: lb for lb in self.store.load_balancers(env)}
        copies = {lb.role: lb for lb in self.store.load_balancers(scratch)}
        masks = [row.id for name in (env, scratch) for row in self.store.servers(name, include_destroyed=True)]
        masks += [f"{lb.address}:{lb.port}" for lb in [*lbs.values(), *copies.values()]]
        compared = 0
        for role in scratch_spec.environments[scratch].roles:
            warmup = scratch_spec.warmup(scratch, role)
            if warmup is None or role not in lbs or role not in copies:
                continue
            here, there = lbs[role], copies[role]
            count, differed = crawl_and_compare(f"http://{here.address}:{here.port}", f"http://{there.address}:{there.port}", warmup, masks)
            compared += count
            differences.extend(f"page {path} of {role}: {why}" for path, why in differed)
        return compared

    def teardown(self, op: Operation, scratch: str) -> None:
        """Everything of the scratch copy goes: servers, balancers, data, secrets and the
        record of their hashes."""
        cleanup(self.engine, op, scratch)
        shutil.rmtree(persistent_dir(self.project.workdir, scratch, "any").parent, ignore_errors=True)  # all of its directories
        shutil.rmtree(self.secrets_dir(scratch), ignore_errors=True)
        self.store.save_secret_hashes(scratch, {})
        self.compute.teardown(scratch, Deadline(60, f"teardown of {scratch}"))
