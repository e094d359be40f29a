"""The quick accounts benchmark produces its table and JSON, and a failing replica fails it.

Only the shape is checked: benchmark figures are measurements, never timed assertions.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from bench import accounts
from bench.common import BenchFailed

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "stored_per_min",
    "pace",
    "requests_per_finished",
    "served_429",
    "worst_window_60s",
    "latency_p95_s",
}


def test_each_account_arrives_at_its_own_rate_on_one_schedule() -> None:
    run = next(r for r in accounts.RUNS if r.name == "steady")
    arrivals = accounts.schedule(run, 7)
    assert arrivals == accounts.schedule(run, 7)
    for account in run.accounts:
        count = sum(1 for a in arrivals if a.account == account.name)
        assert 0.85 < count / (account.per_minute * run.minutes) < 1.15


@pytest.mark.slow
def test_quick_accounts_bench_writes_the_table_and_json(pg_server: str, tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and the bench package
        [
            sys.executable,
            "-m",
            "bench",
            "accounts",
            "--quick",
            "--runs",
            "steady,adopt",
            "--dsn",
            pg_server,
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "stored/min" in done.stdout and "jobs adopted" in done.stdout
    report = json.loads((tmp_path / "accounts.json").read_text())
    assert report["benchmark"] == "accounts" and report["exit_code"] == 0 and report["replicas"] == 3
    steady = report["runs"]["steady"]["accounts"]
    assert set(steady) == {"a", "b", "c"}
    for figures in steady.values():
        assert set(figures) >= FIGURES and figures["stored"] > 0
    assert report["runs"]["adopt"]["accounts"]["d"]["adopted"] > 0
    assert report["checks"]


@pytest.mark.slow
async def test_a_replica_that_exits_non_zero_fails_the_bench_with_no_figure(
    pg_server: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = accounts.Run(
        "steady", accounts.THREE, minutes=0.5, tail_s=10, extra_env={"HARVESTER_RATE_LIMIT__BURST": "0"}
    )
    monkeypatch.setattr(accounts, "QUICK", (broken,))
    args = argparse.Namespace(
        quick=True, dsn=pg_server, out=str(tmp_path), seed=7, runs="", accounts_speed=None
    )
    with pytest.raises(BenchFailed) as caught:
        await accounts.run(args)
    assert caught.value.exit_code == 2 and caught.value.name == "accounts"
    out = capsys.readouterr().out
    assert re.search(r"FAILED steady: replica \d exited 2 before the run ended", out)
    assert "stored/min" not in out
    report = json.loads((tmp_path / "accounts.json").read_text())
    assert report["exit_code"] == 2 and report["table"]["rows"] == [] and report["checks"] == []
    assert not FIGURES & set(report["runs"]["steady"])
