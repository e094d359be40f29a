"""Fault injection: every fault flag and admin switch does what it says."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from harvester.sim import FaultSettings, ManualClock, SimServer

TOKEN = "cli_alpha:sk_alpha:secret_alpha"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def session() -> aiohttp.ClientSession:
    # A fresh connection per request: a reused one makes aiohttp retry GETs after a reset.
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True), headers=AUTH)


async def admin(sim: SimServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.post(sim.url + path, json=body) as resp:
        assert resp.status in (200, 201), await resp.text()
        answer: dict[str, Any] = await resp.json()
        return answer


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimServer]:
    async with SimServer(
        clock=clock, seed=3, tokens=[TOKEN], burst=10_000, rate_per_minute=600_000
    ) as server:
        yield server


async def done_job(sim: SimServer) -> str:
    answer = await admin(sim, "/_sim/jobs", {"count": 1, "outcome": "completed", "start_offset_s": 1000})
    job_id: str = answer["job_ids"][0]
    return job_id


async def test_share_of_5xx_from_flags(clock: ManualClock) -> None:
    async with (
        SimServer(
            clock=clock,
            tokens=[TOKEN],
            burst=10_000,
            rate_per_minute=600_000,
            faults=FaultSettings(error_5xx=0.5),
        ) as sim,
        session() as s,
    ):
        codes: Counter[int] = Counter()
        for _ in range(200):
            async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
                codes[resp.status] += 1
                if resp.status >= 500:
                    assert set(await resp.json()) == {"detail"}
                    assert "X-RateLimit-Remaining" in resp.headers
        errors = codes[500] + codes[502] + codes[503]
        assert 60 <= errors <= 140 and codes[200] == 200 - errors
        assert {500, 502, 503} <= set(codes)
        assert sim.stats()["faults_served"]["5xx"] == errors


async def test_faults_do_not_touch_submit_or_admin(clock: ManualClock) -> None:
    async with (
        SimServer(clock=clock, tokens=[TOKEN], faults=FaultSettings(error_5xx=1.0)) as sim,
        session() as s,
    ):
        async with s.post(
            f"{sim.url}/api/v1/jobs/spiderSite/submit", json={"payload": {"url": "https://a.com"}}
        ) as resp:
            assert resp.status == 201
        async with s.get(f"{sim.url}/api/v1/system/health") as resp:
            assert resp.status == 200
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status in (500, 502, 503)


async def test_reset_aborts_the_connection(sim: SimServer) -> None:
    job_id = await done_job(sim)
    await admin(sim, "/_sim/faults", {"reset": 1.0})
    async with session() as s:
        with pytest.raises(aiohttp.ClientOSError):
            async with s.get(f"{sim.url}/api/v1/jobs/{job_id}/results") as resp:
                await resp.read()
    assert sim.stats()["requests_by_endpoint"]["results"]["reset"] >= 1
    assert sim.state.jobs[job_id].fetches_done == 0


async def test_truncated_body_announces_the_full_length(sim: SimServer) -> None:
    job_id = await done_job(sim)
    await admin(sim, "/_sim/faults", {"next": ["truncate"]})
    async with session() as s:
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(f"{sim.url}/api/v1/jobs/{job_id}/results") as resp:
                assert resp.status == 200
                await resp.read()
        async with s.get(f"{sim.url}/api/v1/jobs/{job_id}/results") as resp:
            body = await resp.json()
            assert body["status"] == "completed"
    assert sim.stats()["requests_by_endpoint"]["results"] == {"truncated": 1, "200": 1}


async def test_truncation_on_the_wire() -> None:
    async with SimServer(clock=ManualClock(), tokens=[TOKEN], faults=FaultSettings(truncate=1.0)) as sim:
        host, port = sim.url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        writer.write(
            f"GET /api/v1/jobs/list HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n\r\n".encode()
        )
        await writer.drain()
        raw = await reader.read()  # until the server closes
        writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        length = int(
            next(
                line.split(b":")[1]
                for line in head.split(b"\r\n")
                if line.lower().startswith(b"content-length")
            )
        )
        assert 0 < len(body) < length
        with pytest.raises(json.JSONDecodeError):
            json.loads(body)


async def test_hang_outlasts_the_client_timeout(sim: SimServer) -> None:
    await admin(sim, "/_sim/faults", {"hang": 1.0, "hang_s": 30})
    async with session() as s:
        with pytest.raises(asyncio.TimeoutError):
            async with s.get(f"{sim.url}/api/v1/jobs/list", timeout=aiohttp.ClientTimeout(total=0.3)):
                pass
    assert sim.stats()["requests_by_endpoint"]["list"] == {"hang": 1}


async def test_short_hang_then_answers(sim: SimServer) -> None:
    await admin(sim, "/_sim/faults", {"next": ["hang"], "hang_s": 0.2})
    async with session() as s, s.get(f"{sim.url}/api/v1/jobs/list") as resp:
        assert resp.status == 200


async def test_storm_answers_429_for_its_duration(sim: SimServer, clock: ManualClock) -> None:
    await admin(sim, "/_sim/faults", {"storm_s": 30})
    async with session() as s:
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status == 429
            assert resp.headers["Retry-After"] == "30"
            assert await resp.json() == {"detail": "Rate limit exceeded"}
        clock.advance(20)
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "10"
        clock.advance(10.5)
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status == 200
    stats = sim.stats()
    assert stats["served_429"] == 2 and stats["rate_limit"]["cli_alpha"]["requests"] == 3


async def test_storm_from_flags_with_fixed_retry_after(clock: ManualClock) -> None:
    async with (
        SimServer(clock=clock, tokens=[TOKEN], faults=FaultSettings(storm_s=5)) as sim,
        session() as s,
    ):
        await admin(sim, "/_sim/faults", {"storm_retry_after_s": 2})
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status == 429 and resp.headers["Retry-After"] == "2"


async def test_long_retry_after_is_a_budget_refusal(sim: SimServer) -> None:
    await admin(sim, "/_sim/faults", {"long_retry_after": 1.0, "long_retry_after_s": 3600})
    async with session() as s, s.get(f"{sim.url}/api/v1/jobs/list") as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3600"
        assert set(await resp.json()) == {"detail"}


@pytest.mark.parametrize("status", [401, 403])
async def test_revoke_and_restore_a_token(sim: SimServer, status: int) -> None:
    await admin(sim, "/_sim/tokens", {"token": TOKEN, "action": "revoke", "status": status})
    async with session() as s:
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status == status and set(await resp.json()) == {"detail"}
        await admin(sim, "/_sim/tokens", {"token": "cli_alpha", "action": "restore"})
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status == 200


async def test_tokens_can_be_added_and_deactivated(sim: SimServer) -> None:
    new = "cli_new:sk_new:secret_new"
    answer = await admin(sim, "/_sim/tokens", {"token": new, "action": "add", "burst": 2})
    assert answer == {"client_id": "cli_new", "status": "active", "revoked_status": 401}
    async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {new}"}) as s:
        codes = []
        for _ in range(3):
            async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
                codes.append(resp.status)
        assert codes == [200, 200, 429]
        await admin(sim, "/_sim/tokens", {"token": new, "action": "deactivate"})
        async with s.get(f"{sim.url}/api/v1/jobs/list") as resp:
            assert resp.status == 403


async def test_clear_removes_every_fault(sim: SimServer) -> None:
    await admin(sim, "/_sim/faults", {"5xx": 1.0, "storm_s": 100})
    state = await admin(sim, "/_sim/faults", {"clear": True})
    assert state["error_5xx"] == 0.0 and state["storm_remaining_s"] == 0.0
    async with session() as s, s.get(f"{sim.url}/api/v1/jobs/list") as resp:
        assert resp.status == 200


async def test_bad_fault_request_is_400(sim: SimServer) -> None:
    async with aiohttp.ClientSession() as s:
        for body in ({"explode": 1}, {"5xx": 2}):
            async with s.post(f"{sim.url}/_sim/faults", json=body) as resp:
                assert resp.status == 400


async def test_result_fetch_statistics(sim: SimServer, clock: ManualClock) -> None:
    done = [await done_job(sim) for _ in range(3)]
    answer = await admin(sim, "/_sim/jobs", {"count": 1, "duration_s": 50})
    pending = answer["job_ids"][0]
    async with session() as s:
        for job_id in [done[0], done[0], done[0], done[1], pending, pending]:
            async with s.get(f"{sim.url}/api/v1/jobs/{job_id}/results") as resp:
                await resp.read()
        async with s.get(f"{sim.url}/_sim/stats") as resp:
            stats = await resp.json()
    fetches = stats["result_fetches"]
    assert fetches["per_job"] == {done[0]: 3, done[1]: 1, pending: 2}
    assert fetches["jobs_fetched_more_than_once_after_done"] == 1
    assert fetches["total"] == 6 and fetches["max_per_job"] == 3
    assert stats["jobs_by_state"]["completed"] == 3
    assert stats["jobs_total"] == 4
