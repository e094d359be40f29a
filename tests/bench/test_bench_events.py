"""The quick events benchmark produces its table and JSON, on the documented run times and on another
shape, and a failing daemon fails it.

Only the shape is checked: benchmark figures are measurements, never timed assertions.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import events
from bench.common import BenchFailed
from harvester.daemon import run as daemon
from harvester.sim import SimSettings

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "jobs",
    "finished",
    "requests_per_finished",
    "list_pages",
    "stream_connections",
    "results_202",
    "latency_p50_s",
    "latency_p95_s",
    "served_429",
    "worst_window_60s",
    "pace",
}


def test_every_load_shows_the_account_s_other_jobs_and_the_same_schedule_for_every_engine() -> None:
    for load in (*events.LOADS, *events.QUICK):
        arrivals = events.schedule(load, 7)
        ours = sum(a.ours for a in arrivals)
        assert 0 < ours < len(arrivals)
        if load in events.LOADS:  # the quick loads are too short for the share to settle
            assert 0.2 < (len(arrivals) - ours) / ours < 0.4
        assert arrivals == events.schedule(load, 7)
        assert [a.at_s for a in arrivals] == sorted(a.at_s for a in arrivals)


def test_the_documented_shape_plans_the_runs_it_always_ran_and_a_shape_is_keyed_by_its_name() -> None:
    budget = events.QUICK[1]
    documented = events.plan_runs(events.QUICK, budget, True, (events.DOCUMENTED,))
    assert [(key, engine, reserve) for key, _, engine, reserve, _ in documented] == [
        *((load.name, e, 0.0) for load in events.QUICK for e in load.engines),
        ("budget_reserve", "sse", events.RESERVE_PER_MIN),
    ]
    shaped = events.plan_runs(events.QUICK, budget, False, ("documented", "heavy-tailed"))
    assert [key for key, *_ in shaped][-3:] == ["budget@heavy-tailed"] * 3
    assert {shape for *_, shape in shaped} == {"documented", "heavy-tailed"}


def test_every_shape_is_valid_simulator_settings_and_documented_is_its_default() -> None:
    assert events.SHAPES[events.DOCUMENTED] == {}
    for overrides in events.SHAPES.values():
        described = SimSettings(**overrides).run_times().describe()
        assert {key: described[key] for key in overrides} == overrides
    assert events.parse_shapes("heavy-tailed, documented,heavy-tailed") == ("heavy-tailed", "documented")
    for bad in ("", "pareto", "documented,pareto"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected one or more of documented,"):
            events.parse_shapes(bad)


@pytest.mark.slow
def test_quick_events_bench_writes_the_table_and_json(pg_server: str, tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and the bench package
        [sys.executable, "-m", "bench", "events", "--quick", "--dsn", pg_server, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "req/finished" in done.stdout and "stream conns" in done.stdout
    report = json.loads((tmp_path / "events.json").read_text())
    assert report["benchmark"] == "events" and report["quick"] is True and report["exit_code"] == 0
    assert set(report["loads"]) == {"light", "budget", "budget_reserve"}
    for name in ("light", "budget"):
        for engine in events.ENGINES:
            figures = report["loads"][name][engine]
            assert set(figures) >= FIGURES, FIGURES - set(figures)
            assert figures["jobs"] > 0 and figures["requests_per_finished"] is not None
    assert report["loads"]["light"]["sse"]["stream_connections"] >= 1
    assert report["loads"]["light"]["off"]["stream_connections"] == 0
    assert report["loads"]["budget_reserve"]["reserve_per_minute"] == events.RESERVE_PER_MIN
    assert len(report["table"]["rows"]) == 7
    assert [row[0] for row in report["table"]["rows"]][:3] == ["light / sse", "light / off", "light / seed"]
    assert (
        report["conditions"]["shapes"] == {"documented": {}}
        and report["command"] == "python -m bench events --quick"
    )
    assert report["checks"]


@pytest.mark.slow
def test_quick_events_bench_runs_a_load_on_another_run_time_shape(pg_server: str, tmp_path: Path) -> None:
    argv = [
        "--quick",
        "--loads",
        "budget",
        "--shape",
        "heavy-tailed-half",
        "--dsn",
        pg_server,
        "--out",
        str(tmp_path),
    ]
    done = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and the bench package
        [sys.executable, "-m", "bench", "events", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "budget@heavy-tailed-half / sse" in done.stdout
    report = json.loads((tmp_path / "events.json").read_text())
    assert report["command"] == "python -m bench events --quick --loads budget --shape heavy-tailed-half"
    assert report["conditions"]["shapes"] == {"heavy-tailed-half": events.SHAPES["heavy-tailed-half"]}
    assert set(report["loads"]) == {"budget@heavy-tailed-half"}
    entry = report["loads"]["budget@heavy-tailed-half"]
    assert entry["shape"] == "heavy-tailed-half" and entry["load"]["name"] == "budget"
    for engine in events.ENGINES:
        assert set(entry[engine]) >= FIGURES and entry[engine]["jobs"] > 0
    labels = [row[0] for row in report["table"]["rows"]]
    assert labels == [f"budget@heavy-tailed-half / {engine}" for engine in events.ENGINES]
    assert {check["load"] for check in report["checks"]} == {"budget@heavy-tailed-half"}


@pytest.mark.slow
async def test_a_daemon_that_stops_early_fails_the_bench_and_prints_no_figure_for_it(
    pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    async def dies(*_: Any, **__: Any) -> int:
        await asyncio.sleep(0.2)
        return 1

    monkeypatch.setattr(daemon, "run", dies)
    args = argparse.Namespace(quick=True, dsn=pg_server, out=str(tmp_path), speed=None, seed=7, loads="light")
    with pytest.raises(BenchFailed) as caught:
        await events.run(args)
    assert caught.value.exit_code == 1 and caught.value.name == "events"
    out = capsys.readouterr().out
    assert "FAILED light / sse: the daemon exited 1 before the run ended (no figure)" in out
    assert "FAILED light / off" in out
    assert "light / seed" in out  # the baseline still ran and is shown
    report = json.loads((tmp_path / "events.json").read_text())
    assert report["exit_code"] == 1
    for engine in ("sse", "off"):
        assert report["loads"]["light"][engine]["exit_code"] == 1
        assert not FIGURES & set(report["loads"]["light"][engine])
    assert [row[0] for row in report["table"]["rows"]] == ["light / seed"]
    assert all(check["engine"] != "sse" for check in report["checks"])
