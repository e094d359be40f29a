"""Faults inside the loop: a database failure in one job, a 429 seen by the worker."""

from __future__ import annotations

import asyncio
import io
import json
from uuid import uuid4

import asyncpg

from harvester import config, logs, queue
from harvester.client import SpiderIQ
from harvester.errors import DatabaseError
from harvester.outcomes import RateLimited
from harvester.worker import Worker

TOKEN = "wk:key:secret"


class LimiterWhoseDatabaseIsGone:
    """The limiter's row lives in PostgreSQL: when that is unreachable, acquire raises."""

    def __init__(self) -> None:
        self.calls = 0

    async def acquire(self) -> None:
        self.calls += 1
        raise DatabaseError("database unavailable: connection refused")

    async def pause(self, *, retry_after_s: float | None, reset_at: float | None, reason: str) -> float:
        return 0.0

    async def available_slots(self, horizon_s: float) -> int:
        return 20


async def test_database_error_while_waiting_for_a_slot_releases_the_job(db_dsn: str) -> None:
    stream = io.StringIO()
    logs.setup("json", "info", stream=stream)
    cfg = config.load(environ={}, overrides={
        "database.dsn": db_dsn, "api.base_url": "http://127.0.0.1:9", "api.token": TOKEN,
        "server.enabled": False,
    })
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=3)
    client = SpiderIQ(cfg.api.base_url, TOKEN, connect_timeout_s=1, read_timeout_s=1,
                          total_timeout_s=2)
    job_id = uuid4()
    try:
        await queue.enqueue(pool, [job_id])
        # due now and past its first-poll wait, so the worker goes straight for a request slot
        await pool.execute("UPDATE harvester.jobs SET enqueued_at = now() - interval '1 hour'")
        limiter = LimiterWhoseDatabaseIsGone()
        worker = Worker(cfg, pool, client, limiter)
        [claimed] = await queue.claim(pool, worker.owner, 1, 30.0)
        await worker._handle(claimed, asyncio.Event())
        row = await pool.fetchrow("SELECT state, lease_owner, polls, next_poll_at > now() AS later"
                                  " FROM harvester.jobs")
        assert limiter.calls == 1
        assert (row["state"], row["lease_owner"], row["polls"], row["later"]) == (
            "pending", None, 0, True)
        events = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [e["event"] for e in events] == ["db_unavailable"]
        assert events[0]["level"] == "warning" and "exception" not in events[0]
    finally:
        await client.close()
        await pool.close()


class PausingLimiter(LimiterWhoseDatabaseIsGone):
    async def pause(self, *, retry_after_s: float | None, reset_at: float | None, reason: str) -> float:
        return retry_after_s or 60.0


async def test_a_429_makes_the_worker_report_itself_paused(db_dsn: str, pool: asyncpg.Pool) -> None:
    """/readyz reads ``paused_reason``: a long budget refusal must show there, then clear."""
    now = [1000.0]
    cfg = config.load(environ={}, overrides={
        "database.dsn": db_dsn, "api.base_url": "http://127.0.0.1:9", "api.token": TOKEN,
        "server.enabled": False,
    })
    client = SpiderIQ(cfg.api.base_url, TOKEN, connect_timeout_s=1, read_timeout_s=1,
                          total_timeout_s=2)
    try:
        worker = Worker(cfg, pool, client, PausingLimiter(), clock=lambda: now[0])
        assert worker.paused_reason is None
        await worker.observe("results", RateLimited(retry_after_s=3600.0), 0.0)
        assert "rate limited" in (worker.paused_reason or "")
        now[0] += 3601.0
        assert worker.paused_reason is None
    finally:
        await client.close()
