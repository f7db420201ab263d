"""The engine for one project: its parts wired together once, sharing the command's options."""

from __future__ import annotations

import threading

from .backups import Backups
from .balancers import Balancers
from .converge import Converger
from .in_place import InPlace
from .drill import Drill
from .inspect import Inspector
from .lifecycle import Lifecycle
from .members import SharedMembers
from .operation import Reporter
from .project import Project
from .rebuild import Rebuilder
from .releases import Releases
from .ttl import TimeToLive


class Engine:
    """A project with the parts of the engine wired to it: `lifecycle` (one server, launch to
    destroy), `members` (the balancers' members as seen), `inspector` (what is, against what
    should be), `balancers`, `releases`, `converger` (an environment to its plan), `in_place`
    (deploys to in-place environments). A release's older spec gets an engine of its own
    (`for_project`), sharing the store, the drivers, the members seen and the options."""

    def __init__(
        self, project: Project, reporter: Reporter | None = None, lock_timeout: float = 0.0, discard_state: bool = False,
        members: SharedMembers | None = None,
    ):
        self.project = project
        self.reporter = reporter or Reporter()
        self.lock_timeout = lock_timeout
        self.discard_state = discard_state  # retire servers even when they hold state written on them
        self.guards_lock = threading.Lock()
        self.guards: dict[tuple[str, str], threading.Lock] = {}  # per balancer: traffic guard checks
        self.served_releases: dict[tuple, str] = {}  # (operation, env, role, fingerprint) -> the release new servers serve
        self.members = members or SharedMembers(project.load_balancers)  # no read of every member per server
        self.lifecycle = Lifecycle(self)
        self.inspector = Inspector(self)
        self.balancers = Balancers(self)
        self.releases = Releases(self)
        self.converger = Converger(self)
        self.in_place = InPlace(self)  # in-place environments: servers updated where they stand
        self.time_to_live = TimeToLive(self)  # from a build's bake to users, per environment
        self.backups = Backups(self)  # the persistent layer's backups (engine/backup_store.py)
        self.rebuilder = Rebuilder(self)  # an environment from nothing, from its newest good backup
        self.drill = Drill(self)  # a rebuild rehearsed on a scratch copy

    def for_project(self, project: Project) -> "Engine":
        """The same command (reporter, options) on another spec of the same project."""
        return Engine(project, self.reporter, self.lock_timeout, self.discard_state, self.members)
