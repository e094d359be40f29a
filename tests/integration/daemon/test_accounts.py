"""Several accounts on one database: the queue column, claims, limiter and discovery per account,
what waits for an account nobody configured, adopt mode, and the migration from one credential."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any
from uuid import UUID

import aiohttp
import asyncpg
import pytest

from harvester import config
from harvester.api.client import SpiderIQ
from harvester.db import admin, jobs, migrate
from harvester.db.jobs import PgJobStore
from harvester.db.limiter import SharedLimiter, fingerprint
from harvester.db.listings import PgAdopter, PgDiscoveryStore
from harvester.discovery.listing import Discovery
from harvester.scheduling.gate import Gate
from harvester.sim import SimServer
from tests.support import configs

A, B = "acme:key:secret", "bravo:key:secret"
SPEED = 50.0


def ids(n: int) -> list[UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def test_enqueue_names_the_account_and_default_is_default(pool: asyncpg.Pool) -> None:
    plain, acme = ids(1), ids(2)
    await admin.enqueue(pool, plain)
    await admin.enqueue(pool, acme, account="acme")
    rows = {r["job_id"]: r["account"] for r in await pool.fetch("SELECT job_id, account FROM harvester.jobs")}
    assert rows == {plain[0]: "default", acme[0]: "acme", acme[1]: "acme"}


async def test_an_account_name_that_is_no_slug_is_refused_by_the_table(pool: asyncpg.Pool) -> None:
    with pytest.raises(asyncpg.CheckViolationError):
        await pool.execute(
            "INSERT INTO harvester.jobs (job_id, account) VALUES ($1, 'Not A Slug')", uuid.uuid4()
        )


async def test_claims_take_only_the_accounts_own_jobs(pool: asyncpg.Pool) -> None:
    mine, theirs = ids(3), ids(4)
    await admin.enqueue(pool, mine, account="a")
    await admin.enqueue(pool, theirs, account="b", priority=9)
    claimed = await PgJobStore(pool, account="a").claim("w", 10, 30)
    assert sorted(c.job_id for c in claimed) == sorted(mine)
    assert await PgJobStore(pool, account="c").claim("w", 10, 30) == []
    assert await PgJobStore(pool, account="c").any_pending() is False
    assert await PgJobStore(pool, account="b").any_pending() is True
    assert await PgJobStore(pool, account="c").next_due_in() is None


async def test_a_fresh_job_is_claimed_at_once_beside_a_large_backlog(pool: asyncpg.Pool) -> None:
    """Another account's 50,000 due jobs cost a claim for this account nothing measurable."""
    await pool.execute(
        "INSERT INTO harvester.jobs (job_id, account, next_poll_at) "
        "SELECT gen_random_uuid(), 'a', now() - interval '1 hour' FROM generate_series(1, 50000)"
    )
    await pool.execute("ANALYZE harvester.jobs")
    fresh = ids(1)
    await admin.enqueue(pool, fresh, account="b")
    started = time.monotonic()
    claimed = await PgJobStore(pool, account="b").claim("w", 8, 30)
    elapsed = time.monotonic() - started
    assert [c.job_id for c in claimed] == fresh
    assert elapsed < 0.5
    plan = "\n".join(
        r[0]
        for r in await pool.fetch(
            "EXPLAIN SELECT job_id FROM harvester.jobs WHERE state = 'pending' AND account = 'b' "
            "AND next_poll_at <= now() ORDER BY priority DESC, next_poll_at LIMIT 8"
        )
    )
    assert "jobs_due_account_idx" in plan


async def test_pending_jobs_of_unknown_accounts_are_counted(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(2), account="default")
    await admin.enqueue(pool, ids(3), account="ghost")
    pending = await admin.pending_by_account(pool)
    assert pending == {"default": 2, "ghost": 3}
    assert admin.unknown_accounts(pending, ("default", "acme")) == {"ghost": 3}
    by_account = await admin.jobs_by_account(pool)
    assert by_account == {"default": {"pending": 2}, "ghost": {"pending": 3}}


