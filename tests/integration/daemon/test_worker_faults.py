"""Faults inside the loop on a real PostgreSQL: a database failure while waiting for a slot."""

from __future__ import annotations

import asyncio
import io
import json
from uuid import uuid4

import asyncpg

from harvester import logs
from harvester.api.client import SpiderIQ
from harvester.daemon.worker import Worker
from harvester.db import admin
from harvester.db.jobs import PgJobStore
from harvester.errors import DatabaseError
from harvester.ports import Usage
from harvester.scheduling.gate import Gate
from tests.support import configs
from tests.support.rows import one

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

    async def usage(self) -> Usage:
        return Usage(0, 100, 60.0)


async def test_database_error_while_waiting_for_a_slot_releases_the_job(db_dsn: str) -> None:
    stream = io.StringIO()
    logs.setup("json", "info", stream=stream)
    cfg = configs.loaded(
        {
            "database.dsn": db_dsn,
            "api.token": TOKEN,
            "server.enabled": False,
        },
    )
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=3)
    client = SpiderIQ(cfg.api.base_url, TOKEN, connect_timeout_s=1, read_timeout_s=1, total_timeout_s=2)
    job_id = uuid4()
    try:
        await admin.enqueue(pool, [job_id])
        # due now and past its first-poll wait, so the worker goes straight for a request slot
        await pool.execute("UPDATE harvester.jobs SET enqueued_at = now() - interval '1 hour'")
        limiter = LimiterWhoseDatabaseIsGone()
        store = PgJobStore(pool)
        worker = Worker(cfg, store, client, Gate(cfg, limiter))
        [claimed] = await store.claim(worker.owner, 1, 30.0)
        await worker._handle(claimed, asyncio.Event())
        row = await one(
            pool, "SELECT state, lease_owner, polls, next_poll_at > now() AS later FROM harvester.jobs"
        )
        assert limiter.calls == 1
        assert (row["state"], row["lease_owner"], row["polls"], row["later"]) == ("pending", None, 0, True)
        events = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [e["event"] for e in events] == ["db_unavailable"]
        assert events[0]["level"] == "warning" and "exception" not in events[0]
    finally:
        await client.close()
        await pool.close()
