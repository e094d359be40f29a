"""The chaos driver at small scale, inside ``make test``: the same checks as ``make chaos``.

A few hundred jobs, three daemon processes, a few SIGKILLs, one PostgreSQL restart and every
simulator fault; the driver runs as a subprocess (it starts its own PostgreSQL, which it restarts)
and its JSON report is checked here. Counts only, no timing beyond generous deadlines.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_short_chaos_run_loses_nothing(tmp_path: Path) -> None:
    out = tmp_path / "chaos.json"
    run = subprocess.run(  # noqa: S603 - our own driver, fixed arguments
        [
            sys.executable,
            "-m",
            "bench.chaos",
            "--jobs",
            "240",
            "--kill-interval",
            "1.5",
            "--pg-restarts",
            "fast",
            "--max-seconds",
            "150",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=230,
        check=False,
    )
    assert out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["failures"] == [], run.stdout[-3000:]
    assert report["kills"] >= 3
    assert len(report["pg_restarts"]) == 1
    assert report["lost"] == report["duplicated"] == 0
    assert report["states"]["wrong_state"] == report["states"]["not_terminal"] == 0
    assert report["rate"]["own_429"] == 0
    assert report["rate"]["worst_window_60s"] <= 100
    assert report["secret_hits"] == []
    assert run.returncode == 0
