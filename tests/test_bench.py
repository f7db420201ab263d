"""The benchmarks' verdicts: an empty measurement is "not measured" and never met, repeats
are reported as a median with their range, and a missed target makes the exit code
non-zero. Only the pure functions of bench/ run here; no server is started."""

from __future__ import annotations

import re
import subprocess
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from phoenixctl.load import LoadStats

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import bake  # noqa: E402
import common  # noqa: E402
import heal  # noqa: E402
import rotation  # noqa: E402
import strategies  # noqa: E402
import warmup  # noqa: E402


@pytest.fixture(autouse=True)
def no_haproxy_needed(monkeypatch):
    """The heading asks haproxy for its version; these tests need no haproxy."""
    real_run = subprocess.run

    def run(argv, *args, **kwargs):
        if argv[:2] == ["haproxy", "-v"]:
            return subprocess.CompletedProcess(argv, 0, stdout="HAProxy version test\n", stderr="")
        return real_run(argv, *args, **kwargs)

    monkeypatch.setattr(common.subprocess, "run", run)


def load_stats(samples: list[tuple[float, float, str]], failed: int = 0) -> LoadStats:
    return LoadStats(sent=len(samples) + failed, ok=len(samples), failed=failed, errors=Counter(), samples=samples)


# --- common: spread, judge, verdict, exit code --------------------------------------------


def test_empty_measurement_is_not_measured_and_not_met():
    for values in ([], [None], [None, None, None]):
        s = common.spread(values)
        assert s.median is None and not s.complete
        assert s.format() == common.NOT_MEASURED
        assert common.judge(s, lambda v: True) is None
        assert common.verdict(common.judge(s, lambda v: True)) == "not measured"
    assert common.judge(None, lambda v: True) is None
    assert common.exit_code([None]) == 1
    assert common.exit_code([True, None]) == 1
    assert common.exit_code([]) == 1  # no target judged at all: nothing was shown to be met


def test_median_and_range_of_repeats():
    s = common.spread([3.0, 1.0, 2.0])
    assert (s.median, s.low, s.high, s.measured, s.runs) == (2.0, 1.0, 3.0, 3, 3)
    assert s.format() == "2.00 (1.00–3.00)"
    assert s.format(0, 1000) == "2000 (1000–3000)"
    assert s.format(1, show_range=False) == "2.0"
    assert common.spread([0.5]).format() == "0.50"
    assert common.judge(s, lambda v: v < 2.5) is True  # on the median, not the worst run
    assert common.judge(s, lambda v: v < 1.5) is False


def test_partly_measured_repeats_are_shown_and_not_judged():
    s = common.spread([1.0, None, 3.0])
    assert s.median == 2.0 and not s.complete
    assert s.format() == "2.00 (1.00–3.00; 2 of 3 runs measured)"
    assert common.judge(s, lambda v: True) is None


def test_exit_code_non_zero_when_a_target_is_missed():
    assert common.exit_code([True, True]) == 0
    assert common.exit_code([True, False]) == 1
    assert common.failed_requests_target(sent=100, failed=0) is True
    assert common.failed_requests_target(sent=100, failed=1) is False
    assert common.failed_requests_target(sent=0, failed=0) is None  # no request sent: nothing measured


# --- strategies ----------------------------------------------------------------------------


def strategy_runs(repeat: int) -> list[dict]:
    runs = []
    for attempt in range(repeat):
        for index, strategy in enumerate(strategies.STRATEGIES):
            start = 100.0 * (attempt * 3 + index)
            runs.append(
                {"strategy": strategy, "version": f"2.{index}.{attempt}", "deploy": 2.0 + attempt, "rollback": 0.5 + attempt, "rollback_start": start}
            )
    return runs


def test_strategies_rollback_without_new_build_answer_is_not_measured():
    runs = strategy_runs(1)
    # the rolling and canary runs' new builds answer after the rollback started; blue-green's never does
    samples = [(r["rollback_start"] + 0.1, 0.2, r["version"]) for r in runs if r["strategy"] != "blue-green"]
    samples += [(r["rollback_start"] - 1.0, 0.01, r["version"]) for r in runs]  # before the rollback: not counted
    stats = load_stats(samples)
    assert strategies.rollback_seen(stats, runs[1]) is None
    assert strategies.rollback_seen(stats, runs[0]) == pytest.approx(0.3)
    lines, targets = strategies.report(runs, stats, 150, "5s", 1)
    text = "\n".join(lines)
    assert "| blue-green | 2.00 | 0.50 | not measured |" in text
    assert "**not measured** s seen by clients" in text and "(not measured)." in text
    assert targets == [True, None]
    assert common.exit_code(targets) == 1


