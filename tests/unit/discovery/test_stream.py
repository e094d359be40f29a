"""The event stream client against an aiohttp stand-in that writes chosen SSE bytes.

The store is the in-memory fake of the seam, so each test states what the stream does to our
pending jobs and to the gate: a completion makes a job due, a start defers its polls, an end seen
before the job was enqueued is applied when it appears, silence means dead, refusals go through
the brakes, and the token in the URL never reaches a log line.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from uuid import uuid4

import pytest
from aiohttp import web

from harvester import logs
from harvester.discovery.stream import EventStream
from harvester.scheduling import policy
from harvester.scheduling.gate import Gate
from tests.support import configs, fakes

TOKEN = "cli_stream:sk_streamkey:secret_streamsecret"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class StandIn:
    def __init__(self) -> None:
        self.connections: list[dict[str, str]] = []
        self.script: list[Callable[[web.StreamResponse], Awaitable[None]] | int] = []
        self.url = ""
        self.closing = asyncio.Event()

    async def hold(self) -> None:
        """Keep a stream open without a byte until the stand-in closes."""
        await self.closing.wait()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        self.connections.append(dict(request.query))
        step = self.script.pop(0) if self.script else None
        if isinstance(step, int):
            return web.json_response({"detail": "no"}, status=step, headers={"Retry-After": "120"})
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        await response.write(b'event: connected\ndata: {"client_id": "cli_stream"}\n\n')
        if step is not None:
            await step(response)
        else:
            await self.hold()
        return response


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand = StandIn()
    app = web.Application()
    app.router.add_get("/api/v1/events/stream", stand.stream)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    stand.url = f"http://127.0.0.1:{runner.addresses[0][1]}"
    yield stand
    stand.closing.set()
    await runner.cleanup()


def parts(url: str, **overrides: object) -> tuple[EventStream, fakes.FakeStreamStore, Gate]:
    values: dict[str, object] = {"api.base_url": url, "api.token": TOKEN, "speed": 30.0}
    values.update(overrides)
    cfg = configs.loaded(values)
    store = fakes.FakeStreamStore()
    gate = Gate(cfg, fakes.FakeLimiter())
    return EventStream(cfg, store, gate, TOKEN), store, gate


def event(kind: str, **data: object) -> bytes:
    return f"event: {kind}\ndata: {json.dumps(data)}\n\n".encode()


async def run_until(stream: EventStream, condition: Callable[[], bool], within_s: float = 5.0) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    try:
        async with asyncio.timeout(within_s):
            while not condition():  # noqa: ASYNC110 - the fakes have no event to wait on
                await asyncio.sleep(0.01)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)


async def test_a_completion_makes_our_job_due_and_a_start_defers_its_polls(standin: StandIn) -> None:
    stream, store, gate = parts(standin.url)
    done, running = uuid4(), uuid4()
    store.add(done, due_in_s=600.0)
    store.add(running, due_in_s=1.0)

    async def script(response: web.StreamResponse) -> None:
        await response.write(event("job.started", job_id=str(running), worker_id="w1"))
        await response.write(event("job.completed", job_id=str(done), processing_time=12.5))
        await response.write(b": keep-alive\n\n" + event("campaign.progress", campaignId="c1"))
        await standin.hold()

    standin.script = [script]
    await run_until(
        stream,
        lambda: (
            store.rows[done].upstream_status == "completed"
            and store.rows[running].upstream_status == "processing"
        ),
    )
    now = store.clock()
    assert store.rows[done].next_poll_at < now  # due at once: one results fetch
    assert store.rows[running].next_poll_at > now + 1.0  # its direct polls wait for the end
    assert gate.work.is_set()
    assert standin.connections[0]["token"] == TOKEN  # the token goes in the query string
    assert store.reconcile_requested  # the gap before the connection is the list's to cover
    assert store.stream_holder is None  # released on stop


async def test_an_end_seen_before_the_job_was_enqueued_is_applied_when_it_appears(
    standin: StandIn,
) -> None:
    stream, store, _ = parts(standin.url)
    early = uuid4()

    async def script(response: web.StreamResponse) -> None:
        await response.write(event("job.failed", job_id=str(early), error_message="boom"))
        await asyncio.sleep(0.3)
        store.add(early, due_in_s=600.0)  # the producer inserts it now
        await response.write(b": tick\n\n")
        await asyncio.sleep(0.3)
        await response.write(b": tick\n\n")
        await standin.hold()

    standin.script = [script]
    await run_until(stream, lambda: early in store.rows and store.rows[early].upstream_status == "failed")


async def test_silence_for_two_heartbeats_means_dead_and_it_reconnects(standin: StandIn) -> None:
    stream, store, _ = parts(standin.url, speed=60.0)  # heartbeat 30 s API = 0.5 s here

    async def silent(response: web.StreamResponse) -> None:
        await standin.hold()

    standin.script = [silent, silent]
    await run_until(stream, lambda: len(standin.connections) >= 2, within_s=8)
    assert stream.dead_after_s == pytest.approx(1.0)
    assert [report[0] for report in store.stream_reports].count(True) >= 1


async def test_a_quiet_stream_keeps_its_lease_between_heartbeats(standin: StandIn) -> None:
    """No byte for longer than the lease, still short of dead: the lease is renewed on a clock,
    every third of it, so no other process takes the stream from a holder that still reads."""
    stream, store, _ = parts(standin.url, **{"worker.lease_s": 0.6})  # heartbeat 30 s API = 1 s
    assert stream.dead_after_s == pytest.approx(2.0)

    def renewed() -> int:
        return [connected for connected, _, _ in store.stream_reports].count(True)

    await run_until(stream, lambda: renewed() >= 6, within_s=1.8)
    assert len(standin.connections) == 1  # the same connection throughout: nothing went silent


async def test_a_refused_stream_goes_through_the_brakes_and_backs_off(standin: StandIn) -> None:
    stream, store, gate = parts(standin.url)
    standin.script = [401]
    await run_until(stream, lambda: gate.brakes.auth_failed)
    await asyncio.sleep(0.2)
    assert len(standin.connections) == 1  # the auth pause holds the next attempt
    assert not store.stream_up


async def test_a_429_pauses_the_shared_limiter(standin: StandIn) -> None:
    stream, _, gate = parts(standin.url)
    standin.script = [429]
    limiter = gate.limiter
    assert isinstance(limiter, fakes.FakeLimiter)
    await run_until(stream, lambda: bool(limiter.pauses))
    assert limiter.pauses[0] == pytest.approx(120.0 / 30.0)  # Retry-After in API seconds, scaled


async def test_the_token_never_reaches_a_log_line_when_the_connection_fails() -> None:
    stream, _, _ = parts("http://127.0.0.1:9")  # nothing listens: aiohttp's error names the URL
    out = io.StringIO()
    logs.setup("json", "debug", stream=out)
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    await asyncio.sleep(0.5)
    stop.set()
    await asyncio.wait_for(task, 5)
    text = out.getvalue()
    assert "stream_connect_failed" in text
    for secret in (TOKEN, *TOKEN.split(":"), TOKEN.replace(":", "%3A")):
        assert secret not in text


async def test_a_server_that_never_answers_the_request_times_out_and_is_tried_again() -> None:
    """The request is taken and no header ever comes (an overloaded balancer, a black-holed
    upstream): the attempt ends after ``api.read_timeout_s`` and the next one goes out."""
    accepted: list[asyncio.StreamWriter] = []

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)
        await reader.read(65536)  # the request, never answered

    server = await asyncio.start_server(mute, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    stream, store, _ = parts(f"http://127.0.0.1:{port}", **{"api.read_timeout_s": 0.3})
    out = io.StringIO()
    logs.setup("json", "debug", stream=out)
    try:
        await run_until(stream, lambda: len(accepted) >= 2, within_s=5)
    finally:
        server.close()
        for writer in accepted:
            writer.transport.abort()
    failed = [json.loads(line) for line in out.getvalue().splitlines() if "stream_connect_failed" in line]
    assert failed and "TimeoutError" in failed[0]["reason"]
    assert TOKEN not in out.getvalue()
    assert not store.stream_up


async def test_only_one_process_holds_the_stream(standin: StandIn) -> None:
    stream, store, _ = parts(standin.url)
    store.stream_holder = "another-process"
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert standin.connections == []  # no request while somebody else holds it


async def test_a_job_queued_before_it_was_enqueued_is_not_polled_while_it_waits(
    standin: StandIn,
) -> None:
    stream, store, _ = parts(standin.url)
    waiting = uuid4()

    async def script(response: web.StreamResponse) -> None:
        await response.write(event("job.queued", job_id=str(waiting), type="spiderSite"))
        await asyncio.sleep(0.3)
        store.add(waiting, due_in_s=0.0)  # enqueued by the producer after submitting
        for _ in range(3):
            await response.write(b": tick\n\n")
            await asyncio.sleep(0.3)
        await standin.hold()

    standin.script = [script]
    await run_until(stream, lambda: waiting in store.rows and store.rows[waiting].upstream_status == "queued")
    # three reconcile intervals (300 s API at x30 each): the stream announces its start first
    assert store.rows[waiting].next_poll_at - store.clock() > 2 * 300 / 30


async def test_a_cut_after_a_long_connection_reconnects_while_the_stream_still_counts_as_up(
    standin: StandIn,
) -> None:
    """A cut of a stream that lived a while is a gap of a second: the quick reconnect's own
    reconciling pass covers it, so the stream never reads as down and the list starts no full pass."""
    stream, store, gate = parts(standin.url)  # dead after 60 API s = 2 s here

    async def lived(response: web.StreamResponse) -> None:
        for _ in range(12):  # 2.4 s of comments, then the server closes
            await response.write(b": tick\n\n")
            await asyncio.sleep(0.2)

    standin.script = [lived]
    await run_until(stream, lambda: len(standin.connections) >= 2 and gate.stream_up, within_s=8)
    reports = [connected for connected, _, _ in store.stream_reports]
    first_up, last_up = reports.index(True), len(reports) - reports[::-1].index(True)
    assert False not in reports[first_up:last_up]  # up from the first connection to the second
    assert store.calls.count("request_reconcile") == 2  # each connection asks for its gap's pass


async def test_a_stream_that_closes_at_once_keeps_backing_off(standin: StandIn) -> None:
    """A server that accepts and closes must not cost a request every second: the backoff only
    resets after a connection that lived, and the stream reads as down between attempts."""
    stream, store, gate = parts(standin.url)  # the first retry waits 1 API s = 0.033 s here

    async def closes(response: web.StreamResponse) -> None:
        return None

    standin.script = [closes] * 50
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    await asyncio.sleep(1.5)
    stop.set()
    await asyncio.wait_for(task, 5)
    # 1, 2, 4, 8, 16, 32 API s (±20 %) fit about 6 attempts into 45 API s; without the growth ~45.
    assert 2 <= len(standin.connections) <= 8
    assert not gate.stream_up
    assert [connected for connected, _, _ in store.stream_reports][-1] is False


async def test_a_stream_refused_with_503_waits_its_retry_after(standin: StandIn) -> None:
    """Each attempt costs a request: a 503 with Retry-After 120 (4 s here) is not retried sooner,
    and a refused stream never opens the breaker that would pause polling."""
    stream, _, gate = parts(standin.url)
    standin.script = [503, 503]
    stop = asyncio.Event()
    task = asyncio.create_task(stream.run(stop))
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(standin.connections) == 1
    assert gate.paused_reason() is None and not gate.stream_up


async def test_a_queued_job_the_queue_went_past_is_polled_when_it_would_be_overdue(standin: StandIn) -> None:
    """Two jobs queued, then the later one starts: the earlier one was cancelled while it waited or
    its start was lost. Its queued defer is cut to when it would be overdue had it started then
    (``policy.started_defer``); a job queued after the one that started, or one of another type,
    keeps waiting for its own start."""
    stream, store, _ = parts(standin.url)
    passed, started, later, other_type = uuid4(), uuid4(), uuid4(), uuid4()
    for job_id in (passed, started, later, other_type):
        store.add(job_id, due_in_s=1.0)

    async def script(response: web.StreamResponse) -> None:
        for job_id, kind in ((passed, "spiderSite"), (other_type, "spiderMaps"), (started, "spiderSite")):
            await response.write(
                event("job.queued", job_id=str(job_id), type=kind, created_at="2026-12-01T12:00:00Z")
            )
        await response.write(
            event("job.queued", job_id=str(later), type="spiderSite", created_at="2026-12-01T12:00:00Z")
        )
        await response.write(event("job.started", job_id=str(started), worker_id="w1"))
        await standin.hold()

    standin.script = [script]
    await run_until(stream, lambda: store.rows[started].upstream_status == "processing")
    now = store.clock()
    queued_defer = policy.queued_defer(stream.cfg.polling)
    overdue = policy.started_defer("spiderSite", stream.cfg.polling)
    assert now < store.rows[passed].next_poll_at <= now + overdue
    assert store.rows[passed].upstream_status == "queued"  # nothing is known of it but that it waited
    for waiting in (later, other_type):
        assert store.rows[waiting].next_poll_at > now + queued_defer - 5
    assert len(stream.events.rules.queue) == 2  # the passed and the started one left the watch
