"""The change feed against a real PostgreSQL: one number per finishing change, in commit order,
no gaps, no duplicates, and NOTIFY harvester_changes in the same transaction."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg

from harvester.api.classify import read_body
from harvester.db import bulk, feed, store
from tests.support.paths import SEED

MINIMAL = SEED / "site-minimal-200.json"
MINIMAL_ID = UUID("550e8400-e29b-41d4-a716-446655440000")


def with_data(path: Path, **changes: Any) -> bytes:
    doc = json.loads(path.read_bytes())
    doc["data"].update(changes)
    return json.dumps(doc).encode()


async def store_raw(conn: asyncpg.Connection, raw: bytes) -> str:
    return (await store.store_result(conn, raw, read_body(raw), http_status=None, polls_spent=0)).kind


async def changes(conn: asyncpg.Connection) -> list[tuple[int, str, str]]:
    rows = await conn.fetch("SELECT change_id, state, reason FROM harvester.changes ORDER BY change_id")
    return [(r["change_id"], r["state"], r["reason"]) for r in rows]


async def finish(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy, job_id: UUID, state: str = "harvested"
) -> None:
    await conn.execute(
        "UPDATE harvester.jobs SET state = $2, finished_at = now() WHERE job_id = $1", job_id, state
    )


async def test_finishing_a_job_is_one_change_and_one_nudge(conn: asyncpg.Connection, db_dsn: str) -> None:
    listener = await asyncpg.connect(db_dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(feed.CHANNEL, lambda *args: got.put_nowait(args[3]))
    try:
        assert await store_raw(conn, MINIMAL.read_bytes()) == "harvested"
        payload = await asyncio.wait_for(got.get(), 5)
    finally:
        await listener.close()
    assert await changes(conn) == [(1, "harvested", "finished")]
    nudge = feed.parse_nudge(payload)
    assert (nudge.change, nudge.job_id, nudge.state, nudge.extra) == (1, MINIMAL_ID, "harvested", {})
    assert nudge.job_type == "spiderSite"


async def test_a_re_store_is_a_change_only_when_the_rows_change(conn: asyncpg.Connection) -> None:
    await store_raw(conn, MINIMAL.read_bytes())
    await store_raw(conn, MINIMAL.read_bytes())  # the same body again: nothing new downstream
    assert (await bulk.reprocess(conn, None)).processed == 1  # same rows from the same raw
    assert await changes(conn) == [(1, "harvested", "finished")]
    await store_raw(conn, with_data(MINIMAL, emails=["new@example.com"]))
    assert await changes(conn) == [(1, "harvested", "finished"), (2, "harvested", "restored")]
    # rows that differ from what a reprocess builds now (an older normalizer wrote them)
    await conn.execute("UPDATE harvester.results SET rows_digest = 'old' WHERE job_id = $1", MINIMAL_ID)
    await conn.execute("DELETE FROM harvester.changes WHERE change_id > 2")
    assert (await bulk.reprocess(conn, [MINIMAL_ID])).processed == 1
    assert [c[2] for c in await changes(conn)][-1] == "restored"


async def test_expiry_and_failures_are_changes_too(conn: asyncpg.Connection) -> None:
    a, b = uuid4(), uuid4()
    await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", [a, b])
    await finish(conn, a, "failed")
    await conn.execute("UPDATE harvester.jobs SET state = 'expired' WHERE job_id = $1", b)
    await conn.execute("UPDATE harvester.jobs SET polls = polls + 1 WHERE job_id = $1", b)  # no change
    assert await changes(conn) == [(1, "failed", "finished"), (2, "expired", "finished")]


async def test_a_rolled_back_change_leaves_no_gap(conn: asyncpg.Connection) -> None:
    a, b = uuid4(), uuid4()
    await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", [a, b])
    tx = conn.transaction()
    await tx.start()
    await finish(conn, a)
    await conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # take the number now
    await tx.rollback()
    await finish(conn, b)
    assert await changes(conn) == [(1, "harvested", "finished")]
    assert await conn.fetchval("SELECT job_id FROM harvester.changes") == b


async def test_a_later_number_never_becomes_visible_before_an_earlier_one(db_dsn: str) -> None:
    # The race a plain sequence loses: A takes 1, B takes 2 and commits first; a consumer reading
    # `> 0` would see 2, move on, and never read 1. Here B's commit waits for A's.
    a_conn, b_conn, reader = [await asyncpg.connect(db_dsn) for _ in range(3)]
    try:
        a, b = uuid4(), uuid4()
        await a_conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", [a, b])
        a_tx = a_conn.transaction()
        await a_tx.start()
        await finish(a_conn, a)
        await a_conn.execute("SET CONSTRAINTS ALL IMMEDIATE")  # A holds number 1, uncommitted
        b_commit = asyncio.create_task(finish(b_conn, b))  # autocommit: its number is taken at commit
        await asyncio.sleep(0.3)
        assert not b_commit.done()
        assert await feed.changes_after(reader, 0) == []
        await a_tx.commit()
        await asyncio.wait_for(b_commit, 5)
        seen = await feed.changes_after(reader, 0)
        assert [(c.change_id, c.job_id) for c in seen] == [(1, a), (2, b)]
    finally:
        for c in (a_conn, b_conn, reader):
            await c.close()


async def test_concurrent_writers_and_a_reader_see_every_number_once(db_dsn: str) -> None:
    writers = 4
    per_writer = 60
    pool = await asyncpg.create_pool(db_dsn, min_size=writers + 1, max_size=writers + 1)
    assert pool is not None
    ids = [uuid4() for _ in range(writers * per_writer)]
    try:
        await pool.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", ids)

        async def write(mine: list[UUID]) -> None:
            for job_id in mine:
                async with pool.acquire() as c, c.transaction():
                    await finish(c, job_id)
                    await c.execute("SELECT pg_sleep(0.001)")

        read: list[int] = []

        async def consume() -> None:
            last = 0
            while len(read) < len(ids):
                page = await feed.changes_after(pool, last, 50)
                read.extend(c.change_id for c in page)
                last = page[-1].change_id if page else last
                await asyncio.sleep(0.002)

        chunks = [ids[i::writers] for i in range(writers)]
        await asyncio.wait_for(asyncio.gather(consume(), *(write(c) for c in chunks)), 60)
    finally:
        await pool.close()
    assert read == list(range(1, len(ids) + 1))


async def test_last_change_before_a_time(conn: asyncpg.Connection) -> None:
    a, b = uuid4(), uuid4()
    await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", [a, b])
    await finish(conn, a)
    between = await conn.fetchval("SELECT clock_timestamp()")
    await finish(conn, b)
    assert await feed.last_change(conn) == 2
    assert await feed.last_change(conn, between) == 1


async def test_one_transaction_numbers_its_jobs_once_each_in_order_with_their_final_state(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    listener = await asyncpg.connect(db_dsn)
    got: list[str] = []
    await listener.add_listener(feed.CHANNEL, lambda *args: got.append(args[3]))
    try:
        failed = (SEED / "failed-410.json").read_bytes()
        await store.store_failure(conn, failed, read_body(failed), job_id=MINIMAL_ID, http_status=None)
        others = [uuid4() for _ in range(5)]
        await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", others)
        async with conn.transaction():
            # the failed job is stored again as harvested (state and body change: one change)...
            await store_raw(conn, MINIMAL.read_bytes())
            # ...and five more finish in the same transaction
            for job_id in others:
                await finish(conn, job_id)
        await asyncio.sleep(0.2)
    finally:
        await listener.close()
    assert await changes(conn) == [(1, "failed", "finished"), (2, "harvested", "finished")] + [
        (n, "harvested", "finished") for n in range(3, 8)
    ]
    assert [feed.parse_nudge(p).change for p in got] == list(range(1, 8))
    assert await conn.fetchval("SELECT count(*) FROM harvester.change_staging") == 0


async def test_claims_renewals_and_reschedules_stage_nothing(conn: asyncpg.Connection) -> None:
    """Only statements that set ``state`` (jobs) or ``raw``/``rows_digest`` (results) reach the feed's
    triggers, and among their rows only those whose value changed are staged."""
    jobs = [uuid4() for _ in range(3)]
    await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", jobs)
    staged = "SELECT count(*) FROM harvester.change_staging WHERE xid = pg_current_xact_id()"
    noted = "SELECT count(*) FROM harvester.change_transactions WHERE xid = pg_current_xact_id()"
    async with conn.transaction():
        await conn.execute(  # a claim and a lease renewal
            "UPDATE harvester.jobs SET lease_owner = 'w', lease_expires_at = now() + interval '1 minute', "
            "next_poll_at = now() + interval '1 minute', polls = polls + 1 WHERE job_id = ANY($1::uuid[])",
            jobs,
        )
        assert (await conn.fetchval(staged), await conn.fetchval(noted)) == (0, 0)
        await conn.execute("UPDATE harvester.jobs SET state = 'pending' WHERE job_id = ANY($1::uuid[])", jobs)
        assert await conn.fetchval(staged) == 0  # named, but nothing changed
        await conn.execute("UPDATE harvester.jobs SET state = 'failed' WHERE job_id = $1", jobs[0])
        assert await conn.fetchval(staged) == 1
    assert [c[1:] for c in await changes(conn)] == [("failed", "finished")]
    assert await conn.fetchval("SELECT count(*) FROM harvester.change_transactions") == 0


async def test_a_batch_of_a_thousand_after_single_rows_is_numbered_in_order(conn: asyncpg.Connection) -> None:
    """The plan a session keeps from its first one-row updates does not make a batch quadratic:
    one row each, then a thousand in one statement, all numbered in order of staging."""
    jobs = [uuid4() for _ in range(1005)]
    await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", jobs)
    for job in jobs[:5]:
        await finish(conn, job, "failed")
    await conn.execute("UPDATE harvester.jobs SET state = 'expired' WHERE job_id = ANY($1::uuid[])", jobs[5:])
    numbered = await changes(conn)
    assert [n for n, _, _ in numbered] == list(range(1, 1006))
    assert [s for _, s, _ in numbered] == ["failed"] * 5 + ["expired"] * 1000
