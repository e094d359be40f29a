"""Two accounts in one daemon against the simulator: each harvests only its own jobs with its own
token and budget; a refused token pauses its account only and a token file rewritten with the
right token resumes it without a restart; a revoked account stops while the other finishes; jobs
of an account nobody configured wait, never polled."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from harvester import config
from harvester.daemon import run as daemon
from harvester.sim import SimServer
from tests.support.e2e import daemon_env, fetch_jobs, sim_admin, start_daemon, unknown_ids, wait_for

pytestmark = pytest.mark.slow
SPEED = 40.0
A, B = "alpha:key:secret", "bravo:key:secret"


async def jobs_for(sim: SimServer, token: str, count: int) -> list[UUID]:
    body = {
        "count": count,
        "type": "spiderSite",
        "token": token,
        "duration_s": [10, 20],
        "outcome": "completed",
    }
    async with aiohttp.ClientSession() as session, session.post(f"{sim.url}/_sim/jobs", json=body) as resp:
        resp.raise_for_status()
        return [UUID(str(i)) for i in (await resp.json())["job_ids"]]


async def enqueue(dsn: str, ids: list[UUID], account: str) -> None:
    """What a producer sends: ``INSERT INTO harvester.jobs (job_id, account) ...``."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, account) SELECT unnest($1::uuid[]), $2 "
            "ON CONFLICT DO NOTHING",
            ids,
            account,
        )
    finally:
        await conn.close()


async def states(dsn: str, ids: list[UUID]) -> dict[str, int]:
    jobs = await fetch_jobs(dsn)
    counts: dict[str, int] = {}
    for job_id in ids:
        counts[jobs[job_id]["state"]] = counts.get(jobs[job_id]["state"], 0) + 1
    return counts


def two_accounts(dsn: str, sim: SimServer, b_token_file: Path) -> config.Config:
    return config.load(
        environ={
            "HARVESTER_ACCOUNTS__ALPHA__TOKEN": A,
            "HARVESTER_ACCOUNTS__BRAVO__TOKEN_FILE": str(b_token_file),
        },
        overrides={
            "database.dsn": dsn,
            "api.base_url": sim.url,
            "speed": SPEED,
            "server.enabled": False,
            "log.level": "warning",
            "polling.auth_recheck_s": 1.0 * SPEED,
        },
    )


@contextlib.asynccontextmanager
async def running(cfg: config.Config) -> AsyncIterator[asyncio.Task[int]]:
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(cfg, stop, max_seconds=120.0))
    try:
        yield task
        assert not task.done(), "the daemon ended early"
    finally:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)


async def test_two_accounts_one_refused_then_rotated_then_the_other_revoked(
    db_dsn: str, tmp_path: Path
) -> None:
    b_file = tmp_path / "bravo.token"
    b_file.write_text("bravo:key:wrong\n")  # refused: bravo pauses, alpha goes on
    async with SimServer(speed=SPEED, seed=8, tokens=[A, B], fail_rate=0.0, cancel_rate=0.0) as sim:
        alpha, bravo = await jobs_for(sim, A, 30), await jobs_for(sim, B, 30)
        ghosts = unknown_ids(2)
        await enqueue(db_dsn, alpha, "alpha")
        await enqueue(db_dsn, bravo, "bravo")
        await enqueue(db_dsn, ghosts, "ghost")
        async with running(two_accounts(db_dsn, sim, b_file)) as task:

            async def done(ids: list[UUID], count: int) -> bool:
                return (await states(db_dsn, ids)).get("harvested", 0) >= count

            await wait_for(lambda: done(alpha, 30), 60, "alpha's 30 jobs harvested")
            assert task.done() is False
            assert await states(db_dsn, bravo) == {"pending": 30}  # refused: nothing changed
            stats: dict[str, Any] = sim.stats(per_job=False)
            assert "bravo" not in stats["requests_by_credential"]  # never polled with alpha's token
            assert stats["requests_by_credential"]["-"].get("401", 0) >= 1

            b_file.write_text(B + "\n")  # rotation: the daemon sees the file change
            await wait_for(lambda: done(bravo, 30), 30, "bravo's 30 jobs after the token rotation")

            more_alpha, more_bravo = await jobs_for(sim, A, 15), await jobs_for(sim, B, 15)
            await sim_admin(sim, "tokens", {"token": A, "action": "revoke", "status": 401})
            await enqueue(db_dsn, more_alpha, "alpha")
            await enqueue(db_dsn, more_bravo, "bravo")
            await wait_for(lambda: done(more_bravo, 15), 30, "bravo's jobs while alpha is revoked")
            assert await states(db_dsn, more_alpha) == {"pending": 15}

            jobs = await fetch_jobs(db_dsn)
            assert all(jobs[g]["state"] == "pending" and jobs[g]["polls"] == 0 for g in ghosts)
            stats = sim.stats()
            fetches = stats["result_fetches"]
            assert fetches["jobs_fetched_more_than_once_after_done"] == 0
            limits = stats["rate_limit"]
            for client in ("alpha", "bravo"):
                assert not limits[client]["exceeds_rate_in_60s"]
            assert stats["served_429"] == 0


async def test_sighup_rereads_the_tokens_and_the_daemon_goes_on(db_dsn: str, tmp_path: Path) -> None:
    """``kill -HUP``: a process that was refusing its token file's old content picks up the new
    token at once (SIGHUP does not end it), harvests, and still stops cleanly on SIGTERM."""
    token_file = tmp_path / "alpha.token"
    token_file.write_text("alpha:key:wrong\n")
    async with SimServer(speed=SPEED, seed=9, tokens=[A], fail_rate=0.0, cancel_rate=0.0) as sim:
        ids = await jobs_for(sim, A, 10)
        await enqueue(db_dsn, ids, "alpha")
        env = daemon_env(db_dsn, sim, SPEED, "hup-1")
        del env["HARVESTER_API_TOKEN"]
        env.update(
            {
                "HARVESTER_ACCOUNTS__ALPHA__TOKEN_FILE": str(token_file),
                "HARVESTER_POLLING__AUTH_RECHECK_S": str(600 * SPEED),  # no recheck: only SIGHUP helps
            }
        )
        proc = await start_daemon(env, tmp_path)
        try:
            await wait_for(
                lambda: sim.stats(per_job=False)["requests_by_credential"].get("-", {}).get("401", 0) > 0,
                30,
                "the refused token",
            )
            token_file.write_text(A + "\n")
            proc.proc.send_signal(signal.SIGHUP)
            harvested = await wait_for(
                lambda: _count(db_dsn, ids, "harvested", 10), 30, "the jobs after SIGHUP", interval=0.05
            )
            assert proc.proc.returncode is None, proc.log_tail()
            proc.proc.send_signal(signal.SIGTERM)
            assert await proc.exit_code(30) == 0, proc.log_tail()
        finally:
            await proc.stop()
        log_text = proc.log_path.read_text()
        assert '"tokens_reread"' in log_text and "alpha:key:secret" not in log_text
        print(f"\n[e2e SIGHUP] 10 jobs harvested {harvested:.2f} s after the new token and SIGHUP")


async def _count(dsn: str, ids: list[UUID], state: str, count: int) -> bool:
    return (await states(dsn, ids)).get(state, 0) >= count
