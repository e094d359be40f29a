"""The queue: claim order, SKIP LOCKED, leases, fencing, NOTIFY on insert, requeue, expiry, and what
the listing rules (``db.listings``) do to claimed and held jobs."""

from __future__ import annotations

import asyncio
import json
import uuid

import asyncpg
import pytest

from harvester.api.classify import read_body
from harvester.api.outcomes import Completed
from harvester.db import admin
from harvester.db.jobs import PgJobStore
from harvester.db.listings import PgAdopter, PgListings
from harvester.errors import DatabaseError
from harvester.ports import Finish, Listed, Reschedule
from tests.support.rows import one


def ids(n: int) -> list[uuid.UUID]:
    return [uuid.uuid4() for _ in range(n)]


async def test_enqueue_ignores_duplicates_and_keeps_tags(pool: asyncpg.Pool) -> None:
    jobs = ids(3)
    assert await admin.enqueue(pool, jobs, priority=5, tags={"campaign": "q1"}) == 3
    assert await admin.enqueue(pool, jobs[:2] + ids(1)) == 1
    row = await one(pool, "SELECT priority, tags::text FROM harvester.jobs WHERE job_id=$1", jobs[0])
    assert row["priority"] == 5 and '"campaign": "q1"' in row["tags"]


async def test_claim_orders_by_priority_then_due_time(pool: asyncpg.Pool) -> None:
    low, high, older = ids(3)
    await admin.enqueue(pool, [low])
    await admin.enqueue(pool, [high], priority=9)
    await admin.enqueue(pool, [older])
    await pool.execute(
        "UPDATE harvester.jobs SET next_poll_at = now() - interval '1 hour' WHERE job_id = $1", older
    )
    claimed = await PgJobStore(pool).claim("w1", 10, 30)
    assert [c.job_id for c in claimed][:1] == [high]
    assert [c.job_id for c in claimed][1:] == [older, low]


async def test_claim_skips_jobs_not_yet_due_and_finished_ones(pool: asyncpg.Pool) -> None:
    due, later, done = ids(3)
    await admin.enqueue(pool, [due, later, done])
    await pool.execute(
        "UPDATE harvester.jobs SET next_poll_at = now() + interval '1 hour' WHERE job_id = $1", later
    )
    await pool.execute("UPDATE harvester.jobs SET state = 'harvested' WHERE job_id = $1", done)
    assert [c.job_id for c in await PgJobStore(pool).claim("w1", 10, 30)] == [due]


async def test_concurrent_claims_never_share_a_job(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(200))
    batches = await asyncio.gather(*(PgJobStore(pool).claim(f"w{i}", 30, 30) for i in range(6)))
    claimed = [c.job_id for batch in batches for c in batch]
    assert len(claimed) == len(set(claimed)) == 180


async def test_a_claimed_job_is_not_claimable_until_its_lease_expires(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(1))
    [first] = await PgJobStore(pool).claim("crashed", 1, 0.2)
    assert await PgJobStore(pool).claim("other", 1, 30) == []
    await asyncio.sleep(0.3)
    [again] = await PgJobStore(pool).claim("other", 1, 30)
    assert again.job_id == first.job_id
    assert again.lease_token == first.lease_token + 1


async def test_a_taken_over_lease_cannot_write(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(1))
    [stale] = await PgJobStore(pool).claim("slow", 1, 0.1)
    await asyncio.sleep(0.2)
    [fresh] = await PgJobStore(pool).claim("fast", 1, 30)
    jobs = PgJobStore(pool)
    assert not await jobs.reschedule(
        stale,
        Reschedule(
            delay_s=5,
            polls_spent=1,
            http_status=202,
            upstream_status="processing",
            job_type="spiderSite",
            not_found_count=0,
            fault_count=0,
            error=None,
        ),
    )
    assert not await jobs.finish(
        stale,
        Finish(
            state="not_found", polls_spent=1, http_status=404, not_found_count=9, fault_count=0, error="x"
        ),
    )
    assert await jobs.finish(
        fresh,
        Finish(
            state="not_found", polls_spent=1, http_status=404, not_found_count=6, fault_count=0, error="404"
        ),
    )
    row = await one(pool, "SELECT state, polls, lease_owner FROM harvester.jobs")
    assert dict(row) == {"state": "not_found", "polls": 1, "lease_owner": None}


