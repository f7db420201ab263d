"""One command's run on one environment: its result, its per-phase timings, where it reports."""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

from ..state import StateStore, utcnow

PHASES = ("bake", "launch", "update", "boot", "health", "warmup", "stage", "canary", "swap", "drain", "destroy")


class Reporter:
    """Where the executor tells what it does; the CLI shows it with rich, tests ignore it."""

    def info(self, message: str) -> None:  # a line worth showing
        pass

    def planned(self, steps: int) -> None:  # more steps to come (progress total)
        pass

    def advanced(self, steps: int = 1) -> None:  # steps done
        pass


@dataclass
class OperationResult:
    id: str
    env: str
    kind: str
    launched: list[str] = field(default_factory=list)
    retired: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    destroyed: list[str] = field(default_factory=list)
    baked: list[str] = field(default_factory=list)
    layers: list[str] = field(default_factory=list)  # per image baked: each layer, a cache hit or built
    seconds: float = 0.0
    paused: bool = False  # a canary in service, waiting for promote or rollback
    recovered: list[str] = field(default_factory=list)  # what recovery found and did first
    refused: list[str] = field(default_factory=list)  # servers a watch pass was not allowed to retire
    updated: list[str] = field(default_factory=list)  # in-place environments: servers updated where they stand
    detail: str = ""  # what a backup, restore, rebuild or drill found: said first in the summary
    logs_kept: list[str] = field(default_factory=list)  # retired servers whose last lines did not reach the aggregator

    @property
    def changed(self) -> bool:
        return bool(self.launched or self.retired or self.removed or self.destroyed or self.recovered or self.updated)

    def summary(self) -> str:
        parts = [f"{len(self.launched)} launched", f"{len(self.retired)} retired"]
        if self.updated:
            parts = [f"{len(self.updated)} updated in place"] + [p for p in parts if not p.startswith("0 ")]
        if self.destroyed:
            parts = [f"{len(self.destroyed)} server(s) destroyed"]
        if self.removed:
            parts.append(f"{len(self.removed)} dead removed")
        if self.baked:
            parts.append(f"{len(self.baked)} image(s) baked")
        if self.layers:
            parts.append(f"layers: {'; '.join(self.layers)}")
        if self.detail:  # a backup, restore, rebuild or drill: what it found first, no zero counts
            parts = [self.detail] + [p for p in parts if not p.startswith("0 ")]
        if self.recovered:
            parts.append(f"recovered: {'; '.join(self.recovered)}")
        if self.logs_kept:
            parts.append(f"logs kept locally: {'; '.join(self.logs_kept)}")
        if self.refused:
            parts.append(f"refused: {', '.join(self.refused)} (state on the server)")
        return ", ".join(parts)


class Operation:
    """One command's run on one environment; records per-phase timings."""

    def __init__(self, store: StateStore, result: OperationResult):
        self.store = store
        self.result = result
        self.id = result.id
        self.final_status = "succeeded"  # or "paused" (a canary waiting for promote/rollback)
        self._lock = threading.Lock()
        self._phases: list[dict] = []
        self._stopped: list = []  # servers retired (stopped) whose last lines are on their way to the aggregator

    def shipping(self, server) -> None:
        """A stopped server whose output the operation waits for before it ends."""
        with self._lock:
            self._stopped.append(server)

    def take_shipping(self) -> list:
        with self._lock:
            stopped, self._stopped = self._stopped, []
        return stopped

    @contextmanager
    def phase(self, name: str, server_id: str | None = None) -> Iterator[None]:
        """Time a phase. Timings are kept in memory and written when the operation ends
        (they are measurements, not the journal: server states are written as they change)."""
        started_at, started = utcnow(), time.monotonic()
        ok = False
        try:
            yield
            ok = True
        finally:
            with self._lock:
                self._phases.append(dict(phase=name, seconds=time.monotonic() - started, server_id=server_id, ok=ok, started_at=started_at))

    def flush_phases(self) -> None:
        with self._lock:
            phases, self._phases = self._phases, []
        self.store.record_phases(self.id, phases)

    def note(self, attribute: str, value: str) -> None:
        with self._lock:
            getattr(self.result, attribute).append(value)