def test_strategies_median_and_range_of_repeats():
    runs = strategy_runs(3)
    seen = {0: 0.3, 1: 0.1, 2: 0.2}  # blue-green's rollback as clients saw it, per attempt
    samples = [(r["rollback_start"], seen[int(r["version"].rsplit(".", 1)[1])], r["version"]) for r in runs]
    lines, targets = strategies.report(runs, load_stats(samples), 150, "5s", 3)
    text = "\n".join(lines)
    assert "| blue-green | 3.00 (2.00–4.00) | 1.50 (0.50–2.50) | 0.20 (0.10–0.30) |" in text
    assert targets == [True, True]


def test_strategies_exit_non_zero_when_a_target_is_missed():
    runs = strategy_runs(3)
    slow = [(r["rollback_start"], 2.5, r["version"]) for r in runs]  # blue-green seen for 2.5 s: over 2
    assert strategies.report(runs, load_stats(slow), 150, "5s", 3)[1] == [True, False]
    fast = [(r["rollback_start"], 0.1, r["version"]) for r in runs]
    assert strategies.report(runs, load_stats(fast, failed=1), 150, "5s", 3)[1] == [False, True]


# --- warm-up -------------------------------------------------------------------------------


def warmup_stats(ratios: dict[tuple[bool, int], float | None]) -> tuple[list[dict], LoadStats]:
    """Runs whose steady p95 is 10 ms and whose swap p95 is ratio x that (None: no request)."""
    runs, samples = [], []
    for index, ((warm, _), ratio) in enumerate(ratios.items()):
        t = 1000.0 * index
        runs.append({"warm": warm, "steady": (t, t + 10), "swap": (t + 10, t + 20), "rotation_s": 1.0 + index, "replaced": 3})
        samples += [(t + 1 + i * 0.1, 0.010, "1") for i in range(20)]
        if ratio is not None:
            samples += [(t + 11 + i * 0.1, 0.010 * ratio, "1") for i in range(20)]
    return runs, load_stats(samples)


ARGS = SimpleNamespace(rate=100.0, pages=10, steady=10.0, window=10.0, repeat=3)


def test_warmup_median_of_repeats_decides():
    runs, stats = warmup_stats({(False, 0): 40.0, (True, 0): 1.0, (False, 1): 50.0, (True, 1): 1.1, (False, 2): 45.0, (True, 2): 1.9})
    lines, targets = warmup.report(runs, stats, ARGS)
    text = "\n".join(lines)
    # warm-up on: ratios 1.0, 1.1, 1.9 -> median 1.1 <= 1.2, met although one run was over
    assert "| 1.10 (1.00–1.90) |" in text
    assert "**1.10 (1.00–1.90)x** (met)" in text
    assert targets == [True, True]


def test_warmup_target_missed_and_not_measured():
    runs, stats = warmup_stats({(False, 0): 40.0, (True, 0): 1.5})
    assert warmup.report(runs, stats, ARGS)[1] == [False, True]
    runs, stats = warmup_stats({(False, 0): 40.0, (True, 0): None})  # nothing in the swap window
    lines, targets = warmup.report(runs, stats, ARGS)
    assert targets == [None, True] and common.exit_code(targets) == 1
    assert "**not measuredx**" not in "\n".join(lines)
    assert "(not measured)" in "\n".join(lines)


# --- self-healing --------------------------------------------------------------------------


def heal_run(kill: int, full: float | None, launch: float | None) -> dict:
    return {"kill": kill, "victims": ["frontend-1"] * kill, "detect": 1.0, "full": full, "launch_to_service": launch}


def test_heal_exit_code_follows_targets():
    stats = load_stats([(0.0, 0.01, "1")] * 10)
    lines, targets = heal.report([heal_run(1, 4.0, 1.2), heal_run(3, 3.0, 1.1)], stats, 5.0, 150)
    assert targets == [True, True, True] and common.exit_code(targets) == 0
    _, targets = heal.report([heal_run(1, 7.0, 1.2), heal_run(3, 3.0, 1.1)], stats, 5.0, 150)
    assert targets == [False, True, True] and common.exit_code(targets) == 1
    lines, targets = heal.report([heal_run(1, None, 1.2), heal_run(3, 3.0, None)], stats, 5.0, 150)
    assert targets == [None, None, True] and common.exit_code(targets) == 1
    assert "kill 1: not measured against 6.20 s (not measured)" in "\n".join(lines)
    _, targets = heal.report([heal_run(1, 4.0, 1.2)], load_stats([(0.0, 0.01, "1")], failed=2), 5.0, 150)
    assert targets == [True, False]