async def test_each_account_has_its_own_limiter_row_keyed_by_name(pool: asyncpg.Pool) -> None:
    cfg = config.load(environ={"HARVESTER_ACCOUNTS__A__TOKEN": A, "HARVESTER_ACCOUNTS__B__TOKEN": B})
    limiters = [
        SharedLimiter.for_account(pool, account, cfg.rate_limit.default_pause_s, cfg.rate_limit.window_s)
        for account in cfg.accounts
    ]
    for _ in range(3):
        await limiters[0].acquire()
    await limiters[1].pause(retry_after_s=30, reset_at=None, reason="429")
    rows = {
        r["credential"]: r
        for r in await pool.fetch("SELECT credential, granted_total, paused_until FROM harvester.rate_limits")
    }
    assert set(rows) == {"a", "b"}
    assert rows["a"]["granted_total"] == 3 and rows["a"]["paused_until"] is None
    assert rows["b"]["paused_until"] is not None  # a 429 on b pauses b only
    assert (await limiters[0].state()).paused is False
    described = await __import__("harvester.db.limiter", fromlist=["describe_all"]).describe_all(pool)
    assert [d["account"] for d in described] == ["a", "b"]


async def test_output_views_carry_the_account(pool: asyncpg.Pool) -> None:
    job = uuid.uuid4()
    await admin.enqueue(pool, [job], account="acme")
    await pool.execute("INSERT INTO harvester.results (job_id, raw) VALUES ($1, '{}')", job)
    await pool.execute(
        "INSERT INTO harvester.sites (job_id, url, domain) VALUES ($1, 'https://x.io', 'x.io')", job
    )
    assert await pool.fetchval("SELECT account FROM harvester.site_contacts WHERE job_id = $1", job) == "acme"
    assert await pool.fetchval("SELECT account FROM harvester.leads WHERE job_id = $1", job) == "acme"


async def test_migration_010_makes_the_one_credential_the_account_default(
    empty_db_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        every = migrate.available()
        monkeypatch.setattr(
            migrate, "available", lambda directory=None: [m for m in every if m.version < "010"]
        )
        await migrate.apply(conn)  # a database as the version before accounts left it
        monkeypatch.setattr(migrate, "available", lambda directory=None: every)
        job = uuid.uuid4()
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", job)
        key = fingerprint("old:key:secret")
        await conn.execute("SELECT * FROM harvester.rate_reserve($1, 100, 60, 0.6, 20, 0.02)", key)
        await conn.execute("INSERT INTO harvester.discovery (credential, passes) VALUES ($1, 7)", key[:32])
        await migrate.apply(conn)
        assert await conn.fetchval("SELECT account FROM harvester.jobs WHERE job_id = $1", job) == "default"
        limiters = await conn.fetch("SELECT credential, granted_total FROM harvester.rate_limits")
        assert [tuple(r) for r in limiters] == [("default", 1)]
        found = await conn.fetch("SELECT credential, passes FROM harvester.discovery")
        assert [tuple(r) for r in found] == [("default", 7)]
    finally:
        await conn.close()


# ---------------------------------------------------------------- against the simulator


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(speed=SPEED, seed=5, tokens=[A, B], fail_rate=0.0, cancel_rate=0.0) as s:
        yield s


async def sim_jobs(sim: SimServer, token: str, count: int, **plan: Any) -> list[UUID]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/_sim/jobs", json={"count": count, "token": token, **plan}) as resp,
    ):
        resp.raise_for_status()
        return [UUID(str(i)) for i in (await resp.json())["job_ids"]]


