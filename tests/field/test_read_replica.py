"""The reading commands on a hot standby: ``database.read_dsn`` for ``status``, ``show`` and ``export``.

A real primary and streaming standby; the daemon harvests on the primary as the daemon role while
the reader role runs each command against the standby, with ``HARVESTER_DSN`` pointing at a port
where nothing listens, so that nothing can quietly go to the primary. A standby allows no write, no
LISTEN and no temporary table, and it may cancel a long read to replay the primary's changes: an
export cancelled that way fails with a message naming the standby settings that prevent it.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from harvester.db import migrate
from harvester.pgtemp import free_port
from harvester.sim import SimServer
from tests.support.cluster import Cluster, cluster
from tests.support.e2e import ROOT, TOKEN, daemon_env, enqueue, sim_jobs, start_daemon, wait_for
from tests.support.roles import Logins, apply_roles, login_dsn, make_logins

pytestmark = pytest.mark.slow

SPEED = 10.0
NOWHERE = f"postgresql://nobody@127.0.0.1:{free_port()}/postgres"  # nothing listens there


@pytest.fixture
async def replica() -> AsyncIterator[tuple[Cluster, Logins]]:
    # A standby that cancels a conflicting query at once, the worst case for a long export.
    with cluster({"max_standby_streaming_delay": "0", "hot_standby_feedback": "off"}) as pair:
        conn = await asyncpg.connect(pair.primary_dsn())
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()
        await apply_roles(pair.primary_dsn())
        logins = await make_logins(pair.primary_dsn())
        await pair.wait_replayed()
        yield pair, logins


async def reader(
    logins: Logins, pair: Cluster, *args: str, stdout: int = asyncio.subprocess.PIPE
) -> asyncio.subprocess.Process:
    """``harvester ARGS`` as the reader role, reading the standby only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    standby = login_dsn(pair.standby_dsn(), logins.reader, logins.password)
    env.update(
        {"HARVESTER_DSN": NOWHERE, "HARVESTER_READ_DSN": standby, "HARVESTER_SERVER__ENABLED": "false"}
    )
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harvester",
        *args,
        env=env,
        cwd=str(ROOT),
        stdout=stdout,
        stderr=asyncio.subprocess.PIPE,
    )


async def finished(proc: asyncio.subprocess.Process, within_s: float = 60) -> tuple[int, str, str]:
    out, err = await asyncio.wait_for(proc.communicate(), within_s)
    assert proc.returncode is not None
    return proc.returncode, (out or b"").decode(), err.decode()


async def test_status_show_and_export_read_the_standby_while_the_primary_harvests(
    replica: tuple[Cluster, Logins], tmp_path: Path
) -> None:
    pair, logins = replica
    daemon_dsn = pair.dsn(login=f"{logins.daemon}:{logins.password}")
    async with SimServer(speed=SPEED, seed=4, tokens=[TOKEN]) as sim:
        ids = await sim_jobs(sim, 40, outcome="completed")
        await enqueue(pair.primary_dsn(), ids)
        daemon = await start_daemon(daemon_env(daemon_dsn, sim, SPEED, "replica"), tmp_path)
        rounds = []
        try:
            while True:  # the reader reads while the primary works, until every job is in
                code, out, err = await finished(await reader(logins, pair, "status", "--json"))
                assert code == 0, err
                status = json.loads(out)
                code, rows, err = await finished(
                    await reader(logins, pair, "export", "leads", "--format", "jsonl")
                )
                assert code == 0, err
                rounds.append((status["jobs"].get("harvested", 0), rows.count("\n")))
                if rounds[-1][0] == len(ids):
                    break
                assert len(rounds) < 200, rounds[-3:]
                await asyncio.sleep(0.2)
            code, shown, err = await finished(await reader(logins, pair, "show", str(ids[0])))
        finally:
            daemon.proc.terminate()
            assert await daemon.exit_code(within_s=30) == 0, daemon.log_tail()
    assert code == 0, err
    assert str(ids[0]) in shown and "harvested" in shown
    assert len(rounds) > 1  # it read while the harvest was under way
    assert rounds[-1] == (len(ids), len(ids))  # every job and every lead, from the standby


async def test_an_export_the_standby_cancels_to_replay_says_so_and_names_the_settings(
    replica: tuple[Cluster, Logins],
) -> None:
    pair, logins = replica
    primary = await asyncpg.connect(pair.primary_dsn())
    try:
        await primary.execute(
            "WITH j AS (INSERT INTO harvester.jobs (job_id, state, job_type) "
            "           SELECT gen_random_uuid(), 'harvested', 'spiderSite' FROM generate_series(1, 20000) "
            "           RETURNING job_id), "
            "     r AS (INSERT INTO harvester.results (job_id, job_type, raw) "
            "           SELECT job_id, 'spiderSite', '{}' FROM j RETURNING job_id) "
            "INSERT INTO harvester.sites (job_id, url, domain, company_name) "
            "SELECT job_id, 'https://example.com/', 'example.com', repeat('x', 200) FROM r"
        )
        await pair.wait_replayed()
        # The export stops writing once the pipe is full (nobody reads it): its snapshot and its
        # lock on the tables stay open, as a slow consumer of a long export keeps them.
        export = await reader(logins, pair, "export", "leads", "--format", "csv")
        await wait_for(lambda: _exporting(pair, logins.reader), 30, "the export to hold its read open")
        async with primary.transaction():  # replayed on the standby, it conflicts with the export
            await primary.execute("LOCK TABLE harvester.sites IN ACCESS EXCLUSIVE MODE")
    finally:
        await primary.close()
    code, _, err = await finished(export)
    print(f"\nexport on the standby, cancelled by replay: exit {code}: {err.strip().splitlines()[-1]}")
    assert code == 1
    assert "conflict with recovery" in err
    assert "hot_standby_feedback" in err and "max_standby_streaming_delay" in err
    assert "Traceback" not in err


async def _exporting(pair: Cluster, user: str) -> bool:
    """Whether ``user`` has a transaction open on the standby (the export, paused mid-read)."""
    conn = await asyncpg.connect(pair.standby_dsn())
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 AND xact_start IS NOT NULL", user
            )
        )
    finally:
        await conn.close()
