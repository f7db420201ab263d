"""A project: its spec file, its `.phoenix/` folder, its state store, its drivers and secrets."""

from __future__ import annotations

from pathlib import Path

from .. import drivers
from ..boot.secrets import SecretResolver
from ..spec import LoadedSpec, load_spec, parse_spec
from ..state import StateStore
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
        self.store = StateStore(self.workdir / "state.db")
        try:
            self.store.claim(self.dir)
        except BaseException:
            self.store.close()
            raise
        self.compute = drivers.compute_driver(provider, self.workdir, self.spec.project, self.spec.provider)
        self.load_balancers = drivers.load_balancer_driver(provider, self.workdir, self.spec.project, self.spec.provider)
        self.secrets = SecretResolver(self.loaded, self.workdir)

    @classmethod
    def from_release(cls, current: "Project", spec_text: str) -> "Project":
        """The same project (state, drivers, secrets key) with the spec a release was made from."""
        old = cls.__new__(cls)
        old.__dict__.update(current.__dict__)
        old.loaded = parse_spec(spec_text, current.loaded.path, current.loaded.path.name)
        old.spec = old.loaded.spec
        old.secrets = SecretResolver(old.loaded, current.workdir)
        return old

    def close(self) -> None:
        self.compute.close()
        self.load_balancers.close()
        self.store.close()
