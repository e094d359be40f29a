"""The expiry sweep on the fake store: bounded batches in two lanes, stopping, errors, counting."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest
from structlog.testing import capture_logs

from harvester.daemon.expiry import EXPIRE_BATCH, Expiry
from harvester.errors import DatabaseError
from tests.support import fakes

GIVE_UP_S = 7 * 86400.0
OLD = GIVE_UP_S + 86400.0


def stale(store: fakes.FakeStore, count: int) -> None:
    for _ in range(count):
        store.add(uuid4(), age_s=OLD, due_in_s=3600)


def sweep_of(store: fakes.FakeStore, stopping: asyncio.Event | None = None) -> Expiry:
    return Expiry(store, GIVE_UP_S, 60.0, stopping=stopping or asyncio.Event())


async def test_a_sweep_expires_every_stale_job_in_batches_and_says_how_many() -> None:
    store = fakes.FakeStore()
    stale(store, 2500)
    store.add(uuid4(), age_s=3600.0)  # young: stays
    with capture_logs() as logged:
        pause = await sweep_of(store).sweep()
    assert pause == 60.0
    # two lanes: 1000 and 1000, then each stops at its first short batch (500, then 0)
    assert store.calls.count("expire") == 4
    assert sorted(fakes.states(store).values()).count("expired") == 2500
    assert list(fakes.states(store).values()).count("pending") == 1
    assert [e["count"] for e in logged if e["event"] == "jobs_expired"] == [2500]


async def test_nothing_stale_logs_nothing() -> None:
    store = fakes.FakeStore()
    store.add(uuid4(), age_s=3600.0)
    with capture_logs() as logged:
        await sweep_of(store).sweep()
    assert store.calls.count("expire") == 2  # one short batch per lane
    assert not [e for e in logged if e["event"] == "jobs_expired"]


async def test_once_the_worker_stops_a_sweep_ends_after_the_batches_under_way() -> None:
    store = fakes.FakeStore()
    stale(store, 5 * EXPIRE_BATCH)
    stopping = asyncio.Event()
    stopping.set()
    await sweep_of(store, stopping).sweep()
    assert store.calls.count("expire") == 2  # one full batch per lane, then no more
    assert list(fakes.states(store).values()).count("expired") == 2 * EXPIRE_BATCH


async def test_a_database_error_in_one_lane_reaches_the_retry_as_itself() -> None:
    """``keep_running`` retries a ``DatabaseError``; two lanes must not turn it into a group."""
    store = fakes.FakeStore()
    store.failing.add("expire")
    with pytest.raises(DatabaseError, match="expire: database unavailable"):
        await sweep_of(store).sweep()


async def test_a_batch_under_way_when_the_sweep_is_cancelled_commits_and_is_counted() -> None:
    """The daemon cancels its side tasks on the way out; a batch may be committing then."""

    class Slow(fakes.FakeStore):
        def __init__(self) -> None:
            super().__init__()
            self.entered = asyncio.Event()
            self.go = asyncio.Event()

        async def expire(self, give_up_after_s: float, batch: int) -> int:
            self.entered.set()
            await self.go.wait()
            return await super().expire(give_up_after_s, batch)

    store = Slow()
    stale(store, 10)
    with capture_logs() as logged:
        task = asyncio.create_task(sweep_of(store).sweep())
        await asyncio.wait_for(store.entered.wait(), 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done()  # waiting for its batches, which were not cancelled
        store.go.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    assert list(fakes.states(store).values()) == ["expired"] * 10
    assert [e["count"] for e in logged if e["event"] == "jobs_expired"] == [10]
