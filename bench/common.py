"""What every benchmark shares: the heading of its RESULTS.md section and the writing of it,
the commit it measured, medians with their spread, and verdicts on named targets.

A target is met, NOT met, or not measured (nothing was seen to measure it with); a
benchmark's exit code is 0 only when every target it names was met."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import time
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

NOT_MEASURED = "not measured"
RESULTS = "bench/RESULTS.md"  # the benchmarks' output: never "uncommitted changes" to what was measured


def describe_commit(directory: Path | None = None) -> str:
    """The commit checked out in `directory` (`git rev-parse --short HEAD`), with
    "+ uncommitted changes" when tracked files other than bench/RESULTS.md differ from it."""
    directory = directory or Path(__file__).resolve().parent
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=directory, capture_output=True, text=True, timeout=30
        )
        if head.returncode != 0:
            return "unknown (not a git checkout)"
        # `:(top)` pathspecs are relative to the top of the work tree, whichever folder git runs in
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ":(top)", f":(top,exclude){RESULTS}"],
            cwd=directory, capture_output=True, text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "unknown (git did not answer)"
    commit = head.stdout.strip()
    if status.returncode != 0:
        return f"{commit} + unknown changes (git status failed)"
    return commit + (" + uncommitted changes" if status.stdout.strip() else "")


# What was measured: the code as it stood when the benchmark started, not when it ended.
MEASURED_ON = describe_commit()


def heading(title: str) -> list[str]:
    """Title, the command that produced the numbers, the commit and the machine it ran on."""
    haproxy = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout.splitlines()[0]
    command = "python " + " ".join([f"bench/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    return [
        f"## {title}",
        "",
        f"Command: `{command}`  ",
        f"Commit: {MEASURED_ON}  ",
        f"Run: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, {haproxy}  ",
    ]


@dataclass(frozen=True)
class Spread:
    """The median of repeated measurements with their range; `None` values are runs that
    measured nothing."""

    median: float | None
    low: float | None
    high: float | None
    measured: int
    runs: int

    @property
    def complete(self) -> bool:
        """Every run measured something (and there was at least one)."""
        return self.runs > 0 and self.measured == self.runs

    def format(self, digits: int = 2, scale: float = 1.0, show_range: bool = True) -> str:
        """"1.50 (1.20–1.90)": the median (min–max); "not measured" when no run measured it."""
        if self.median is None:
            return NOT_MEASURED
        text = f"{self.median * scale:.{digits}f}"
        if not show_range:
            return text
        if self.runs > 1:
            detail = f"{self.low * scale:.{digits}f}–{self.high * scale:.{digits}f}"
            if not self.complete:
                detail += f"; {self.measured} of {self.runs} runs measured"
            text += f" ({detail})"
        elif not self.complete:
            text += f" ({self.measured} of {self.runs} runs measured)"
        return text


def spread(values: Iterable[float | None]) -> Spread:
    values = list(values)
    measured = [v for v in values if v is not None]
    if not measured:
        return Spread(None, None, None, 0, len(values))
    return Spread(statistics.median(measured), min(measured), max(measured), len(measured), len(values))


def judge(value: Spread | float | None, met: Callable[[float], bool]) -> bool | None:
    """Whether `met` holds for the value (a Spread: its median); None when it was not
    measured — a Spread counts only when every run measured it."""
    if isinstance(value, Spread):
        if not value.complete:
            return None
        value = value.median
    if value is None:
        return None
    return bool(met(value))


def failed_requests_target(sent: int, failed: int) -> bool | None:
    """Zero failed requests, measured only when requests were sent."""
    return judge(None if sent == 0 else failed, lambda f: f == 0)


def verdict(met: bool | None) -> str:
    return NOT_MEASURED if met is None else ("met" if met else "NOT met")


def exit_code(targets: Iterable[bool | None]) -> int:
    """0 when every named target was met; not measured counts as not met."""
    targets = list(targets)
    return 0 if targets and all(t is True for t in targets) else 1


def publish(lines: list[str], name: str, path: Path | None) -> None:
    """Print the section; with `path`, replace this benchmark's section of RESULTS.md."""
    section = "\n".join(lines)
    print(section)
    if path is None:
        return
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    text = (
        path.read_text()
        if path.exists()
        else "# Benchmark results\n\nEach section is written by its benchmark and states the commit, the command and the machine it was measured on.\n\n"
    )
    block = f"{start}\n{section}{end}\n"
    if start in text:
        text = text[: text.index(start)] + block + text[text.index(end) + len(end) + 1 :]
    else:
        text += block
    path.write_text(text)


@contextmanager
def scratch(prefix: str) -> Iterator[Path]:
    """A temporary project folder, removed afterwards, that servers running as an unprivileged
    uid (phoenix as root) may pass through (0711: nothing listed)."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        os.chmod(tmp, 0o711)
        yield Path(tmp)


def compile_phoenix() -> None:
    """Phoenix's bytecode compiled, as pip leaves an installed package: this machine sets
    PYTHONDONTWRITEBYTECODE, so an editable install would otherwise compile every module at
    every command a benchmark times."""
    import compileall

    import phoenixctl

    compileall.compile_dir(Path(phoenixctl.__file__).parent, quiet=1)


def simulated_spec(
    envs: int, servers: int, directory: Path | None = None, roles: tuple[str, ...] = ("web",), max_surge: str = "25%",
    durations: dict | None = None,
) -> Path:
    """A `provider: simulated` project (nothing runs) for control-plane benchmarks: `envs`
    environments named env-000, env-001, ... of `servers` servers per role; `durations` the
    modelled ones (`{"boot": "2s", "health": "1s", "drain": "0s"}`, default zero). Written in
    `directory` (default: a new temporary folder, the caller's to remove); returns its phoenix.yaml."""
    import json

    directory = Path(directory) if directory is not None else Path(tempfile.mkdtemp(prefix="phoenix-simulated-"))
    spec = {
        "project": "bench",
        "provider": {"name": "simulated", **({"simulated": durations} if durations else {})},
        "images": {"app": {"start": "serve"}},
        "roles": {role: {"image": "app", "port": 8080 + n} for n, role in enumerate(roles)},
        "environments": {
            f"env-{n:03d}": {"roles": {role: servers for role in roles}, "rollout": {"max_surge": max_surge}} for n in range(envs)
        },
    }
    path = directory / "phoenix.yaml"
    path.write_text(json.dumps(spec, indent=1))  # JSON is YAML
    return path
