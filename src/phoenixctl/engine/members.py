"""What each balancer's members look like, without reading the whole fleet per server.

A balancer answers for all its members at once (HAProxy's `show stat`, a target group's
health). Asked per server — "am I UP yet?", "is another one still serving?" — that makes a
rotation of N servers read N members N times. Here:

- a server waiting on its own member asks for that member alone (`member`: the driver's
  `member`, one member where the driver can ask for one);
- the traffic guard's "is another member UP?" is a count kept over one shared read of the
  whole balancer, brought up to date with every member seen since and every change Phoenix
  made itself (a drain, a removal), and read afresh only when older than `stale` seconds;
  a member Phoenix drained never shows UP in it again, even from a read under way."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

from ..drivers.base import LoadBalancerDriver, MemberState


class View:
    """One balancer's members: one full read, then what was seen and done since."""

    def __init__(self, members: dict[str, MemberState], at: float):
        self.at = at  # when the read began
        self.members = members
        self.up = sum(1 for member in members.values() if member.up)
        self.changed: dict[str, float] = {}  # name -> when it was last seen or changed since

    def set(self, name: str, member: MemberState | None) -> None:
        self.changed[name] = time.monotonic()
        before = self.members.pop(name, None) if member is None else self.members.get(name)
        self.up -= 1 if before is not None and before.up else 0
        if member is not None:
            self.members[name] = member
            self.up += 1 if member.up else 0


class SharedMembers:
    """Every balancer's view (by environment and role), shared by the threads of a command."""

    def __init__(self, lbs: LoadBalancerDriver, stale: float = 1.0):
        self.lbs = lbs
        self.stale = stale
        self._lock = threading.Lock()
        self._views: dict[tuple[str, str], View] = {}
        self._reading: dict[tuple[str, str], threading.Lock] = {}
        self._drained: dict[tuple[str, str], set[str]] = {}  # drained by Phoenix, not yet removed

    def member(self, lb, name: str) -> MemberState | None:
        """`name` as the balancer has it now (None: not a member), noted in the view."""
        member = self.lbs.member(lb.handle_data, name)
        key = (lb.env, lb.role)
        with self._lock:
            if member is not None and member.up and name in self._drained.get(key, ()):
                member = replace(member, status="DRAIN")  # an answer from before the drain took
            view = self._views.get(key)
            if view is not None:
                view.set(name, member)
        return member

    def any_other_up(self, lb, name: str) -> bool:
        """Another member than `name` takes traffic."""
        view = self._view(lb)
        with self._lock:
            own = view.members.get(name)
            return view.up - (1 if own is not None and own.up else 0) > 0

    def drained(self, lb, name: str) -> None:
        """Phoenix drained `name`: from now on it never shows UP."""
        key = (lb.env, lb.role)
        with self._lock:
            self._drained.setdefault(key, set()).add(name)
            view = self._views.get(key)
            if view is not None and name in view.members:
                view.set(name, replace(view.members[name], status="DRAIN"))

    def removed(self, lb, name: str) -> None:
        key = (lb.env, lb.role)
        with self._lock:
            self._drained.get(key, set()).discard(name)
            view = self._views.get(key)
            if view is not None:
                view.set(name, None)

    def forget(self, lb, enabled: list[str] = ()) -> None:
        """Members changed at once (a switch; `enabled` take traffic again): read afresh next."""
        key = (lb.env, lb.role)
        with self._lock:
            self._views.pop(key, None)
            self._drained.get(key, set()).difference_update(enabled)

    def _view(self, lb) -> View:
        key = (lb.env, lb.role)
        with self._lock:
            reading = self._reading.setdefault(key, threading.Lock())
        with reading:  # one thread reads; the others waiting here then take its view
            view = self._views.get(key)
            if view is not None and time.monotonic() - view.at <= self.stale:
                return view
            started = time.monotonic()
            members = dict(self.lbs.members(lb.handle_data))  # ours to change: a driver may answer with a read-only view
            with self._lock:  # a drain made while this read was under way must not look UP in it
                for name in self._drained.get(key, ()):
                    if name in members:
                        members[name] = replace(members[name], status="DRAIN")
                fresh = View(members, started)
                old = self._views.get(key)
                for name, at in (old.changed.items() if old is not None else ()):
                    if at >= started:  # seen while the read was under way: newer than the read
                        fresh.set(name, old.members.get(name))
                view = self._views[key] = fresh
            return view
