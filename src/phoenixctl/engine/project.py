"""A project: its spec file, its `.phoenix/` folder, its state store, its drivers and secrets.

On a shared store (PostgreSQL) every checkout of the project is one more runner of it: the
local provider's files (servers, balancers, images) live in one folder per project on this
machine (`state_location.local_fleet_dir`) instead of each checkout's `.phoenix/`, and the
secrets key is the store's, so every runner computes the same fingerprints."""

from __future__ import annotations

import os
from pathlib import Path

from .. import drivers, heap
from ..boot.secrets import SecretResolver
from ..spec import LoadedSpec, load_spec, parse_spec
from ..state import StateStore
from ..state_location import local_fleet_dir, project_location
from .capabilities import check_provider


class Project:
    """A spec file, its `.phoenix/` directory, its state store and its drivers."""

    def __init__(self, spec_path: str | Path | None = None):
        self.loaded: LoadedSpec = load_spec(spec_path)
        self.spec = self.loaded.spec
        self.dir = self.loaded.project_dir
        self.workdir = self.dir / ".phoenix"
        provider = self.spec.provider.name
        check_provider(self.loaded)
        self.state_location = project_location(self.spec.state.url, self.workdir, self.loaded.path.name)
        shared = self.state_location.shared
        self.store = StateStore(self.state_location, self.spec.project if shared else "")
        try:
            self.store.claim(self.dir)
            if shared and provider == "local":
                self.workdir = local_fleet_dir(self.state_location, self.spec.project)
                self.workdir.mkdir(mode=0o711, parents=True, exist_ok=True)
                os.chmod(self.workdir, 0o711)  # as .phoenix/: servers pass through, nobody lists it
        except BaseException:
            self.store.close()
            raise
        self.compute = drivers.compute_driver(provider, self.workdir, self.spec.project, self.spec.provider)
        self.load_balancers = drivers.load_balancer_driver(provider, self.workdir, self.spec.project, self.spec.provider)
        self.secrets = SecretResolver(self.loaded, self.workdir, self._shared_key() if shared else None)
        heap.settle()  # the command's libraries are loaded: collection resumes (the `phoenix` script defers it)

    def _shared_key(self):
        """The secrets key every runner of a shared store agrees on (made once, kept in it)."""
        import secrets

        return lambda: bytes.fromhex(self.store.shared_value("secret_key", lambda: secrets.token_hex(32)))

    @classmethod
    def from_release(cls, current: "Project", spec_text: str) -> "Project":
        """The same project (state, drivers, secrets key) with the spec a release was made from."""
        old = cls.__new__(cls)
        old.__dict__.update(current.__dict__)
        old.loaded = parse_spec(spec_text, current.loaded.path, current.loaded.path.name)
        old.spec = old.loaded.spec
        old.secrets = SecretResolver(old.loaded, current.workdir, current.secrets.key_source)
        return old

    def close(self) -> None:
        self.compute.close()
        self.load_balancers.close()
        self.store.close()
