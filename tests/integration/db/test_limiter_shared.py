"""The shared limiter on a real PostgreSQL: both readings of the limit, shared state, pauses.

Assertions are on the grant times the database hands out (its own clock), checked mathematically
against a GCRA with the configured burst and against the rolling-window cap; nothing here depends on
how fast the test machine is. Limits are sped up (6000/min, 0.6 s window) or slowed down (60/min)
to suit each test.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypedDict, Unpack

import asyncpg
import pytest

from harvester.db import limiter
from harvester.errors import DatabaseError

TOKEN = "cli_limitertest:sk_limiterkey_0123456789:secret_limitersecret_abcdef"
BASE = datetime(2025, 1, 1, tzinfo=UTC)


class Limits(TypedDict):
    requests_per_minute: float
    window_s: float
    burst: int


class Options(TypedDict, total=False):
    """The keyword arguments of ``limiter.SharedLimiter`` that the tests vary."""

    requests_per_minute: float
    window_s: float
    burst: int
    default_pause_s: float
    clock: Callable[[], float]
    sleep: Callable[[float], Awaitable[Any]]
    wall: Callable[[], float]


FAST: Limits = {"requests_per_minute": 6000.0, "window_s": 0.6, "burst": 20}  # T = 10 ms, cap 60
SLOW: Limits = {"requests_per_minute": 60.0, "window_s": 60.0, "burst": 20}  # T = 1 s, cap 60


@pytest.fixture
async def pools(db_dsn: str) -> AsyncIterator[Callable[[], Any]]:
    opened: list[asyncpg.Pool] = []

    async def open_pool() -> asyncpg.Pool:
        pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=4)
        assert pool is not None
        opened.append(pool)
        return pool

    yield open_pool
    for pool in opened:
        await pool.close()


class FakeSleep:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def make(pool: asyncpg.Pool, token: str = TOKEN, **kw: Unpack[Options]) -> limiter.SharedLimiter:
    params: dict[str, Any] = {**FAST, "default_pause_s": 60.0}
    params.update(kw)
    return limiter.SharedLimiter(pool, token=token, **params)


def seconds(times: list[datetime]) -> list[float]:
    base = min(times)
    return sorted((t - base).total_seconds() for t in times)


def assert_within_limits(times: list[datetime], *, per_minute: float, window_s: float, burst: int) -> None:
    """Both readings: a GCRA with burst ``burst`` accepts every grant, and no rolling window of
    ``window_s`` holds more than the cap."""
    ts = seconds(times)
    interval = 60.0 / per_minute
    cap = int(per_minute * window_s / 60.0)
    tolerance = (burst - 1) * interval
    tat: float | None = None
    for t in ts:
        if tat is not None:
            assert t >= tat - tolerance - 1e-6, f"burst exceeded at {t:.4f}"
        tat = max(tat if tat is not None else t, t) + interval
    for i in range(len(ts) - cap):
        assert ts[i + cap] - ts[i] > window_s, f"{cap + 1} grants within {window_s}s at {ts[i]}"
    assert max(ts.count(t) for t in ts) <= burst


async def test_grants_respect_burst_and_rolling_window(pools: Callable[[], Any]) -> None:
    lim = make(await pools())
    grants = await asyncio.gather(*(lim.reserve() for _ in range(300)))
    assert_within_limits([g.at for g in grants], per_minute=6000, window_s=0.6, burst=20)
    # a cold start may use the whole burst, less the cushion kept for send jitter
    assert sum(1 for g in grants if g.wait_s == 0) >= lim.gcra_burst >= 15


async def test_two_processes_share_one_budget(pools: Callable[[], Any]) -> None:
    a, b = make(await pools()), make(await pools())

    async def run(lim: limiter.SharedLimiter) -> list[datetime]:
        return [(await lim.reserve()).at for _ in range(150)]

    got_a, got_b = await asyncio.gather(run(a), run(b))
    assert_within_limits(got_a + got_b, per_minute=6000, window_s=0.6, burst=20)
    assert len(set(got_a) & set(got_b)) <= 20


async def test_other_credential_has_its_own_budget(pools: Callable[[], Any]) -> None:
    pool = await pools()
    a, b = make(pool, **SLOW), make(pool, token="another:token:entirely", **SLOW)
    for _ in range(a.gcra_burst):
        await a.reserve()
    assert (await a.reserve()).wait_s > 0.5
    assert (await b.reserve()).wait_s == 0.0


async def test_restart_gets_no_fresh_burst(pools: Callable[[], Any]) -> None:
    first_pool = await pools()
    before = make(first_pool, **SLOW)
    burst = [await before.reserve() for _ in range(before.gcra_burst)]
    assert all(g.wait_s < 0.5 for g in burst)
    await first_pool.close()
    after = make(await pools(), **SLOW)  # a new process: same database, same credential
    grant = await after.reserve()
    assert grant.wait_s > 0.5
    assert (grant.at - burst[0].at).total_seconds() >= 1.0  # one interval after the burst


async def test_pause_blocks_every_instance(pools: Callable[[], Any]) -> None:
    sleep_a, sleep_b = FakeSleep(), FakeSleep()
    a = make(await pools(), sleep=sleep_a)
    b = make(await pools(), sleep=sleep_b)
    assert await a.pause(retry_after_s=7200.0, reset_at=None, reason="budget") == pytest.approx(
        7200.0, abs=5.0
    )
    state = await b.state()
    assert state.paused_until is not None
    grant = await b.reserve()
    assert grant.at >= state.paused_until
    assert grant.wait_s >= 7195.0
    await a.acquire()
    await b.acquire()
    assert sleep_a.calls and min(sleep_a.calls) >= 7190.0
    assert sleep_b.calls and min(sleep_b.calls) >= 7190.0
    assert state.tokens == 0 and await b.available_slots(60.0) == 0


async def test_pause_is_never_shortened(pools: Callable[[], Any]) -> None:
    lim = make(await pools())
    await lim.pause(retry_after_s=3600.0, reset_at=None, reason="long")
    assert await lim.pause(retry_after_s=5.0, reset_at=None, reason="short") >= 3590.0
    state = await lim.state()
    assert state.pause_reason == "long"
    assert await lim.pause(retry_after_s=7200.0, reset_at=None, reason="longer") >= 7190.0
    assert (await lim.state()).pause_reason == "longer"


async def test_pause_from_reset_and_default(pools: Callable[[], Any]) -> None:
    pool = await pools()
    wall = 1_760_000_000.0
    by_reset = make(pool, token="a:b:c", wall=lambda: wall)
    assert await by_reset.pause(retry_after_s=None, reset_at=wall + 120, reason="x") == (
        pytest.approx(120.0, abs=2.0)
    )
    by_default = make(pool, token="d:e:f", default_pause_s=42.0)
    assert await by_default.pause(retry_after_s=None, reset_at=None, reason="x") == (
        pytest.approx(42.0, abs=2.0)
    )


async def test_slot_reserved_before_a_pause_is_dropped(pools: Callable[[], Any]) -> None:
    other = make(await pools(), **SLOW)
    calls: list[float] = []

    async def sleep_then_someone_pauses(seconds: float) -> None:
        calls.append(seconds)
        if len(calls) == 1:
            await other.pause(retry_after_s=600.0, reset_at=None, reason="429 elsewhere")

    lim = make(await pools(), sleep=sleep_then_someone_pauses, **SLOW)
    for _ in range(lim.gcra_burst):
        await lim.reserve()
    await lim.acquire()
    assert len(calls) == 2
    assert calls[0] < 2.0 and calls[1] >= 595.0


async def test_available_slots_and_state(pools: Callable[[], Any]) -> None:
    lim = make(await pools(), **SLOW)
    burst = lim.gcra_burst
    assert burst == 19  # 20 less one token of cushion for send jitter
    assert await lim.available_slots(0.0) == burst
    for _ in range(burst):
        await lim.reserve()
    assert await lim.available_slots(0.0) == 0
    assert 8 <= await lim.available_slots(10.0) <= 11
    state = await lim.state()
    assert (state.in_window, state.granted_total, state.tokens) == (burst, burst, 0)
    assert 0.5 < state.next_free_in_s <= 1.1
    described = await limiter.describe_all(lim.pool)
    assert described[0]["in_window"] == burst and described[0]["limit"] == 60
    assert described[0]["credential"] == lim.key[:12]


async def test_state_is_keyed_by_fingerprint_not_token(pools: Callable[[], Any]) -> None:
    pool = await pools()
    lim = make(pool)
    await lim.reserve()
    await lim.pause(retry_after_s=1.0, reset_at=None, reason=f"refused {TOKEN}")
    rows = await pool.fetch("SELECT credential, l::text AS everything FROM harvester.rate_limits l")
    assert [r["credential"] for r in rows] == [limiter.fingerprint(TOKEN)]
    for part in (TOKEN, *TOKEN.split(":")):
        assert part not in rows[0]["everything"]


@pytest.mark.parametrize("speed", [1.0, 30.0])
async def test_budget_use_with_unlimited_demand(pools: Callable[[], Any], speed: float) -> None:
    """Work always waiting: >= 95 % of the cap is granted, from a cold start and in steady state.

    Reservations are not slept on, so seven real-time windows of schedule take a second to build.
    """
    window = 60.0 / speed
    lim = make(await pools(), requests_per_minute=100.0 * speed, window_s=window, burst=20)
    ts = seconds([(await lim.reserve()).at for _ in range(7 * lim.limit + 1)])
    assert_within_limits(
        [BASE + timedelta(seconds=t) for t in ts], per_minute=100.0 * speed, window_s=window, burst=20
    )
    cap = lim.limit
    cold = sum(1 for t in ts if t < 5 * window) / (5 * cap)
    steady = (5 * cap) / ((ts[6 * cap] - ts[cap]) / window) / cap  # grants per window over 5
    print(f"speed {speed:g}: budget use cold start {cold:.3f}, steady state {steady:.3f}")
    assert cold >= 0.95
    assert steady >= 0.95


async def test_database_errors_are_wrapped(pools: Callable[[], Any]) -> None:
    pool = await pools()
    lim = make(pool)
    await pool.execute("DROP TABLE harvester.rate_limits CASCADE")
    with pytest.raises(DatabaseError):
        await lim.reserve()


async def test_slot_woken_too_late_is_dropped_for_a_new_one(pools: Callable[[], Any]) -> None:
    """An overloaded loop that wakes after the window's slack must not send on the stale slot."""
    now = [0.0]
    calls: list[float] = []

    async def oversleep(seconds: float) -> None:
        calls.append(seconds)
        now[0] += seconds + (5.0 if len(calls) == 1 else 0.0)  # the first wake-up is 5 s late

    lim = make(await pools(), clock=lambda: now[0], sleep=oversleep, **SLOW)
    assert 0 < lim.late_allowance_s < 5.0
    for _ in range(lim.gcra_burst):
        await lim.reserve()
    await lim.acquire()
    assert len(calls) == 2  # the late slot was given up and a later one taken


async def test_slot_woken_within_the_slack_is_used(pools: Callable[[], Any]) -> None:
    now = [0.0]
    calls: list[float] = []

    async def slightly_late(seconds: float) -> None:
        calls.append(seconds)
        now[0] += seconds + 0.01

    lim = make(await pools(), clock=lambda: now[0], sleep=slightly_late, **SLOW)
    for _ in range(lim.gcra_burst):
        await lim.reserve()
    await lim.acquire()
    assert len(calls) == 1