async def test_reschedule_counts_the_request_and_sets_the_next_poll(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(1))
    [job] = await PgJobStore(pool).claim("w", 1, 30)
    assert await PgJobStore(pool).reschedule(
        job,
        Reschedule(
            delay_s=60,
            polls_spent=1,
            http_status=202,
            upstream_status="processing",
            job_type="spiderMaps",
            not_found_count=0,
            fault_count=0,
            error=None,
        ),
    )
    row = await one(
        pool,
        "SELECT polls, job_type, upstream_status, last_http_status, lease_owner, "
        "next_poll_at > now() + interval '50 s' AS later FROM harvester.jobs",
    )
    assert dict(row) == {
        "polls": 1,
        "job_type": "spiderMaps",
        "upstream_status": "processing",
        "last_http_status": 202,
        "lease_owner": None,
        "later": True,
    }


async def test_heartbeat_extends_only_our_leases(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(2))
    mine, theirs = await PgJobStore(pool).claim("me", 1, 0.3), await PgJobStore(pool).claim("them", 1, 0.3)
    await PgJobStore(pool).extend_leases("me", [mine[0].job_id, theirs[0].job_id], 30)
    await asyncio.sleep(0.4)
    [reclaimed] = await PgJobStore(pool).claim("third", 5, 30)
    assert reclaimed.job_id == theirs[0].job_id


async def test_release_hands_jobs_back_without_spending(pool: asyncpg.Pool) -> None:
    await admin.enqueue(pool, ids(3))
    claimed = await PgJobStore(pool).claim("w", 3, 30)
    await PgJobStore(pool).release("w", [c.job_id for c in claimed], 0.0)
    assert len(await PgJobStore(pool).claim("w2", 5, 30)) == 3
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
    await admin.enqueue(pool, [old, new])
    await pool.execute(
        "UPDATE harvester.jobs SET enqueued_at = now() - interval '8 days' WHERE job_id = $1", old
    )
    assert await PgJobStore(pool).expire(7 * 86400, 1000) == 1
    rows = await pool.fetch("SELECT job_id, state FROM harvester.jobs")
    states = {row["job_id"]: row["state"] for row in rows}
    assert states == {old: "expired", new: "pending"}


async def test_requeue_by_state_and_by_id(pool: asyncpg.Pool) -> None:
    a, b, c = ids(3)
    await admin.enqueue(pool, [a, b, c])
    await pool.execute(
        "UPDATE harvester.jobs SET state='failed', finished_at=now() WHERE job_id = ANY($1)", [a, b]
    )
    await pool.execute("UPDATE harvester.jobs SET state='not_found' WHERE job_id = $1", c)
    assert await admin.requeue(pool, [c], None) == 1
    assert await admin.requeue(pool, [], "failed") == 2
    assert (
        await pool.fetchval(
            "SELECT count(*) FROM harvester.jobs WHERE state='pending' AND finished_at IS NULL"
        )
        == 3
    )


async def test_status_reports_states_and_oldest_pending(pool: asyncpg.Pool) -> None:
    a, b = ids(2)
    await admin.enqueue(pool, [a, b])
    await pool.execute(
        "UPDATE harvester.jobs SET state='failed', last_error='boom', polls=3 WHERE job_id=$1", a
    )
    report = await admin.status(pool)
    assert report.counts == {"pending": 1, "failed": 1}
    assert report.polls["failed"] == 3
    assert report.oldest_pending_age_s is not None and report.oldest_pending_age_s >= 0
    assert report.recent_errors[0]["error"] == "boom"


async def test_expiry_works_in_bounded_batches_oldest_first(pool: asyncpg.Pool) -> None:
    stale = ids(5)
    await admin.enqueue(pool, stale + ids(1))
    await pool.execute(
        "UPDATE harvester.jobs SET enqueued_at = now() - interval '8 days' "
        "- (random() * interval '1 hour') WHERE job_id = ANY($1)",
        stale,
    )
    await pool.execute(
        "UPDATE harvester.jobs SET next_poll_at = now() + interval '1 hour' WHERE job_id <> $1", stale[0]
    )
    leased = await PgJobStore(pool).claim("w", 5, 30)
    assert [job.job_id for job in leased] == [stale[0]]
    jobs = PgJobStore(pool)
    assert [await jobs.expire(7 * 86400, 2) for _ in range(4)] == [2, 2, 0, 0]
    expired = {
        r["job_id"] for r in await pool.fetch("SELECT job_id FROM harvester.jobs WHERE state = 'expired'")
    }
    assert expired == set(stale) - {leased[0].job_id}  # a leased job is its holder's to finish


