"""``harvester ARGS`` as scripts run it, for the command tests: its own process, a clean
environment, the exit code and the one-line error that is the contract."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.paths import ROOT

DEAD_DSN = "postgresql://postgres@127.0.0.1:1/nowhere"


def harvester(
    *args: str, dsn: str = DEAD_DSN, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``harvester ARGS`` with a clean HARVESTER_* environment."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    clean.update({"HARVESTER_DSN": dsn, "HARVESTER_SERVER__ENABLED": "false", **(env or {})})
    return subprocess.run(  # noqa: S603 - our own entry point
        [sys.executable, "-m", "harvester", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=clean,
        cwd=ROOT,
        timeout=120,
        check=False,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert proc.returncode == code, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    for word in words:
        assert word in lines[0]
