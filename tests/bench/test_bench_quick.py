"""The quick harvest benchmark runs end to end and writes the figures docs/performance.md quotes.

Only the shape is checked: benchmark figures are measurements, never timed assertions.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = {
    "harvested",
    "finished",
    "requests",
    "requests_per_harvested",
    "requests_per_finished",
    "served_429",
    "worst_window_60s",
    "finished_per_min",
    "pace",
    "latency_p50_s",
    "latency_p95_s",
    "drain_s",
    "cut_off",
}


@pytest.mark.slow
def test_quick_harvest_bench_writes_both_engines_per_scenario(pg_server: str, tmp_path: Path) -> None:
    done = subprocess.run(  # noqa: S603 - fixed argv: this interpreter and the bench package
        [sys.executable, "-m", "bench", "harvest", "--quick", "--dsn", pg_server, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "req/harvested" in done.stdout
    report = json.loads((tmp_path / "harvest.json").read_text())
    assert report["benchmark"] == "harvest" and report["quick"] is True
    assert set(report["scenarios"]) == {"light", "backlog"}
    for scenario in report["scenarios"].values():
        for engine in ("harvester", "seed"):
            figures = scenario[engine]
            assert set(figures) >= FIGURES, FIGURES - set(figures)
            assert figures["jobs"] > 0 and figures["requests"] > 0
    assert len(report["table"]["rows"]) == 4