async def test_the_statement_timeout_applies_inside_every_seam_call(pool: asyncpg.Pool) -> None:
    """Set per transaction (SET LOCAL), so it holds behind a pooler that refuses startup settings."""
    jobs = PgJobStore(pool, statement_timeout_s=0.05)
    await pool.execute(
        "CREATE FUNCTION harvester.slow() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN PERFORM pg_sleep(0.5); RETURN NEW; END $$"
    )
    await pool.execute(
        "CREATE TRIGGER slow BEFORE UPDATE ON harvester.jobs FOR EACH ROW EXECUTE FUNCTION harvester.slow()"
    )
    await admin.enqueue(pool, ids(1))
    with pytest.raises(DatabaseError, match="QueryCanceledError"):
        await jobs.claim("w", 1, 30)
    assert await pool.fetchval("SELECT count(*) FROM harvester.jobs WHERE lease_owner IS NULL") == 1
    assert await pool.fetchval("SHOW statement_timeout") != "50ms"  # nothing leaked to the session


async def test_a_missing_schema_is_a_database_error_naming_the_fix(empty_db_dsn: str) -> None:
    pool = await asyncpg.create_pool(empty_db_dsn, min_size=1, max_size=1)
    assert pool is not None
    try:
        with pytest.raises(DatabaseError, match="run `harvester migrate` first"):
            await PgJobStore(pool).claim("w", 1, 30)
    finally:
        await pool.close()


async def test_the_daemon_store_reads_raw_phones_in_its_default_region(pool: asyncpg.Pool) -> None:
    """What the worker stores goes through the region the daemon was configured with."""
    job_id = uuid.uuid4()
    await admin.enqueue(pool, [job_id])
    jobs = PgJobStore(pool, region="US")
    [job] = await jobs.claim("w", 1, 30)
    body = json.dumps(
        {
            "job_id": str(job_id),
            "type": "spiderSite",
            "status": "completed",
            "data": {"url": "https://example.com", "phones": ["(617) 253-1234"]},
        }
    ).encode()
    outcome = await jobs.store_result(job, Completed(body=body, doc=read_body(body)))
    assert outcome.kind == "harvested"
    row = await one(pool, "SELECT phone, e164 FROM harvester.site_phones WHERE job_id = $1", job_id)
    assert tuple(row) == ("(617) 253-1234", "+16172531234")


async def test_a_hold_keeps_what_the_list_wrote_while_the_job_was_claimed(pool: asyncpg.Pool) -> None:
    """The worker claims a fresh job and hands it back unpolled (its first poll is not worth a
    request yet); a list page that meanwhile showed it queued, or finished, is not undone."""
    queued, finished, plain = ids(3)
    await admin.enqueue(pool, [queued, finished, plain])
    jobs, listings = PgJobStore(pool), PgListings(pool)
    claimed = {c.job_id: c for c in await jobs.claim("w1", 10, 30)}
    assert await listings.defer_running([Listed(queued, "queued", "spiderSite", 900.0)]) == [queued]
    assert await listings.mark_finished([Listed(finished, "completed", "spiderSite")]) == [finished]
    # still under lease: nothing became claimable a second time
    assert await PgJobStore(pool).claim("w2", 10, 30) == []
    short = [Listed(plain, "processing", "spiderSite", 1.0)]
    assert await listings.defer_running(short) == [plain]  # a defer shorter than the lease: the lease's end
    await asyncio.sleep(1.2)
    assert await PgJobStore(pool).claim("w2", 10, 30) == []
    await pool.execute("UPDATE harvester.jobs SET upstream_status = NULL WHERE job_id = $1", plain)
    hold = Reschedule(
        delay_s=60.0, polls_spent=0, http_status=None, not_found_count=0, fault_count=0, error=None
    )
    for job_id in (queued, finished, plain):
        assert await jobs.reschedule(claimed[job_id], hold)
    waits = {
        r["job_id"]: r["wait_s"]
        for r in await pool.fetch(
            "SELECT job_id, extract(epoch FROM next_poll_at - now())::float8 AS wait_s FROM harvester.jobs"
        )
    }
    assert waits[queued] > 800.0  # the queued defer stays
    assert waits[finished] <= 0  # due at once: its results are one fetch away
    assert 50.0 < waits[plain] <= 60.0  # nothing written meanwhile: the hold as asked
    # a poll that spent a request writes its own answer, whatever was written before
    [again] = [c for c in await jobs.claim("w1", 10, 30) if c.job_id == finished]
    polled = Reschedule(
        delay_s=30.0, polls_spent=1, http_status=202, not_found_count=0, fault_count=0, error=None
    )
    assert await jobs.reschedule(again, polled)
    wait = await pool.fetchval(
        "SELECT extract(epoch FROM next_poll_at - now())::float8 FROM harvester.jobs WHERE job_id = $1",
        finished,
    )
    assert 20.0 < wait <= 30.0


