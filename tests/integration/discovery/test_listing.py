"""Completion discovery on a real PostgreSQL against the simulator and a failing list endpoint.

A pass reads list pages, marks our pending jobs the list shows finished as due at once (their
results are fetched exactly once), defers direct polls of jobs it shows running, and advances the
shared watermark; a list endpoint that fails costs one request per pass, ever rarer, and leaves
the jobs to their direct polls.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import asyncpg
import pytest
from aiohttp import web

from harvester import config
from harvester.api.client import SpiderIQ
from harvester.db import admin
from harvester.db.limiter import SharedLimiter
from harvester.db.listings import PgDiscoveryStore, PgStreamStore
from harvester.discovery.listing import UNHEALTHY_AFTER, Discovery
from harvester.ports import Listed
from harvester.scheduling import policy
from harvester.scheduling.gate import Gate
from harvester.sim import SimServer
from tests.support import configs

TOKEN = "disc:key:secret"
SPEED = 50.0


def make_config(dsn: str, base_url: str) -> config.Config:
    return configs.loaded(
        {
            "database.dsn": dsn,
            "api.base_url": base_url,
            "api.token": TOKEN,
            "speed": SPEED,
            "server.enabled": False,
        },
    )


class Parts:
    def __init__(self, cfg: config.Config, pool: asyncpg.Pool) -> None:
        self.cfg = cfg
        self.client = SpiderIQ.from_config(cfg.api, TOKEN)
        self.gate = Gate(cfg, SharedLimiter.from_config(pool, TOKEN, cfg.rate_limit))
        self.store = PgDiscoveryStore(pool)
        self.stream = PgStreamStore(pool)
        self.discovery = Discovery(cfg, self.store, self.client, self.gate, TOKEN)

    async def ensure(self) -> None:
        await self.store.ensure_discovery(self.discovery.key)


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(speed=SPEED, seed=3, tokens=[TOKEN], fail_rate=0.0, cancel_rate=0.0) as s:
        yield s


async def sim_jobs(sim: SimServer, count: int, **plan: Any) -> list[UUID]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/_sim/jobs", json={"count": count, "token": TOKEN, **plan}) as resp,
    ):
        resp.raise_for_status()
        return [UUID(str(i)) for i in (await resp.json())["job_ids"]]


async def test_a_pass_marks_finished_jobs_due_and_defers_running_ones(
    sim: SimServer,
    db_dsn: str,
    pool: asyncpg.Pool,
) -> None:
    quick = await sim_jobs(sim, 12, duration_s=1)
    slow = await sim_jobs(sim, 8, duration_s=3000)
    await admin.enqueue(pool, quick + slow)
    await asyncio.sleep(10 / SPEED + 0.3)  # queue wait plus one simulated second, and margin
    parts = Parts(make_config(db_dsn, sim.url), pool)
    await parts.ensure()
    try:
        result = await parts.discovery.maybe_pass()
        assert result is not None and result.ok
        assert (result.finished, result.running) == (12, 8)
        rows = {
            r["job_id"]: r
            for r in await pool.fetch(
                "SELECT job_id, upstream_status, job_type, next_poll_at < now() AS due,"
                " extract(epoch FROM next_poll_at - now()) AS wait_s FROM harvester.jobs"
            )
        }
        assert all(rows[j]["due"] and rows[j]["upstream_status"] == "completed" for j in quick)
        defer = policy.running_defer("spiderSite", parts.cfg.polling)
        assert all(rows[j]["wait_s"] >= defer * 0.9 for j in slow)
        assert all(rows[j]["job_type"] == "spiderSite" for j in quick + slow)
        assert await pool.fetchval("SELECT watermark IS NOT NULL FROM harvester.discovery")
        # the next pass waits for its interval: no second list request right away
        assert await parts.discovery.maybe_pass() is None
        assert sim.stats(per_job=False)["requests_by_endpoint"].keys() == {"list"}
    finally:
        await parts.client.close()


async def test_nothing_to_learn_means_no_list_request(
    sim: SimServer, db_dsn: str, pool: asyncpg.Pool
) -> None:
    parts = Parts(make_config(db_dsn, sim.url), pool)
    await parts.ensure()
    try:
        assert await parts.discovery.maybe_pass() is None  # empty queue
        assert sim.stats(per_job=False)["requests_total"] == 0
    finally:
        await parts.client.close()


async def test_a_failing_list_endpoint_backs_off_and_leaves_jobs_to_direct_polls(
    db_dsn: str,
    pool: asyncpg.Pool,
    aiohttp_unused_port: Any = None,
) -> None:
    hits: list[float] = []

    async def broken_list(_: web.Request) -> web.Response:
        hits.append(time.monotonic())
        return web.json_response({"detail": "upstream unavailable"}, status=503)

    app = web.Application()
    app.router.add_get("/api/v1/jobs/list", broken_list)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    ids = [UUID(int=n) for n in range(1, 6)]
    await admin.enqueue(pool, ids)
    before = {
        r["job_id"]: r["next_poll_at"]
        for r in await pool.fetch("SELECT job_id, next_poll_at FROM harvester.jobs")
    }
    parts = Parts(make_config(db_dsn, f"http://127.0.0.1:{port}"), pool)
    await parts.ensure()
    try:
        for attempt in range(UNHEALTHY_AFTER):
            await pool.execute("UPDATE harvester.discovery SET last_pass_at = NULL")
            result = await parts.discovery.maybe_pass()
            assert result is not None and not result.ok and result.pages == 0
            assert len(hits) == attempt + 1  # one request per failed pass, no retry storm
        assert not parts.discovery.healthy and not parts.gate.discovery_healthy
        cfg = parts.cfg.polling
        plain = policy.list_pass_interval(0, 100, 60.0 / SPEED, cfg)
        assert policy.list_retry_interval(plain, parts.discovery.failures, cfg) >= 8 * plain
        # the jobs keep their direct-poll schedule
        after = {
            r["job_id"]: r["next_poll_at"]
            for r in await pool.fetch("SELECT job_id, next_poll_at FROM harvester.jobs")
        }
        assert after == before
    finally:
        await parts.client.close()
        await runner.cleanup()


async def test_a_reconnect_asks_for_a_gap_pass_that_leaves_the_full_passes_schedule_alone(
    pool: asyncpg.Pool,
) -> None:
    """The stream's reconnect pass reads back only to the last event its previous connection got
    (or the watermark, if newer); it moves neither the watermark nor the time of the last full
    pass, so the periodic reconcile still covers what the stream lost before the cut."""
    store, stream, key, owner = PgDiscoveryStore(pool), PgStreamStore(pool), "k" * 32, "w1"
    await store.ensure_discovery(key)
    t0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    assert await store.claim_discovery(key, owner, 1.0, 300.0, 30.0) is not None  # the first: full
    await store.finish_discovery(key, owner, t0, 1, 0)
    assert await stream.claim_stream(key, owner, 30.0, connected=True, events=0, matched=0)
    assert await store.claim_discovery(key, owner, 1.0, 300.0, 30.0) is None  # nothing due
    last_pass = await pool.fetchval("SELECT last_pass_at FROM harvester.discovery")

    await stream.request_reconcile(key, t0 + timedelta(seconds=100))
    lease = await store.claim_discovery(key, owner, 1.0, 300.0, 30.0)
    assert lease is not None and lease.gap_since == t0 + timedelta(seconds=100)
    await store.finish_discovery(key, owner, t0 + timedelta(seconds=200), 1, 0, full=False)
    row = await pool.fetchrow("SELECT watermark, last_pass_at, reconcile_requested FROM harvester.discovery")
    assert row is not None
    assert (row["watermark"], row["last_pass_at"], row["reconcile_requested"]) == (t0, last_pass, False)

    # Requests add up: the earliest start wins, never before the watermark; a full one stays full.
    await stream.request_reconcile(key, t0 + timedelta(seconds=300))
    await stream.request_reconcile(key, t0 - timedelta(seconds=50))
    lease = await store.claim_discovery(key, owner, 1.0, 300.0, 30.0)
    assert lease is not None and lease.gap_since == t0
    await store.finish_discovery(key, owner, None, 1, 0, full=False)
    await stream.request_reconcile(key, None)
    await stream.request_reconcile(key, t0 + timedelta(seconds=400))
    lease = await store.claim_discovery(key, owner, 1.0, 300.0, 30.0)
    assert lease is not None and lease.gap_since is None  # a full pass: the first connection's


async def test_with_the_stream_up_and_nothing_pending_the_reconnect_pass_is_met_without_a_request(
    sim: SimServer, db_dsn: str, pool: asyncpg.Pool
) -> None:
    """An empty queue has nothing the stream could have missed: the stream's request is met, the
    next full pass is a reconcile interval away, and no list page is spent on it."""
    parts = Parts(make_config(db_dsn, sim.url), pool)
    await parts.ensure()
    key = parts.discovery.key
    try:
        assert await parts.stream.claim_stream(key, "w1", 30.0, connected=True, events=0, matched=0)
        await parts.stream.request_reconcile(key, None)
        assert await parts.discovery.maybe_pass() is None
        row = await pool.fetchrow("SELECT reconcile_requested, last_pass_at FROM harvester.discovery")
        assert row is not None and not row["reconcile_requested"] and row["last_pass_at"] is not None
        await admin.enqueue(pool, await sim_jobs(sim, 3, duration_s=3000))
        assert await parts.discovery.maybe_pass() is None  # the next full pass is not due yet
        await parts.stream.request_reconcile(key, None)  # a reconnect with jobs pending: a pass
        result = await parts.discovery.maybe_pass()
        assert result is not None and result.pages == 1
        assert sim.stats(per_job=False)["requests_by_endpoint"] == {"list": {"200": 1}}
    finally:
        await parts.client.close()


async def test_the_queued_defers_on_postgresql(pool: asyncpg.Pool) -> None:
    """What the stream and the list do to the defers of jobs known queued, in SQL: a job the queue
    went past comes forward (never back, and only while it is known queued); a scan is worth it by
    the defers that run out soon; with nothing to announce starts, long defers are spread."""
    store = PgDiscoveryStore(pool)
    passed, sooner, running, other_account, fresh = (uuid4() for _ in range(5))
    await admin.enqueue(pool, [passed, sooner, running, fresh])
    await admin.enqueue(pool, [other_account], account="team-b")

    async def set_job(job_id: UUID, status: str | None, due_in_s: float) -> None:
        await pool.execute(
            "UPDATE harvester.jobs SET upstream_status = $2,"
            " next_poll_at = now() + make_interval(secs => $3) WHERE job_id = $1",
            job_id,
            status,
            due_in_s,
        )

    for job_id in (passed, other_account):
        await set_job(job_id, "queued", 900.0)
    await set_job(sooner, "queued", 5.0)
    await set_job(running, "processing", 900.0)
    await set_job(fresh, None, 900.0)
    jobs = [Listed(j, "queued", "spiderSite", 20.0) for j in (passed, sooner, running, other_account)]
    assert await store.pull_in_queued(jobs) == [passed]

    async def wait_s(job_id: UUID) -> float:
        return float(
            await pool.fetchval(
                "SELECT extract(epoch FROM next_poll_at - now()) FROM harvester.jobs WHERE job_id = $1",
                job_id,
            )
        )

    assert 15.0 < await wait_s(passed) <= 20.0
    assert await wait_s(sooner) <= 5.0 and await wait_s(running) > 800.0
    assert await store.queued_expiring("default", 30.0) == 2  # passed and sooner
    await set_job(sooner, "queued", -1.0)  # due now: the worker's, not a scan's
    assert await store.queued_expiring("default", 30.0) == 1
    state = await store.discovery_state("default")
    assert state.youngest_s is not None and 0 <= state.youngest_s < 60
    await set_job(passed, "queued", 900.0)
    assert await store.spread_queued_defers("default", 60.0) == 1  # passed; not running, not team-b
    assert await wait_s(passed) <= 60.0
    assert await wait_s(other_account) > 800.0


async def test_a_pass_renews_its_lease_and_a_taken_over_one_is_not_renewed(pool: asyncpg.Pool) -> None:
    store, key = PgDiscoveryStore(pool), "k" * 32
    await store.ensure_discovery(key)
    await admin.enqueue(pool, [uuid4()])
    assert await store.claim_discovery(key, "w1", 1.0, 300.0, 1.0) is not None
    assert await store.renew_discovery(key, "w1", 30.0)
    await asyncio.sleep(1.2)  # the first lease (1 s) would have run out: renewed, it holds
    assert await store.claim_discovery(key, "w2", 0.0, 0.0, 30.0) is None
    await pool.execute("UPDATE harvester.discovery SET lease_expires_at = now() - interval '1 s'")
    assert await store.claim_discovery(key, "w2", 0.0, 0.0, 30.0) is not None  # w1 stalled past it
    assert not await store.renew_discovery(key, "w1", 30.0)
