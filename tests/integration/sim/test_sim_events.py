"""The simulator's event stream over real HTTP: auth by query token, handshake, heartbeats, job
events, no replay, faults (lost, cut, stall, refusal), rate limiting, stats, and the busy queue."""

from __future__ import annotations

import asyncio
import itertools
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest

from harvester.sim import ManualClock, SimServer, SimSettings
from harvester.sim.clock import iso_z

TOKEN = "cli_alpha:sk_alpha:secret_alpha"
OTHER = "cli_beta:sk_beta:secret_beta"
INACTIVE = "cli_gone:sk_gone:secret_gone"
READ_S = 3.0  # real seconds a read may wait before the test calls it "nothing came"


@dataclass
class Event:
    event: str
    data: Any


@dataclass
class Stream:
    """A small WHATWG-style SSE reader over an aiohttp response."""

    resp: aiohttp.ClientResponse
    comments: list[str] = field(default_factory=list)
    retry: list[int] = field(default_factory=list)

    async def next(self, wait_s: float = READ_S) -> Event | None:
        """The next dispatched event; None at the end of the stream. TimeoutError if none comes."""
        name, data = "", list[str]()
        while True:
            raw = await asyncio.wait_for(self.resp.content.readline(), wait_s)
            if not raw:
                return None
            line = raw.decode().rstrip("\n").rstrip("\r")
            if line == "":
                if data:
                    return Event(name or "message", json.loads("\n".join(data)))
                name = ""
                continue
            if line.startswith(":"):
                self.comments.append(line[1:].strip())
                continue
            key, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if key == "event":
                name = value
            elif key == "data":
                data.append(value)
            elif key == "retry":
                self.retry.append(int(value))

    async def until(self, pred: Callable[[Event], bool], wait_s: float = READ_S) -> list[Event]:
        """Every event up to and including the first that satisfies ``pred``."""
        seen: list[Event] = []
        while True:
            event = await self.next(wait_s)
            assert event is not None, f"stream ended; saw {[e.event for e in seen]}"
            seen.append(event)
            if pred(event):
                return seen


def url(sim: SimServer, token: str | None = TOKEN, **query: str) -> str:
    params = dict(query)
    if token is not None:
        params["token"] = token
    qs = "&".join(f"{k}={v}" for k, v in params.items())
    return f"{sim.url}/api/v1/events/stream" + (f"?{qs}" if qs else "")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


def settings(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "seed": 5,
        "tokens": [TOKEN, OTHER],
        "inactive_tokens": (INACTIVE,),
        "fail_rate": 0.0,
        "cancel_rate": 0.0,
        "burst": 1000,
        "stream_tick_s": 0.01,
        "faults": {"stream_noise": 0.0},
    }
    base.update(overrides)
    return base


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimServer]:
    async with SimServer(clock=clock, **settings()) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def admin(http: aiohttp.ClientSession, sim: SimServer, path: str, body: dict[str, Any]) -> Any:
    async with http.post(f"{sim.url}{path}", json=body) as resp:
        assert resp.status in (200, 201), await resp.text()
        return await resp.json()


async def new_job(http: aiohttp.ClientSession, sim: SimServer, token: str = TOKEN, **plan: Any) -> str:
    body = {"count": 1, "type": "spiderVerify", "token": token, **plan}
    ids: list[str] = (await admin(http, sim, "/_sim/jobs", body))["job_ids"]
    return ids[0]


async def barrier(http: aiohttp.ClientSession, sim: SimServer, stream: Stream) -> list[Event]:
    """Create a marker job and read up to its job.queued: everything due before it comes first."""
    marker = await new_job(http, sim, duration_s=10_000)
    return await stream.until(lambda e: e.event == "job.queued" and e.data["job_id"] == marker)


async def open_stream(http: aiohttp.ClientSession, address: str) -> tuple[aiohttp.ClientResponse, Stream]:
    resp = await http.get(address, headers={"Accept": "text/event-stream"})
    assert resp.status == 200, await resp.text()
    stream = Stream(resp)
    hello = await stream.next()
    assert hello is not None and hello.event == "connected"
    return resp, stream


def job_events(events: list[Event], job_id: str) -> list[str]:
    return [e.event for e in events if e.event.startswith("job.") and e.data.get("job_id") == job_id]


# auth and handshake -----------------------------------------------------------------------------


