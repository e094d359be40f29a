"""A benchmark whose subject fails reports the failure, prints no figure and fails itself.

The subjects here are tiny stand-in commands, not a real daemon over a million jobs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import types
from pathlib import Path

import pytest

import bench.__main__ as bench_main
from bench import memory
from bench.common import BenchFailed, subject_failure

FIGURES = {"peak_rss_mb", "last_rss_mb", "rss_mb_over_time"}


def subject(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(quick=True, out=str(tmp_path))


@pytest.mark.parametrize(
    ("exit_code", "ran_s", "verdict"),
    [
        (0, 30.2, None),
        (1, 12.0, 1),
        (3, 31.0, 3),
        (-9, 5.0, 137),
        (0, 12.0, 1),  # exited cleanly, but before the measured period ended
        (None, 60.0, 1),  # never exited
    ],
)
def test_a_subject_run_counts_only_if_it_exits_0_after_the_whole_period(
    exit_code: int | None, ran_s: float, verdict: int | None
) -> None:
    failed = subject_failure(exit_code, ran_s, 30.0)
    assert (failed[0] if failed else None) == verdict


async def test_a_subject_that_exits_1_gives_no_figure() -> None:
    outcome = await memory.watch(subject("import sys, time; time.sleep(0.3); sys.exit(1)"), {}, seconds=2.0)
    assert outcome["exit_code"] == 1 and "exited 1" in outcome["failure"]
    assert not FIGURES & set(outcome)


async def test_a_subject_that_stops_early_with_exit_0_gives_no_figure() -> None:
    outcome = await memory.watch(subject("print('bye')"), {}, seconds=2.0)
    assert outcome["subject_exit_code"] == 0 and outcome["exit_code"] == 1
    assert "before the 2 s period ended" in outcome["failure"]
    assert outcome["last_lines"] == ["bye"]
    assert not FIGURES & set(outcome)


async def test_a_subject_that_runs_the_whole_period_gives_figures() -> None:
    outcome = await memory.watch(
        subject("import time; x = bytearray(8 << 20); time.sleep(1.2)"), {}, seconds=1.0
    )
    assert "failure" not in outcome and outcome["exit_code"] == 0
    assert outcome["peak_rss_mb"] >= 8


def test_the_report_prints_no_figure_for_a_failed_run_and_fails_with_its_code(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    failed = {
        "exit_code": 1,
        "ran_s": 12.1,
        "failure": "subject exited 1 after 12.1 s of 30 s",
        "last_lines": ["ExceptionGroup: unhandled errors"],
        "backlog": 1_000_000,
    }
    with pytest.raises(BenchFailed) as caught:
        memory.report(args(tmp_path), {"stale": failed}, 1_000_000, 30.0, 10.0)
    assert caught.value.exit_code == 1
    out = capsys.readouterr().out
    assert "FAILED 1,000,000 stale: subject exited 1" in out
    assert "30.0" not in out and "peak RSS" not in out  # no table, no period it did not run
    written = json.loads((tmp_path / "memory.json").read_text())
    assert written["exit_code"] == 1 and written["table"]["rows"] == []
    assert not FIGURES & set(written["scenarios"]["stale"])


def test_python_m_bench_exits_with_the_failed_benchmarks_code(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ran: list[str] = []

    def fake(name: str, code: int) -> types.ModuleType:
        module = types.ModuleType(name)

        async def run(_: argparse.Namespace) -> None:
            ran.append(name)
            if code:
                raise BenchFailed(name, code, "subject exited 3")

        module.run = run  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, name, module)
        return module

    fake("fake_failing", 3)
    fake("fake_passing", 0)
    monkeypatch.setattr(bench_main, "MODULES", {"a": "fake_failing", "b": "fake_passing"})
    code = asyncio.run(bench_main.run(argparse.Namespace(name="all")))
    assert code == 3
    assert ran == ["fake_failing", "fake_passing"]  # a failure does not hide the others
    assert "fake_failing failed (exit 3)" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("code", "early", "reason"),
    [
        (1, True, "exited 1 before the run ended"),
        (0, True, "exited 0 before the run ended"),
        (1, False, "exited 1 when stopped"),
    ],
)
async def test_the_harvest_bench_fails_when_its_in_process_daemon_fails(
    code: int, early: bool, reason: str
) -> None:
    from bench.harvest import HarvesterEngine

    sim = types.SimpleNamespace(url="http://127.0.0.1:1")
    engine = HarvesterEngine("postgresql://127.0.0.1:1/none", sim, 1.0, None)  # type: ignore[arg-type]

    async def daemon() -> int:
        if not early:
            await engine.stop_event.wait()
        return code

    engine.task = asyncio.create_task(daemon())
    await asyncio.sleep(0)
    with pytest.raises(BenchFailed, match=reason) as caught:
        await engine.stop()
    assert caught.value.exit_code == (code or 1)