# --- rotation ------------------------------------------------------------------------------


def rotation_row(role: str, n: int, wall: float, failed: int = 0) -> dict:
    return {
        "role": role, "n": n, "wall": wall, "critical": wall * 0.9, "batches": 1, "replaced": n, "server_cpu": 0.1 * n,
        "phoenix_cpu_per_server": 0.02, "sent": 100, "failed": failed, "errors": {},
    }


def test_rotation_ratio_target_and_its_absence():
    rows = [rotation_row("static", 1, 0.2), rotation_row("static", 20, 0.25)]
    lines, targets = rotation.markdown(rows, 1, 200)
    text = "\n".join(lines)
    assert targets == [True, True]
    assert "static 20 ms at N=1, static 20 ms at N=20" in text  # Phoenix's own CPU per replaced server, from the run
    rows = [rotation_row("static", 1, 0.2), rotation_row("static", 20, 1.0)]
    assert rotation.markdown(rows, 1, 200)[1] == [True, False]
    rows = [rotation_row("static", 1, 0.2), rotation_row("static", 5, 0.25)]  # 20 not run: the target not measured
    lines, targets = rotation.markdown(rows, 1, 200)
    assert targets == [True, None] and common.exit_code(targets) == 1
    assert "not both run (not measured)" in "\n".join(lines)


# --- bakes ---------------------------------------------------------------------------------


def bake_runs(changed: list[float], hits: bool = True, shares: list[float | None] = (0.03, 0.04, 0.02)) -> tuple[dict, dict]:
    bakes = {"full": common.spread([3.0] * len(changed)), "changed": common.spread(changed), "deps_mb": 52.0, "hits": hits,
             "wheels_mb": 20.0, "cli": None, "cli_output": ""}
    deploys = {"total": common.spread([2.0] * len(shares)), "bake": common.spread([0.1] * len(shares)), "share": common.spread(shares)}
    return bakes, deploys


def test_bake_targets_met_missed_and_not_measured():
    lines, targets = bake.report(*bake_runs([0.3, 0.4, 1.5]), 3)
    assert targets == [True, True] and common.exit_code(targets) == 0  # the median decides
    assert "**0.40 (0.30–1.50) s** (met)" in "\n".join(lines)
    assert bake.report(*bake_runs([1.2, 1.1, 1.3]), 3)[1] == [False, True]
    assert bake.report(*bake_runs([0.3, 0.3, 0.3], hits=False), 3)[1] == [False, True]  # fast but no cache hit: not the target
    lines, targets = bake.report(*bake_runs([0.3], shares=[None]), 1)
    assert targets == [True, None] and common.exit_code(targets) == 1
    assert bake.report(*bake_runs([0.3], shares=[0.06]), 1)[1] == [True, False]


# --- the heading and make bench ------------------------------------------------------------


def git(directory: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=directory, check=True, capture_output=True, text=True
    ).stdout.strip()


def test_heading_states_the_commit(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench" / "RESULTS.md").write_text("results\n")
    (tmp_path / "code.py").write_text("x = 1\n")
    git(tmp_path, "add", ".")
    git(tmp_path, "commit", "-q", "-m", "one")
    short = git(tmp_path, "rev-parse", "--short", "HEAD")
    assert common.describe_commit(tmp_path / "bench") == short
    (tmp_path / "untracked.py").write_text("")  # untracked files are not the measured code
    (tmp_path / "bench" / "RESULTS.md").write_text("new results\n")  # the benchmarks' own output
    assert common.describe_commit(tmp_path / "bench") == short
    (tmp_path / "code.py").write_text("x = 2\n")
    assert common.describe_commit(tmp_path / "bench") == f"{short} + uncommitted changes"
    assert any(line.startswith("Commit: ") for line in common.heading("T"))


def test_make_bench_runs_every_benchmark():
    makefile = (BENCH.parent / "Makefile").read_text()
    listed = set(re.search(r"^BENCHMARKS\s*:=\s*(.*)$", makefile, re.M).group(1).split())
    # profile_*.py are tools to find where time goes (no target, nothing written): not run by `make bench`
    scripts = {path.stem for path in BENCH.glob("*.py") if not path.stem.startswith("profile_")} - {"common"}
    assert listed == scripts
    assert "$(BENCHMARKS)" in makefile.split("\nbench:", 1)[1].split("\n\n", 1)[0]
