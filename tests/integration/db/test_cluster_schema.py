"""The schema through a promotion: a real primary, a streaming standby, ``pg_ctl promote``.

Nothing the daemon writes may live in a relation a promotion destroys; change numbers never repeat
for a different change, even when the old primary's last commits are lost (the first change on the
new timeline jumps, and the jump is declared in ``harvester.change_jumps``); the limiter counts the
grants it may have lost as made.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import asyncpg
import pytest

from harvester.db import migrate
from tests.support.cluster import Cluster, cluster
from tests.support.migrations import migrate_until

pytestmark = pytest.mark.slow


@pytest.fixture
def pair() -> Iterator[Cluster]:
    with cluster() as running:
        yield running


async def add_jobs(conn: asyncpg.Connection, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    await conn.executemany("INSERT INTO harvester.jobs (job_id) VALUES ($1)", [(i,) for i in ids])
    return ids


async def finish(conn: asyncpg.Connection, ids: list[uuid.UUID]) -> None:
    """One transaction finishing ``ids``: one numbered change each."""
    await conn.execute(
        "UPDATE harvester.jobs SET state = 'failed', finished_at = now() WHERE job_id = ANY($1::uuid[])", ids
    )


async def test_postgres_loses_an_unlogged_sequence_a_standby_replayed_when_it_is_promoted(
    pair: Cluster,
) -> None:
    """Why 014 exists, in six statements and no harvester: the fault is PostgreSQL's own."""
    primary = await asyncpg.connect(pair.primary_dsn())
    await primary.execute("CREATE UNLOGGED TABLE staged (id bigserial, v int)")
    await primary.execute("INSERT INTO staged (v) VALUES (1)")
    await primary.close()
    await pair.wait_replayed()
    pair.promote()
    promoted = await asyncpg.connect(pair.standby_dsn())
    try:
        with pytest.raises(asyncpg.InternalServerError, match="bad magic number in sequence"):
            await promoted.execute("INSERT INTO staged (v) VALUES (2)")
    finally:
        await promoted.close()


async def test_every_relation_of_the_schema_is_logged(pair: Cluster) -> None:
    conn = await asyncpg.connect(pair.primary_dsn())
    try:
        await migrate.apply(conn)
        unlogged = await conn.fetch(
            "SELECT relname FROM pg_class WHERE relnamespace = 'harvester'::regnamespace "
            "AND relpersistence <> 'p'"
        )
    finally:
        await conn.close()
    assert unlogged == []


async def test_a_database_migrated_while_a_standby_ran_numbers_changes_after_its_promotion(
    pair: Cluster,
) -> None:
    primary = await asyncpg.connect(pair.primary_dsn())
    try:
        await migrate.apply(primary)  # the standby replays the whole schema
        before = await add_jobs(primary, 3)
        await finish(primary, before)
    finally:
        await primary.close()
    await pair.wait_replayed()
    pair.promote()
    promoted = await asyncpg.connect(pair.standby_dsn())
    try:
        after = await add_jobs(promoted, 2)
        await finish(promoted, after)
        changes = await promoted.fetch("SELECT change_id, job_id FROM harvester.changes ORDER BY change_id")
        jumps = await promoted.fetch("SELECT * FROM harvester.change_jumps")
    finally:
        await promoted.close()
    numbers = [row["change_id"] for row in changes]
    assert numbers[:3] == [1, 2, 3]
    assert numbers[3:] == [2 << 40, (2 << 40) + 1]  # timeline 2 numbers from 2 * 2^40
    assert [(j["timeline"], j["first_change"], j["last_before"]) for j in jumps] == [(2, 2 << 40, 3)]
    assert {row["job_id"] for row in changes} == set(before + after)


async def test_migrate_repairs_a_database_promoted_with_the_broken_staging_sequence(pair: Cluster) -> None:
    primary = await asyncpg.connect(pair.primary_dsn())
    try:
        await migrate_until(primary, "013")  # today's schema, with its unlogged staging
        jobs = await add_jobs(primary, 4)
        await finish(primary, jobs[:1])
    finally:
        await primary.close()
    await pair.wait_replayed()
    pair.promote()
    promoted = await asyncpg.connect(pair.standby_dsn())
    try:
        with pytest.raises(asyncpg.InternalServerError, match="bad magic number"):
            await finish(promoted, jobs[1:2])  # every store failed like this
        assert "014_cluster" in await migrate.apply(promoted)
        await finish(promoted, jobs[1:3])
        await finish(promoted, jobs[3:])
        numbers = [r["change_id"] for r in await promoted.fetch("SELECT change_id FROM harvester.changes")]
        states = {r["state"] for r in await promoted.fetch("SELECT state FROM harvester.jobs")}
    finally:
        await promoted.close()
    # Whether the one change of timeline 1 had been read is unknown: the numbers jump, declared.
    assert sorted(numbers) == [1, 2 << 40, (2 << 40) + 1, (2 << 40) + 2]
    assert states == {"failed"}