async def test_token_goes_in_the_query_string(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url(sim, None)) as resp:
        assert resp.status == 401
        assert "Invalid authentication token format" in (await resp.json())["detail"]
    async with http.get(url(sim, None), headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        assert resp.status == 401
    async with http.get(url(sim, "nocolons")) as resp:
        assert resp.status == 401
    async with http.get(url(sim, "cli_x:sk_x:secret_x")) as resp:
        assert resp.status == 401 and (await resp.json())["detail"] == "Invalid API credentials"
    async with http.get(url(sim, INACTIVE)) as resp:
        assert resp.status == 403
    stats = sim.stats()
    assert stats["requests_by_endpoint"]["events_stream"] == {"401": 4, "403": 1}
    assert stats["events"]["connections_opened"] == 0


async def test_handshake(sim: SimServer, http: aiohttp.ClientSession) -> None:
    async with http.get(url(sim)) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert "X-RateLimit-Remaining" in resp.headers
        hello = await Stream(resp).next()
        assert hello == Event(
            "connected", {"client_id": "cli_alpha", "message": "Connected to SpiderIQ event stream"}
        )


# heartbeats --------------------------------------------------------------------------------------


async def test_heartbeat_every_30_simulated_seconds(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        clock.advance(29.5)
        assert [e.event for e in await barrier(http, sim, stream)] == ["job.queued"]
        clock.advance(0.5)
        beat = await stream.next()
        assert beat == Event("heartbeat", {"timestamp": iso_z(clock.wall(30.0))})
        clock.advance(60.0)
        seen = await stream.until(lambda e: e.data.get("timestamp") == iso_z(clock.wall(90.0)))
        beats = [e.data["timestamp"] for e in seen if e.event == "heartbeat"]
        assert beats == [iso_z(clock.wall(60.0)), iso_z(clock.wall(90.0))]


async def test_heartbeats_scale_with_speed(http: aiohttp.ClientSession) -> None:
    # At speed 600 a 30 s heartbeat is 0.05 real seconds: three of them take well under READ_S.
    async with SimServer(**settings(speed=600.0, stream_tick_s=0.05)) as sim:
        resp, stream = await open_stream(http, url(sim))
        async with resp:
            beats = [await stream.next() for _ in range(3)]
    assert all(b is not None and b.event == "heartbeat" for b in beats)
    stamps = [b.data["timestamp"] for b in beats if b is not None]
    assert len(set(stamps)) == 3


# job events --------------------------------------------------------------------------------------


async def test_job_events_in_order(sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        ok = await new_job(http, sim, duration_s=20, outcome="completed")
        bad = await new_job(http, sim, duration_s=20, outcome="failed")
        queued = await stream.until(lambda e: e.event == "job.queued" and e.data["job_id"] == bad)
        assert queued[0].data["job_id"] == ok and set(queued[0].data) == {"job_id", "type", "created_at"}
        assert queued[0].data["type"] == "spiderVerify"
        clock.advance(100.0)
        seen = await barrier(http, sim, stream)
    assert job_events(seen, ok) == ["job.started", "job.completed"]
    assert job_events(seen, bad) == ["job.started", "job.failed"]
    by_kind = {(e.event, e.data["job_id"]): e.data for e in seen if e.event.startswith("job.")}
    started = by_kind[("job.started", ok)]
    assert set(started) == {"job_id", "worker_id", "started_at"} and started["worker_id"]
    done = by_kind[("job.completed", ok)]
    assert set(done) == {"job_id", "processing_time", "results_count"} and done["processing_time"] == 20.0
    assert isinstance(done["results_count"], int)
    failed = by_kind[("job.failed", bad)]
    assert set(failed) == {"job_id", "error_message"} and failed["error_message"]


async def test_account_wide_and_other_tenants_unseen(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        theirs = await new_job(http, sim, token=OTHER, duration_s=5)
        async with http.post(
            f"{sim.url}/api/v1/jobs/spiderSite/submit",
            headers={"Authorization": f"Bearer {TOKEN}"},
            json={"payload": {"url": "https://example.com"}},
        ) as r:
            mine = (await r.json())["job_id"]
        clock.advance(100.0)
        seen = await barrier(http, sim, stream)
    assert job_events(seen, theirs) == []
    assert job_events(seen, mine) == ["job.queued", "job.started", "job.completed"]


async def test_no_event_for_a_cancelled_job(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        deleted = await new_job(http, sim, duration_s=20, start_offset_s=0)
        planned = await new_job(http, sim, duration_s=20, outcome="cancelled")
        async with http.delete(
            f"{sim.url}/api/v1/jobs/{deleted}", headers={"Authorization": f"Bearer {TOKEN}"}
        ) as r:
            assert r.status == 200
        clock.advance(100.0)
        seen = await barrier(http, sim, stream)
    assert job_events(seen, deleted) == ["job.queued"]
    assert job_events(seen, planned)[0] == "job.queued"
    assert not {"job.completed", "job.failed"} & set(job_events(seen, planned))


async def test_no_replay_after_reconnect(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        job = await new_job(http, sim, duration_s=20)
        await stream.until(lambda e: e.event == "job.queued")
    async with asyncio.timeout(READ_S):  # the server notices the client has gone
        while sim.state.hub.subscribers:  # noqa: ASYNC110 - polling the server's state
            await asyncio.sleep(0.01)
    clock.advance(100.0)
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        seen = await barrier(http, sim, stream)
    assert job_events(seen, job) == []
    assert sim.stats()["events"]["connections_opened"] == 2


async def test_job_id_filter(sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    first = await new_job(http, sim, duration_s=20, start_offset_s=0)
    second = await new_job(http, sim, duration_s=20)
    resp, stream = await open_stream(http, url(sim, job_id=second))
    async with resp:
        clock.advance(100.0)
        seen = await stream.until(lambda e: e.event == "job.completed")
        assert [e.data["job_id"] for e in seen] == [second, second]
    assert first != second


@pytest.mark.parametrize(("share", "expected"), [(0.5, 10.0), (None, None)])
async def test_job_completed_reports_the_share_of_the_run(
    clock: ManualClock, http: aiohttp.ClientSession, share: float | None, expected: float | None
) -> None:
    async with SimServer(clock=clock, **settings(processing_time_share=share)) as sim:
        resp, stream = await open_stream(http, url(sim))
        async with resp:
            job_id = await new_job(http, sim, duration_s=20, outcome="completed")
            clock.advance(100.0)
            seen = await stream.until(lambda e: e.event == "job.completed" and e.data["job_id"] == job_id)
    assert set(seen[-1].data) == {"job_id", "processing_time", "results_count"}
    assert seen[-1].data["processing_time"] == expected


# faults ------------------------------------------------------------------------------------------


async def test_lost_share_is_honoured(clock: ManualClock, http: aiohttp.ClientSession) -> None:
    async with SimServer(clock=clock, **settings(faults={"events_lost": 0.3, "stream_noise": 0.0})) as sim:
        resp, stream = await open_stream(http, url(sim))
        async with resp:
            await admin(http, sim, "/_sim/jobs", {"count": 200, "type": "spiderVerify", "duration_s": 10})
            clock.advance(100.0)
            await admin(http, sim, "/_sim/faults", {"events_lost": 0.0})
            seen = await barrier(http, sim, stream)
        received = sum(1 for e in seen if e.event.startswith("job.")) - 1  # minus the marker
        lost = sim.stats()["events"]["events_lost"]
    assert received + lost == 600
    assert 0.22 < lost / 600 < 0.38


async def test_stream_cut_after_n_simulated_seconds(clock: ManualClock, http: aiohttp.ClientSession) -> None:
    async with SimServer(clock=clock, **settings(faults={"stream_cut_s": 60.0, "stream_noise": 0.0})) as sim:
        resp, stream = await open_stream(http, url(sim))
        async with resp:
            clock.advance(59.0)
            await barrier(http, sim, stream)
            clock.advance(1.0)
            assert await stream.next() is None
        assert sim.stats()["events"]["streams_cut"] == 1


async def test_stall_sends_nothing_but_keeps_the_connection(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        await admin(http, sim, "/_sim/faults", {"stream_stall": True})
        await new_job(http, sim, duration_s=5)
        clock.advance(95.0)
        with pytest.raises(TimeoutError):
            await stream.next(wait_s=0.3)
        events = sim.stats()["events"]
        assert events["open"] == 1 and events["events_sent_by_type"].get("heartbeat", 0) == 0
        assert events["events_dropped_stalled"] == 3
        await admin(http, sim, "/_sim/faults", {"stream_stall": False})
        clock.advance(30.0)
        beat = await stream.next()
        assert beat == Event("heartbeat", {"timestamp": iso_z(clock.wall(120.0))})


@pytest.mark.parametrize("code", ["429", "503"])
async def test_refusal(sim: SimServer, http: aiohttp.ClientSession, code: str) -> None:
    await admin(http, sim, "/_sim/faults", {"stream_refuse": code, "stream_refuse_retry_after_s": 7})
    async with http.get(url(sim)) as resp:
        assert resp.status == int(code)
        assert resp.headers["Retry-After"] == "7"
        assert "detail" in await resp.json()
    async with http.get(f"{sim.url}/api/v1/events/status", headers={"Authorization": f"Bearer {TOKEN}"}) as r:
        assert (await r.json())["status"] == ("unhealthy" if code == "503" else "healthy")
    await admin(http, sim, "/_sim/faults", {"clear": True})
    resp, _ = await open_stream(http, url(sim))
    resp.close()
    events = sim.stats()["events"]
    assert events["refused"] == {code: 1} and events["connections_opened"] == 1


async def test_revoking_closes_the_stream_with_an_error_event(
    sim: SimServer, http: aiohttp.ClientSession
) -> None:
    resp, stream = await open_stream(http, url(sim))
    async with resp:
        await admin(http, sim, "/_sim/tokens", {"token": "cli_alpha", "action": "revoke"})
        error = await stream.next()
        assert error == Event("error", {"message": "API credentials have been revoked"})
        assert await stream.next() is None
    async with http.get(url(sim)) as again:
        assert again.status == 401


# rate limit, status, stats -----------------------------------------------------------------------


async def test_the_stream_is_one_request_for_the_rate_limiter(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async with SimServer(clock=clock, **settings(burst=2)) as sim:
        resp, _ = await open_stream(http, url(sim))
        async with resp:
            assert resp.headers["X-RateLimit-Remaining"] == "1"
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            async with http.get(f"{sim.url}/api/v1/jobs/list", headers=bearer) as r:
                assert r.status == 200
            async with http.get(url(sim)) as refused:
                assert refused.status == 429 and int(refused.headers["Retry-After"]) >= 1
            clock.advance(0.5)  # the connection stays open: it costs nothing more over time
            async with http.get(f"{sim.url}/api/v1/jobs/list", headers=bearer) as r:
                assert r.status == 429
        limits = sim.stats()["rate_limit"]["cli_alpha"]
        assert limits["requests"] == 4
        assert sim.stats()["requests_by_endpoint"]["events_stream"] == {"200": 1, "429": 1}


async def test_events_status(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status_url = f"{sim.url}/api/v1/events/status"
    async with http.get(status_url) as r:
        assert r.status == 401
    resp, _ = await open_stream(http, url(sim))
    async with resp, http.get(status_url, headers={"Authorization": f"Bearer {OTHER}"}) as r:
        body = await r.json()
        assert r.status == 200 and "X-RateLimit-Limit" in r.headers
    assert body["status"] == "healthy" and body["connections"] == 1 and body["client_connections"] == 0
    assert sim.stats()["requests_by_endpoint"]["events_status"] == {"401": 1, "200": 1}


async def test_stats_counters(sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    resp, stream = await open_stream(http, url(sim))
    resp2, _ = await open_stream(http, url(sim, OTHER))
    async with resp, resp2:
        await new_job(http, sim, duration_s=5)
        clock.advance(30.0)
        await stream.until(lambda e: e.event == "heartbeat")
        events = sim.stats()["events"]
        assert events["connections_opened"] == 2
        assert events["connections_opened_by_client"] == {"cli_alpha": 1, "cli_beta": 1}
        assert events["open"] == 2 and events["open_by_client"] == {"cli_alpha": 1, "cli_beta": 1}
        sent = events["events_sent_by_type"]
        assert sent["connected"] == 2 and sent["job.queued"] == 1 and sent["job.completed"] == 1
        assert sent["heartbeat"] >= 1
    await admin(http, sim, "/_sim/reset-stats", {})
    assert sim.stats()["events"]["events_sent"] == 0


# framing quirks ----------------------------------------------------------------------------------


async def test_crlf_multiline_retry_and_noise_parse(clock: ManualClock, http: aiohttp.ClientSession) -> None:
    quirks = {"stream_crlf": True, "stream_multiline": 1.0, "stream_retry_ms": 3000, "stream_noise": 1.0}
    async with SimServer(clock=clock, **settings(faults=quirks)) as sim:
        resp = await http.get(url(sim))
        async with resp:
            first = await resp.content.readline()
            assert first == b"retry: 3000\r\n"
            stream = Stream(resp)
            assert (await stream.next()) == Event(
                "connected", {"client_id": "cli_alpha", "message": "Connected to SpiderIQ event stream"}
            )
            await admin(http, sim, "/_sim/jobs", {"count": 40, "type": "spiderVerify", "duration_s": 5})
            clock.advance(50.0)
            seen = await stream.until(lambda e: e.event == "heartbeat")
    kinds = {e.event for e in seen}
    assert {"job.queued", "job.started", "job.completed"} <= kinds
    assert kinds & {"campaign.progress", "campaign.completed", "workflow.step_completed"}
    assert all(e.data["job_id"] for e in seen if e.event.startswith("job."))
    campaign = [e.data for e in seen if e.event.startswith("campaign.")]
    assert all("campaignId" in d or "campaign_id" in d for d in campaign)
    assert "keep-alive" in stream.comments


# busy queue and the list -------------------------------------------------------------------------


async def test_busy_queue_paces_starts(clock: ManualClock, http: aiohttp.ClientSession) -> None:
    async with SimServer(clock=clock, **settings(queue_starts_per_minute=20.0)) as sim:
        await admin(http, sim, "/_sim/jobs", {"count": 200, "type": "spiderVerify", "duration_s": 5})
        jobs = sorted(sim.state.jobs.values(), key=lambda j: j.created_at)
        starts = [j.start_at for j in jobs]
        assert starts == sorted(starts)
        assert all(b - a >= 3.0 - 1e-9 for a, b in itertools.pairwise(starts))
        assert 597.0 <= starts[-1] < 610.0
        clock.advance(60.0)
        bearer = {"Authorization": f"Bearer {TOKEN}"}
        list_url = f"{sim.url}/api/v1/jobs/list?page_size=100&sort_by=updated_at&sort_order=desc"
        async with http.get(list_url + "&status_filter=queued", headers=bearer) as r:
            queued = await r.json()
        assert 178 <= queued["total"] <= 181
        assert all(row["updated_at"] == row["created_at"] for row in queued["jobs"])
        async with http.get(list_url, headers=bearer) as r:
            top = (await r.json())["jobs"][:10]
        assert all(row["status"] != "queued" for row in top)


async def test_list_shows_every_job_of_the_account(sim: SimServer, http: aiohttp.ClientSession) -> None:
    bearer = {"Authorization": f"Bearer {TOKEN}"}
    for n in range(2):
        async with http.post(
            f"{sim.url}/api/v1/jobs/spiderSite/submit",
            headers=bearer,
            json={"payload": {"url": f"https://example{n}.com"}},
        ) as r:
            assert r.status == 201
    await admin(http, sim, "/_sim/jobs", {"count": 3, "type": "spiderMaps", "token": "cli_alpha"})
    await admin(http, sim, "/_sim/jobs", {"count": 4, "type": "spiderMaps", "token": OTHER})
    await admin(http, sim, "/_sim/jobs", {"count": 2, "outcome": "completed", "start_offset_s": 600})
    async with http.get(f"{sim.url}/api/v1/jobs/list?page_size=100", headers=bearer) as r:
        body = await r.json()
    assert body["total"] == 7
    async with http.get(f"{sim.url}/api/v1/jobs/list?status_filter=completed", headers=bearer) as r:
        done = await r.json()
    assert done["total"] == 2 and {row["status"] for row in done["jobs"]} == {"completed"}


def test_settings_validate_the_new_knobs() -> None:
    with pytest.raises(ValueError):
        SimSettings(queue_starts_per_minute=0)
    with pytest.raises(ValueError):
        SimSettings(heartbeat_s=0)


async def test_queue_pace_can_change_at_run_time(clock: ManualClock, http: aiohttp.ClientSession) -> None:
    async with SimServer(clock=clock, **settings()) as sim:
        assert (await admin(http, sim, "/_sim/queue", {"starts_per_minute": 6}))["starts_per_minute"] == 6
        await admin(http, sim, "/_sim/jobs", {"count": 3, "type": "spiderVerify"})
        starts = sorted(job.start_at for job in sim.state.jobs.values())
        assert starts[2] - starts[0] >= 20.0
        await admin(http, sim, "/_sim/queue", {"starts_per_minute": None})
        async with http.post(f"{sim.url}/_sim/queue", json={"starts_per_minute": 0}) as r:
            assert r.status == 400
        async with http.get(f"{sim.url}/_sim/queue") as r:
            assert (await r.json())["starts_per_minute"] is None
