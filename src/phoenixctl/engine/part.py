"""What every part of the engine shares: the project, its drivers and store, where to report,
the command's options, and the provider's pace for polling. Parts reach each other through
the engine that wired them (`engine.lifecycle`, `engine.inspector`, ...), never by import."""

from __future__ import annotations

from typing import Callable

from ..deadline import Deadline
from .operation import Reporter


class Part:
    """A part of the engine (see wiring.Engine): reads the project through the shared engine."""

    def __init__(self, engine):
        self.engine = engine

    @property
    def project(self):
        return self.engine.project

    @property
    def spec(self):
        return self.engine.project.spec

    @property
    def store(self):
        return self.engine.project.store

    @property
    def compute(self):
        return self.engine.project.compute

    @property
    def lbs(self):
        return self.engine.project.load_balancers

    @property
    def reporter(self) -> Reporter:
        return self.engine.reporter

    def poll(self, deadline: Deadline, check: Callable, interval: float, max_interval: float):
        """`deadline.poll`, paced for the provider: a cloud API is not asked many times a second
        (its health checks take seconds anyway, and throttling would slow everything)."""
        pace = max(self.compute.poll_interval, self.lbs.poll_interval)
        return deadline.poll(check, interval=max(interval, pace), max_interval=max(max_interval, pace * 2.5))
