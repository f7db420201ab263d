"""Who the local provider's processes run as: least privilege when Phoenix runs as root.

A spec is code, but a server is not Phoenix: when `phoenix` runs as root, each environment's
servers run as an unprivileged uid of their own (derived from the project and the
environment, so no account has to exist: the kernel only needs a number) and HAProxy drops
to `nobody` once it has bound its ports. Phoenix's own state (`state.db`, the secrets key,
images, logs, balancers) stays root's and 0600/0700; a server owns only its own root and
its environment's persistent directories, so a `ci` server can read neither production's
secrets nor Phoenix's. `provider.server_user: self` keeps the old behaviour (servers run as
whoever runs `phoenix`)."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path

UID_BASE, UID_SPAN = 600_000, 100_000  # far above the ranges distributions give accounts
NOBODY = 65534


@dataclass(frozen=True)
class RunAs:
    uid: int
    gid: int

    def popen(self) -> dict:
        """Keyword arguments for subprocess: this uid and gid, no supplementary groups."""
        return {"user": self.uid, "group": self.gid, "extra_groups": []}

    def own(self, top: Path) -> None:
        """Give a tree to this uid (links themselves, never what they point at)."""
        os.lchown(top, self.uid, self.gid)
        for dirpath, dirnames, filenames in os.walk(top):
            for name in dirnames + filenames:
                os.lchown(os.path.join(dirpath, name), self.uid, self.gid)


def isolating(setting: str) -> bool:
    return setting in ("auto", "isolated") and os.geteuid() == 0


def server_identity(workdir: Path, env: str, setting: str) -> RunAs | None:
    """The uid an environment's servers run as, or None: as whoever runs phoenix."""
    if not isolating(setting):
        return None
    digest = hashlib.sha256(f"{workdir.resolve()}\0{env}".encode()).hexdigest()
    uid = UID_BASE + int(digest, 16) % UID_SPAN
    return RunAs(uid, uid)


def balancer_identity(setting: str) -> RunAs | None:
    return RunAs(NOBODY, NOBODY) if isolating(setting) else None


def private_dir(path: Path, mode: int = 0o700) -> Path:
    """A folder of Phoenix's own (0700), or one servers may pass through without listing (0711)."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, mode)
    return path


def unreachable_by_others(path: Path, folder: bool = False) -> Path | None:
    """The first folder on the way to `path` that other users cannot pass through (or `path`
    itself: a program they cannot run, a folder they cannot pass): where an unprivileged
    server would be stopped."""
    for candidate in dict.fromkeys([Path(path).absolute(), Path(path).resolve()]):  # the link, then what it points at
        for parent in reversed(candidate.parents):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                return parent
    mode = os.stat(path).st_mode
    needed = stat.S_IXOTH if folder else stat.S_IXOTH | stat.S_IROTH
    return None if mode & needed == needed else Path(path)
