"""The queue: claim order, SKIP LOCKED, leases, fencing, NOTIFY on insert, requeue, expiry."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg

from harvester import queue


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def test_enqueue_ignores_duplicates_and_keeps_tags(pool: asyncpg.Pool) -> None:
    jobs = ids(3)
    assert await queue.enqueue(pool, jobs, priority=5, tags={"campaign": "q1"}) == 3
    assert await queue.enqueue(pool, jobs[:2] + ids(1)) == 1
    row = await pool.fetchrow("SELECT priority, tags::text FROM harvester.jobs WHERE job_id=$1",
                              jobs[0])
    assert row["priority"] == 5 and '"campaign": "q1"' in row["tags"]


async def test_claim_orders_by_priority_then_due_time(pool: asyncpg.Pool) -> None:
    low, high, older = ids(3)
    await queue.enqueue(pool, [low])
    await queue.enqueue(pool, [high], priority=9)
    await queue.enqueue(pool, [older])
    await pool.execute("UPDATE harvester.jobs SET next_poll_at = now() - interval '1 hour' "
                       "WHERE job_id = $1", older)
    claimed = await queue.claim(pool, "w1", 10, 30)
    assert [c.job_id for c in claimed][:1] == [high]
    assert [c.job_id for c in claimed][1:] == [older, low]


async def test_claim_skips_jobs_not_yet_due_and_finished_ones(pool: asyncpg.Pool) -> None:
    due, later, done = ids(3)
    await queue.enqueue(pool, [due, later, done])
    await pool.execute("UPDATE harvester.jobs SET next_poll_at = now() + interval '1 hour' "
                       "WHERE job_id = $1", later)
    await pool.execute("UPDATE harvester.jobs SET state = 'harvested' WHERE job_id = $1", done)
    assert [c.job_id for c in await queue.claim(pool, "w1", 10, 30)] == [due]


async def test_concurrent_claims_never_share_a_job(pool: asyncpg.Pool) -> None:
    await queue.enqueue(pool, ids(200))
    batches = await asyncio.gather(*(queue.claim(pool, f"w{i}", 30, 30) for i in range(6)))
    claimed = [c.job_id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed)) == 180


async def test_a_claimed_job_is_not_claimable_until_its_lease_expires(pool: asyncpg.Pool) -> None:
    await queue.enqueue(pool, ids(1))
    [first] = await queue.claim(pool, "crashed", 1, 0.2)
    assert await queue.claim(pool, "other", 1, 30) == []
    await asyncio.sleep(0.3)
    [again] = await queue.claim(pool, "other", 1, 30)
    assert again.job_id == first.job_id
    assert again.lease_token == first.lease_token + 1


async def test_a_taken_over_lease_cannot_write(pool: asyncpg.Pool) -> None:
    await queue.enqueue(pool, ids(1))
    [stale] = await queue.claim(pool, "slow", 1, 0.1)
    await asyncio.sleep(0.2)
    [fresh] = await queue.claim(pool, "fast", 1, 30)
    assert not await queue.reschedule(
        pool, stale, delay_s=5, polls_spent=1, http_status=202, upstream_status="processing",
        job_type="spiderSite", not_found_count=0, fault_count=0, error=None)
    assert not await queue.finish(pool, stale, state="not_found", polls_spent=1, http_status=404,
                                  not_found_count=9, fault_count=0, error="x")
    assert await queue.finish(pool, fresh, state="not_found", polls_spent=1, http_status=404,
                              not_found_count=6, fault_count=0, error="404")
    row = await pool.fetchrow("SELECT state, polls, lease_owner FROM harvester.jobs")
    assert dict(row) == {"state": "not_found", "polls": 1, "lease_owner": None}


async def test_reschedule_counts_the_request_and_sets_the_next_poll(pool: asyncpg.Pool) -> None:
    await queue.enqueue(pool, ids(1))
    [job] = await queue.claim(pool, "w", 1, 30)
    assert await queue.reschedule(
        pool, job, delay_s=60, polls_spent=1, http_status=202, upstream_status="processing",
        job_type="spiderMaps", not_found_count=0, fault_count=0, error=None)
    row = await pool.fetchrow(
        "SELECT polls, job_type, upstream_status, last_http_status, lease_owner, "
        "next_poll_at > now() + interval '50 s' AS later FROM harvester.jobs")
    assert dict(row) == {"polls": 1, "job_type": "spiderMaps", "upstream_status": "processing",
                         "last_http_status": 202, "lease_owner": None, "later": True}


async def test_heartbeat_extends_only_our_leases(pool: asyncpg.Pool) -> None:
    await queue.enqueue(pool, ids(2))
    mine, theirs = await queue.claim(pool, "me", 1, 0.3), await queue.claim(pool, "them", 1, 0.3)
    await queue.extend_leases(pool, "me", [mine[0].job_id, theirs[0].job_id], 30)
    await asyncio.sleep(0.4)
    [reclaimed] = await queue.claim(pool, "third", 5, 30)
    assert reclaimed.job_id == theirs[0].job_id


async def test_release_hands_jobs_back_without_spending(pool: asyncpg.Pool) -> None:
    await queue.enqueue(pool, ids(3))
    claimed = await queue.claim(pool, "w", 3, 30)
    await queue.release(pool, "w", [c.job_id for c in claimed])
    assert len(await queue.claim(pool, "w2", 5, 30)) == 3
    assert await pool.fetchval("SELECT sum(polls) FROM harvester.jobs") == 0


async def test_insert_notifies_listeners(pool: asyncpg.Pool, db_dsn: str) -> None:
    listener = await asyncpg.connect(db_dsn)
    got: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener("harvester_jobs", lambda *a: got.put_nowait(a[2]))
    try:
        await pool.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", uuid.uuid4())
        assert await asyncio.wait_for(got.get(), timeout=1.0) == "harvester_jobs"
    finally:
        await listener.close()


async def test_expire_gives_up_on_old_pending_jobs_only(pool: asyncpg.Pool) -> None:
    old, new = ids(2)
    await queue.enqueue(pool, [old, new])
    await pool.execute("UPDATE harvester.jobs SET enqueued_at = now() - interval '8 days' "
                       "WHERE job_id = $1", old)
    assert await queue.expire(pool, 7 * 86400) == 1
    states = dict(await pool.fetch("SELECT job_id, state FROM harvester.jobs"))
    assert states == {old: "expired", new: "pending"}


async def test_requeue_by_state_and_by_id(pool: asyncpg.Pool) -> None:
    a, b, c = ids(3)
    await queue.enqueue(pool, [a, b, c])
    await pool.execute("UPDATE harvester.jobs SET state='failed', finished_at=now() "
                       "WHERE job_id = ANY($1)", [a, b])
    await pool.execute("UPDATE harvester.jobs SET state='not_found' WHERE job_id = $1", c)
    assert await queue.requeue(pool, [c], None) == 1
    assert await queue.requeue(pool, [], "failed") == 2
    assert await pool.fetchval("SELECT count(*) FROM harvester.jobs WHERE state='pending' "
                               "AND finished_at IS NULL") == 3


async def test_status_reports_states_and_oldest_pending(pool: asyncpg.Pool) -> None:
    a, b = ids(2)
    await queue.enqueue(pool, [a, b])
    await pool.execute("UPDATE harvester.jobs SET state='failed', last_error='boom', polls=3 "
                       "WHERE job_id=$1", a)
    report = await queue.status(pool)
    assert report.counts == {"pending": 1, "failed": 1}
    assert report.polls["failed"] == 3
    assert report.oldest_pending_age_s is not None and report.oldest_pending_age_s >= 0
    assert report.recent_errors[0]["error"] == "boom"