def lane_parts(db_dsn: str, sim: SimServer, pool: asyncpg.Pool, name: str, token: str, **adopt: Any) -> Any:
    cfg = configs.loaded(
        {
            "database.dsn": db_dsn,
            "api.base_url": sim.url,
            "api.token": token,
            "speed": SPEED,
            "server.enabled": False,
        },
    )
    account = dataclasses_replace(cfg.accounts[0], name=name)
    client = SpiderIQ.from_config(cfg.api, token)
    gate = Gate(
        cfg, SharedLimiter.for_account(pool, account, cfg.rate_limit.default_pause_s, cfg.rate_limit.window_s)
    )
    store = PgDiscoveryStore(pool, account=name)
    adopter = PgAdopter(pool, account=name) if adopt else None
    discovery = Discovery(cfg, store, client, gate, name, adopter=adopter, **adopt)
    return client, store, discovery


def dataclasses_replace(value: Any, **changes: Any) -> Any:
    import dataclasses

    return dataclasses.replace(value, **changes)


async def test_each_accounts_list_pass_marks_only_its_own_jobs(
    sim: SimServer, db_dsn: str, pool: asyncpg.Pool
) -> None:
    jobs_a = await sim_jobs(sim, A, 5, duration_s=1)
    jobs_b = await sim_jobs(sim, B, 4, duration_s=1)
    await admin.enqueue(pool, jobs_a, account="a")
    await admin.enqueue(pool, jobs_b, account="b")
    await asyncio.sleep(10 / SPEED + 0.3)
    client_a, store_a, disc_a = lane_parts(db_dsn, sim, pool, "a", A)
    client_b, store_b, disc_b = lane_parts(db_dsn, sim, pool, "b", B)
    try:
        await store_a.ensure_discovery("a")
        await store_b.ensure_discovery("b")
        result_a = await disc_a.maybe_pass()
        assert result_a is not None and result_a.finished == 5
        result_b = await disc_b.maybe_pass()
        assert result_b is not None and result_b.finished == 4
        keys = {r[0] for r in await pool.fetch("SELECT credential FROM harvester.discovery")}
        assert keys == {"a", "b"}
        by_client = sim.stats(per_job=False)["requests_by_credential"]
        assert set(by_client) == {"acme", "bravo"}
    finally:
        await client_a.close()
        await client_b.close()


async def test_adopt_mode_queues_the_accounts_jobs_and_backfills_to_adopt_since(
    sim: SimServer, db_dsn: str, pool: asyncpg.Pool
) -> None:
    """With nothing enqueued, the list pass adopts what it shows and the backfill, one page per
    pass and below live jobs, reaches every job since ``adopt_since``; the other account's jobs
    are never touched."""
    old = await sim_jobs(sim, A, 230, duration_s=1)
    others = await sim_jobs(sim, B, 3, duration_s=1)
    await asyncio.sleep(10 / SPEED + 0.3)
    since = config.parse_since("1d", "accounts.a.adopt_since")
    client, store, discovery = lane_parts(db_dsn, sim, pool, "a", A, adopt_since=since)
    try:
        await store.ensure_discovery("a")
        for _ in range(6):
            await pool.execute("UPDATE harvester.discovery SET last_pass_at = NULL")
            await discovery.maybe_pass()
            if discovery.backfill_page is None:
                break
        assert discovery.backfill_page is None
        rows = await pool.fetch(
            "SELECT job_id, account, adopted, tags::text AS tags, priority FROM harvester.jobs"
        )
        assert {r["job_id"] for r in rows} == set(old)
        assert all(r["account"] == "a" and r["adopted"] and '"adopted": true' in r["tags"] for r in rows)
        assert not set(others) & {r["job_id"] for r in rows}
        due = await pool.fetchval(
            "SELECT count(*) FROM harvester.jobs WHERE upstream_status = 'completed' AND next_poll_at < now()"
        )
        assert due == len(old)  # each is fetched once, directly, by the worker
    finally:
        await client.close()


async def test_drain_waits_for_every_configured_account_and_no_other(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(1), account="ghost")
    assert await jobs.any_pending_for(pool, ["a", "b"]) is False  # a ghost's job never holds a drain
    await admin.enqueue(pool, ids(1), account="b")
    assert await jobs.any_pending_for(pool, ["a", "b"]) is True