async def test_change_numbers_lost_with_the_old_primary_are_never_handed_out_again(pair: Cluster) -> None:
    """A lossy failover: the walsender is held, the primary numbers changes a consumer reads, then
    dies. The new primary's numbers all lie beyond what the consumer read, and the jump is declared."""
    primary = await asyncpg.connect(pair.primary_dsn())
    await migrate.apply(primary)
    jobs = await add_jobs(primary, 10)
    await finish(primary, jobs[:4])
    await pair.wait_replayed()
    await pair.hold_wal()
    for job in jobs[4:7]:  # committed on the primary only
        await finish(primary, [job])
    consumer_read = [r["change_id"] for r in await primary.fetch("SELECT change_id FROM harvester.changes")]
    await primary.close()
    pair.kill_primary()
    pair.promote()
    promoted = await asyncpg.connect(pair.standby_dsn())
    try:
        lost = await promoted.fetch(
            "SELECT job_id FROM harvester.jobs WHERE state = 'pending' AND job_id = ANY($1::uuid[])",
            jobs[4:7],
        )
        await finish(promoted, jobs[4:])  # the lost ones finish again, with the rest
        rows = await promoted.fetch("SELECT change_id, job_id FROM harvester.changes ORDER BY change_id")
        jump = await promoted.fetchrow("SELECT * FROM harvester.change_jumps")
    finally:
        await promoted.close()
    assert consumer_read == [1, 2, 3, 4, 5, 6, 7]
    assert len(lost) == 3  # the commits were really lost
    new = [r for r in rows if r["change_id"] > max(consumer_read)]
    assert {r["job_id"] for r in new} == set(jobs[4:])  # a consumer at 7 sees every new change
    assert [r["change_id"] for r in rows if r["change_id"] <= max(consumer_read)] == [1, 2, 3, 4]
    assert jump is not None and (jump["last_before"], jump["first_change"]) == (4, new[0]["change_id"])


async def test_the_limiter_counts_grants_lost_in_a_failover_as_made(pair: Cluster) -> None:
    """Ten grants reach the standby, ten more are lost; the new primary may not grant a full
    burst on top of the twenty that were really sent."""
    args = ("k", 100, 60.0, 0.6, 20, 0.0)
    reserve = "SELECT granted_at, db_now FROM harvester.rate_reserve($1, $2, $3, $4, $5, $6)"
    primary = await asyncpg.connect(pair.primary_dsn())
    await migrate.apply(primary)

    async def grant(conn: asyncpg.Connection) -> asyncpg.Record:
        row = await conn.fetchrow(reserve, *args)
        assert row is not None
        return row

    sent = [await grant(primary) for _ in range(10)]
    await pair.wait_replayed()
    await pair.hold_wal()
    sent += [await grant(primary) for _ in range(10)]
    await primary.close()
    pair.kill_primary()
    pair.promote()
    promoted = await asyncpg.connect(pair.standby_dsn())
    try:
        after = [await grant(promoted) for _ in range(20)]
        timeline = await promoted.fetchval("SELECT timeline FROM harvester.rate_limits")
    finally:
        await promoted.close()
    grants = sorted([r["granted_at"] for r in sent] + [r["granted_at"] for r in after])
    assert timeline == 2
    # GCRA with burst 20 every 0.6 s: grants i..j need (j - i + 1) <= 20 + span / 0.6, the lost included
    excess = max(
        (j - i + 1) - 20 - (grants[j] - grants[i]).total_seconds() / 0.6
        for i in range(len(grants))
        for j in range(i, len(grants))
    )
    assert excess <= 0.01, excess
    # and it does not stall: the first new grant waits only for the ten slots a daemon may still
    # have been waiting for when the old primary died
    first_wait = (after[0]["granted_at"] - after[0]["db_now"]).total_seconds()
    assert first_wait <= 11 * 0.6, first_wait
