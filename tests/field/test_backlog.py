"""A huge stale backlog under a short statement timeout: the daemon stays up and works it off.

A million pending jobs older than ``give_up_after_s`` (a backfill, or a week of downtime) used to
make the housekeeping expiry one statement over the whole backlog: under a 2 s statement timeout
it was cancelled, and the daemon died at every start. Expiry now works in bounded batches, and a
side task's database error is retried with backoff instead of ending the daemon.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import pytest

from harvester.sim import SimServer
from tests.support.e2e import ROOT, TOKEN, daemon_env, start_daemon

BACKLOG = 1_000_000
TIMEOUT_ENV = {"HARVESTER_DATABASE__STATEMENT_TIMEOUT_S": "2"}

pytestmark = pytest.mark.slow


async def fill_stale_backlog(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, enqueued_at, next_poll_at) "
            "SELECT gen_random_uuid(), now() - interval '30 days', now() - interval '30 days' "
            "FROM generate_series(1, $1)",
            BACKLOG,
        )
        await conn.execute("ANALYZE harvester.jobs")
    finally:
        await conn.close()


async def test_a_million_stale_jobs_are_expired_in_batches_under_a_2_s_timeout(
    db_dsn: str,
    tmp_path: Path,
) -> None:
    await fill_stale_backlog(db_dsn)
    async with SimServer(speed=1.0, seed=5, tokens=[TOKEN]) as sim:
        env = daemon_env(db_dsn, sim, 1.0, "backlog", TIMEOUT_ENV)
        daemon = await start_daemon(env, tmp_path, "--max-seconds", "8")
        try:
            code = await daemon.exit_code(within_s=60)
        finally:
            await daemon.stop()
    events = [json.loads(line) for line in daemon.log_path.read_text().splitlines() if line.startswith("{")]
    assert code == 0, daemon.log_tail()
    failures = [e for e in events if e["event"].endswith("_failed") or "QueryCanceled" in str(e)]
    assert failures == [], failures[:3]
    # housekeeping's batches, and the few a worker had claimed and polled once more (a 404 then)
    expired = sum(e.get("count", 0) for e in events if e["event"] == "jobs_expired")
    expired += sum(1 for e in events if e["event"] == "job_expired")
    conn = await asyncpg.connect(db_dsn)
    try:
        stored = await conn.fetchval("SELECT count(*) FROM harvester.jobs WHERE state = 'expired'")
    finally:
        await conn.close()
    assert expired == stored > 0
    print(f"\nexpired {stored} of {BACKLOG} stale jobs in 8 s, no statement timed out")


def test_status_answers_over_a_million_jobs_under_a_2_s_timeout(db_dsn: str) -> None:
    asyncio.run(fill_stale_backlog(db_dsn))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update({"HARVESTER_DSN": db_dsn, **TIMEOUT_ENV})
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "harvester", "status", "--json"],
        env=env,
        cwd=str(ROOT),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["jobs"]["pending"] == BACKLOG
    print(f"\nstatus over {BACKLOG} pending jobs: {time.monotonic() - started:.2f} s")
