"""The daemon's lifetime helpers: the one way a loop sleeps, the retry backoff, side-task keeping."""

from __future__ import annotations

import asyncio
import itertools
import random

import pytest
from structlog.testing import capture_logs

from harvester import lifetime
from harvester.errors import DatabaseError


async def test_a_wait_already_stopped_returns_at_once() -> None:
    stop = asyncio.Event()
    stop.set()
    assert await asyncio.wait_for(lifetime.wait(stop, 3600.0), 1) is True


async def test_a_wait_runs_its_time_out_when_nothing_happens() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await lifetime.wait(asyncio.Event(), 0.05) is False
    assert loop.time() - started >= 0.04


async def test_a_negative_wait_is_no_wait() -> None:
    assert await asyncio.wait_for(lifetime.wait(asyncio.Event(), -5.0), 1) is False


async def test_an_event_ends_the_wait_and_is_consumed() -> None:
    stop, work = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, work.set)
    assert await asyncio.wait_for(lifetime.wait(stop, 3600.0, work), 1) is False
    assert not work.is_set()  # cleared: the next wait sleeps again
    assert await lifetime.wait(stop, 0.01, work) is False


async def test_a_stop_during_the_wait_ends_it_and_stays_set() -> None:
    stop, work = asyncio.Event(), asyncio.Event()
    asyncio.get_running_loop().call_later(0.01, stop.set)
    assert await asyncio.wait_for(lifetime.wait(stop, 3600.0, work), 1) is True
    assert stop.is_set()


def test_backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() -> None:
    backoff = lifetime.Backoff(0.5, 5.0, jitter=0.0)
    assert [backoff.next() for _ in range(6)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0]
    backoff.reset()
    assert backoff.next() == 0.5


def test_backoff_jitter_stays_within_its_share() -> None:
    backoff = lifetime.Backoff(1.0, 1.0, jitter=0.2, rng=random.Random(7))
    delays = [backoff.next() for _ in range(200)]
    assert all(0.8 <= d <= 1.2 for d in delays)
    assert len(set(delays)) > 100  # jittered, not one value


async def test_keep_running_sleeps_the_pause_each_round_returns() -> None:
    stop = asyncio.Event()
    rounds: list[float] = []

    async def step() -> float:
        rounds.append(asyncio.get_running_loop().time())
        if len(rounds) == 3:
            stop.set()
        return 0.02

    await asyncio.wait_for(lifetime.keep_running("sweep", step, stop, backoff=lifetime.Backoff(1, 1)), 5)
    assert len(rounds) == 3
    assert all(b - a >= 0.015 for a, b in itertools.pairwise(rounds))


async def test_keep_running_retries_a_database_error_with_backoff_and_says_so() -> None:
    stop = asyncio.Event()
    calls = 0

    async def step() -> float:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise DatabaseError("database unavailable")
        stop.set()
        return 0.0

    backoff = lifetime.Backoff(0.01, 0.02, jitter=0.0)
    with capture_logs() as logged:
        await asyncio.wait_for(lifetime.keep_running("housekeeping", step, stop, backoff=backoff), 5)
    failed = [e for e in logged if e["event"] == "housekeeping_failed"]
    assert calls == 3
    assert [e["retry_in_s"] for e in failed] == [0.01, 0.02]
    assert backoff.failures == 0  # the success reset it


async def test_keep_running_lets_a_bug_end_it() -> None:
    async def step() -> float:
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        await lifetime.keep_running("sweep", step, asyncio.Event(), backoff=lifetime.Backoff(1, 1))
