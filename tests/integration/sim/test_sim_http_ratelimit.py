"""Rate limiting over HTTP: the bucket, its headers, 429s and the statistics they leave."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator

import aiohttp
import pytest

from harvester.sim import ManualClock, SimServer

TOKEN = "cli_alpha:sk_alpha:secret_alpha"
OTHER = "cli_beta:sk_beta:secret_beta"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimServer]:
    async with SimServer(clock=clock, seed=2, tokens=[TOKEN, OTHER]) as server:
        yield server


async def get(
    session: aiohttp.ClientSession, url: str, token: str = TOKEN
) -> tuple[int, dict[str, str], dict[str, object]]:
    async with session.get(url, headers={"Authorization": f"Bearer {token}"}) as resp:
        return resp.status, dict(resp.headers), await resp.json()


async def test_burst_of_20_then_one_per_0_6_s(sim: SimServer, clock: ManualClock) -> None:
    url = f"{sim.url}/api/v1/jobs/list"
    async with aiohttp.ClientSession() as session:
        codes = [(await get(session, url))[0] for _ in range(25)]
        assert codes.count(200) == 20 and codes[20:] == [429] * 5
        clock.advance(1.3)
        later = [(await get(session, url))[0] for _ in range(5)]
        assert later.count(200) == 2
        clock.advance(60)
        refill = [(await get(session, url))[0] for _ in range(25)]
        assert refill.count(200) == 20


async def test_headers_on_every_authenticated_answer(sim: SimServer, clock: ManualClock) -> None:
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await get(session, f"{sim.url}/api/v1/jobs/list")
        assert status == 200
        assert headers["X-RateLimit-Limit"] == "100"
        assert headers["X-RateLimit-Remaining"] == "19"
        assert int(headers["X-RateLimit-Reset"]) >= int(clock.real_wall(0.0))
        status, headers, _ = await get(session, f"{sim.url}/api/v1/jobs/nope/results")
        assert status == 404 and headers["X-RateLimit-Remaining"] == "18"
        for _ in range(18):
            await get(session, f"{sim.url}/api/v1/jobs/list")
        status, headers, body = await get(session, f"{sim.url}/api/v1/jobs/list")
        assert status == 429
        assert body == {"detail": "Rate limit exceeded"}
        assert headers["Retry-After"] == "1"
        assert headers["X-RateLimit-Remaining"] == "0"
        assert int(headers["X-RateLimit-Reset"]) >= int(clock.real_wall(12.0))


async def test_each_credential_has_its_own_bucket(sim: SimServer) -> None:
    url = f"{sim.url}/api/v1/jobs/list"
    async with aiohttp.ClientSession() as session:
        for _ in range(21):
            await get(session, url)
        status, _, _ = await get(session, url, OTHER)
        assert status == 200


async def test_stats_count_every_request_including_429s(sim: SimServer, clock: ManualClock) -> None:
    url = f"{sim.url}/api/v1/jobs/list"
    async with aiohttp.ClientSession() as session:
        for _ in range(30):
            await get(session, url)
            clock.advance(0.1)
        async with session.get(f"{sim.url}/_sim/stats") as resp:
            stats = await resp.json()
    assert stats["served_429"] == 6  # 20 burst + 4 refilled by t=2.9 s; 30 sent
    assert stats["requests_by_endpoint"]["list"] == {"200": 24, "429": 6}
    assert stats["requests_by_credential"]["cli_alpha"] == {"200": 24, "429": 6}
    limits = stats["rate_limit"]["cli_alpha"]
    assert limits["max_requests_60s"] == 30 and limits["requests"] == 30
    assert limits["max_burst"] == pytest.approx(30 - 29 * 0.1 * 100 / 60, abs=0.01)
    assert "sk_alpha" not in str(stats) and "secret_alpha" not in str(stats)


async def test_rolling_window_max_uses_simulated_time() -> None:
    clock = ManualClock(speed=30)
    async with (
        SimServer(clock=clock, speed=30, burst=200, rate_per_minute=6000) as sim,
        aiohttp.ClientSession() as session,
    ):
        for _ in range(50):
            await get(session, f"{sim.url}/api/v1/jobs/list", sim.token)
            clock.advance(1.0)  # 50 requests over 50 simulated s: all in one 60 s window
        for _ in range(10):
            await get(session, f"{sim.url}/api/v1/jobs/list", sim.token)
            clock.advance(30.0)
        limits = sim.stats()["rate_limit"]["demo"]
    assert limits["max_requests_60s"] == 51
    assert limits["exceeds_rate_in_60s"] is False


async def test_real_clock_speed_scales_the_refill() -> None:
    async with SimServer(speed=60) as sim, aiohttp.ClientSession() as session:
        url = f"{sim.url}/api/v1/jobs/list"
        first = Counter([(await get(session, url, sim.token))[0] for _ in range(20)])
        assert first[200] >= 19  # a token may trickle in while the burst is sent
        await asyncio.sleep(0.25)  # 15 simulated s at speed 60: ~25 tokens, capped at 20
        again = Counter([(await get(session, url, sim.token))[0] for _ in range(20)])
        assert again[200] >= 15


async def test_reset_stats_clears_counters(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(22):
            await get(session, f"{sim.url}/api/v1/jobs/list")
        async with session.post(f"{sim.url}/_sim/reset-stats") as resp:
            assert resp.status == 200
        stats = sim.stats()
    assert stats["requests_total"] == 0 and stats["served_429"] == 0
    assert stats["rate_limit"]["cli_alpha"]["max_requests_60s"] == 0