async def test_a_started_job_keeps_its_due_time_when_asked_and_is_deferred_again_otherwise(
    pool: asyncpg.Pool,
) -> None:
    """With the stream up a page showing a started job running again keeps the due time its start
    gave (``keep_started``); without it every page defers it again. A queued job that starts, and
    a job nobody had shown, get the defer given either way."""
    started, waiting, unseen = ids(3)
    await admin.enqueue(pool, [started, waiting, unseen])
    listings = PgListings(pool)
    await listings.defer_running([Listed(started, "processing", "spiderSite", 40.0)])
    await listings.defer_running([Listed(waiting, "queued", "spiderSite", 900.0)])

    async def waits() -> dict[uuid.UUID, float]:
        rows = await pool.fetch(
            "SELECT job_id, extract(epoch FROM next_poll_at - now())::float8 AS wait_s FROM harvester.jobs"
        )
        return {r["job_id"]: r["wait_s"] for r in rows}

    again = [Listed(j, "processing", "spiderSite", 120.0) for j in (started, waiting, unseen)]
    deferred = await listings.defer_running(again, keep_started=True)
    assert sorted(deferred) == sorted([started, waiting, unseen])
    kept = await waits()
    assert 30.0 < kept[started] <= 40.0  # kept: its end is overdue 40 s after its start
    assert 110.0 < kept[waiting] <= 120.0  # queued, now started: the defer given, not 900 s
    assert 110.0 < kept[unseen] <= 120.0
    await listings.defer_running([Listed(started, "processing", "spiderSite", 120.0)])
    assert 110.0 < (await waits())[started] <= 120.0  # the stream down: each page defers it again


async def test_an_end_seen_while_a_poll_was_in_flight_outlives_its_202(pool: asyncpg.Pool) -> None:
    """The poll went out, the stream announced the end, then the 202 came back: the 202 is older
    than the end, so the job is due at once and stays known finished. A job already known finished
    when it was claimed that still answers 202 (results not ready) waits as the 202 says."""
    in_flight, known = ids(2)
    await admin.enqueue(pool, [in_flight, known])
    jobs, listings = PgJobStore(pool), PgListings(pool)
    await listings.mark_finished([Listed(known, "completed", "spiderSite")])
    claimed = {c.job_id: c for c in await jobs.claim("w1", 10, 30)}
    assert await listings.mark_finished([Listed(in_flight, "completed", "spiderSite")]) == [in_flight]
    for job_id in (in_flight, known):
        assert await jobs.reschedule(claimed[job_id], ANSWERED_202)
    rows = {
        r["job_id"]: r
        for r in await pool.fetch(
            "SELECT job_id, upstream_status, polls,"
            "       extract(epoch FROM next_poll_at - now())::float8 AS wait_s FROM harvester.jobs"
        )
    }
    assert rows[in_flight]["wait_s"] <= 0 and rows[in_flight]["upstream_status"] == "completed"
    assert rows[in_flight]["polls"] == 1  # the request is still counted
    assert 290.0 < rows[known]["wait_s"] <= 300.0 and rows[known]["upstream_status"] == "processing"


async def test_an_adopted_job_keeps_only_an_end_so_the_defer_after_it_applies(pool: asyncpg.Pool) -> None:
    """Adopt mode: the page or event that showed a job queued or running defers it right after
    adopting it; had the insert noted it running, a page with the stream up would keep its due
    time (now) and it would be polled while it runs. An adopted end is due at once."""
    running, ended = ids(2)
    listings = PgListings(pool)
    shown = [Listed(running, "processing", "spiderSite"), Listed(ended, "completed", "spiderSite")]
    assert sorted(await PgAdopter(pool).adopt(shown)) == sorted([running, ended])
    await listings.defer_running([Listed(running, "processing", "spiderSite", 40.0)], keep_started=True)
    rows = {
        r["job_id"]: r
        for r in await pool.fetch(
            "SELECT job_id, upstream_status, extract(epoch FROM next_poll_at - now())::float8 AS wait_s"
            "  FROM harvester.jobs"
        )
    }
    assert rows[running]["upstream_status"] == "processing" and 30.0 < rows[running]["wait_s"] <= 40.0
    assert rows[ended]["upstream_status"] == "completed" and rows[ended]["wait_s"] <= 0


async def _waits(pool: asyncpg.Pool) -> dict[uuid.UUID, tuple[float, str | None]]:
    rows = await pool.fetch(
        "SELECT job_id, upstream_status, extract(epoch FROM next_poll_at - now())::float8 AS wait_s"
        "  FROM harvester.jobs"
    )
    return {r["job_id"]: (r["wait_s"], r["upstream_status"]) for r in rows}


# A poll answered 202, still processing: next poll in 300 s.
ANSWERED_202 = Reschedule(
    delay_s=300.0,
    polls_spent=1,
    http_status=202,
    not_found_count=0,
    fault_count=0,
    error=None,
    upstream_status="processing",
)


def _hold(delay_s: float) -> Reschedule:
    return Reschedule(
        delay_s=delay_s, polls_spent=0, http_status=None, not_found_count=0, fault_count=0, error=None
    )


async def test_the_first_news_of_a_job_replaces_its_first_poll_hold(pool: asyncpg.Pool) -> None:
    """A job nobody had mentioned was claimed and held (375 s with the stream up); then its start
    arrives: it is overdue 40 s after that start, not when the hold ends. News that came while it
    was held is kept by the hold too, even a defer shorter than the lease."""
    held_first, news_first = ids(2)
    await admin.enqueue(pool, [held_first, news_first])
    jobs, listings = PgJobStore(pool), PgListings(pool)
    claimed = {c.job_id: c for c in await jobs.claim("w1", 10, 30)}
    assert await jobs.reschedule(claimed[held_first], _hold(375.0))
    await listings.defer_running([Listed(news_first, "processing", "spiderSite", 10.0)])  # under lease
    assert await jobs.reschedule(claimed[news_first], _hold(375.0))
    await listings.defer_running([Listed(held_first, "processing", "spiderSite", 40.0)])
    waits = await _waits(pool)
    assert 30.0 < waits[held_first][0] <= 40.0
    assert waits[news_first][0] <= 30.0 and waits[news_first][1] == "processing"  # the lease's end


async def test_an_end_is_not_undone_by_a_late_start_or_a_page_read_before_it(pool: asyncpg.Pool) -> None:
    ended, leased = ids(2)
    await admin.enqueue(pool, [ended, leased])
    jobs, listings = PgJobStore(pool), PgListings(pool)
    await listings.mark_finished([Listed(ended, "canceled", "spiderSite")])  # the docs' other spelling
    for keep in (False, True):
        await listings.defer_running([Listed(ended, "processing", "spiderSite", 40.0)], keep_started=keep)
    assert (await _waits(pool))[ended][1] == "canceled" and (await _waits(pool))[ended][0] <= 0
    # a poll in flight whose 202 comes back after a "canceled" page: due at once, still ended
    await pool.execute("UPDATE harvester.jobs SET upstream_status = NULL WHERE job_id = $1", ended)
    [claimed] = [c for c in await jobs.claim("w1", 10, 30) if c.job_id == ended]
    await listings.mark_finished([Listed(ended, "canceled", "spiderSite")])
    assert await jobs.reschedule(claimed, ANSWERED_202)
    wait, status = (await _waits(pool))[ended]
    assert wait <= 0 and status == "canceled"


async def test_a_started_job_under_lease_keeps_at_least_its_lease_end(pool: asyncpg.Pool) -> None:
    job_id = ids(1)[0]
    await admin.enqueue(pool, [job_id])
    jobs, listings = PgJobStore(pool), PgListings(pool)
    await listings.defer_running([Listed(job_id, "processing", "spiderSite", 1.0)])
    await asyncio.sleep(1.1)
    assert [c.job_id for c in await jobs.claim("w1", 10, 30)] == [job_id]
    await listings.defer_running([Listed(job_id, "processing", "spiderSite", 1.0)], keep_started=True)
    assert await PgJobStore(pool).claim("w2", 10, 30) == []  # not claimable twice
    assert 25.0 < (await _waits(pool))[job_id][0] <= 30.0
