"""SpiderIQ's event stream: ``GET /api/v1/events/stream`` (SSE) and ``GET /api/v1/events/status``.

The stream authenticates by ``?token=client_id:api_key:api_secret`` in the query string (a Bearer
header is ignored there), counts as one request in the credential's bucket, and then stays open:
``connected`` first, a ``heartbeat`` every ``heartbeat_s`` simulated seconds, and the account's job
events as they happen (see :mod:`harvester.sim.hub`). The framing is written by hand, WHATWG style
(``event:``/``data:`` lines, a blank line after each event), so that the fault settings can bend
it: CRLF line endings, a ``data:`` field split over two lines, a ``retry:`` line. Faults: lost
events, a cut after N simulated seconds, a stall (nothing written, heartbeats included, connection
kept open), refusal with 429 or 503. Revoking or deactivating a token ends its streams with an
``error`` event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from aiohttp import web

from harvester.sim.auth import INACTIVE, RATE_LIMITED, REVOKED, Passed, check, guard, too_many
from harvester.sim.clock import iso_z
from harvester.sim.delivery import json_response
from harvester.sim.hub import Item, Subscriber
from harvester.sim.state import STATE_KEY, SimState

STREAM = "events_stream"
STATUS = "events_status"
UNAVAILABLE = {"detail": "Event stream temporarily unavailable"}
CONNECTED_MESSAGE = "Connected to SpiderIQ event stream"
SSE_HEADERS = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",
}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def data_lines(data: dict[str, Any], split: bool) -> list[str]:
    """The JSON text of ``data`` as one line, or split between two members over two lines
    (joined by ``\\n`` per WHATWG, which is still the same JSON)."""
    if not split or len(data) < 2:
        return [_dumps(data)]
    pairs = [f"{_dumps(key)}: {_dumps(value)}" for key, value in data.items()]
    return ["{" + pairs[0] + ",", " " + ", ".join(pairs[1:]) + "}"]


def frame(item: Item, nl: str, split: bool = False, retry_ms: int | None = None) -> str:
    """One SSE block: a comment line, or ``[retry:] event: data:... blank``."""
    if item.comment is not None:
        return f": {item.comment}{nl}{nl}"
    lines = [] if retry_ms is None else [f"retry: {retry_ms}"]
    lines.append(f"event: {item.event}")
    lines += [f"data: {line}" for line in data_lines(item.data or {}, split)]
    return nl.join(lines) + nl + nl


async def get_stream(request: web.Request) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    token = request.query.get("token")
    passed = check(state, token, STREAM, faultable=False)
    if isinstance(passed, web.Response):
        return passed
    hub = state.hub
    faults = state.faults
    cred = passed.cred
    refuse = faults.stream_refuse
    if refuse is not None:
        hub.refused[refuse] += 1
        state.faults_served[f"stream_refuse_{refuse}"] += 1
        retry = max(1, faults.stream_refuse_retry_after_s)
        if refuse == "429":
            return too_many(state, STREAM, cred, passed.headers, retry, RATE_LIMITED)
        state.record(STREAM, "503", cred.client_id)
        return json_response(503, UNAVAILABLE, {**passed.headers, "Retry-After": str(retry)})
    state.record(STREAM, "200", cred.client_id)
    response = web.StreamResponse(status=200, headers={**passed.headers, **SSE_HEADERS})
    await response.prepare(request)
    sub = hub.subscribe(
        cred.token,
        cred.client_id,
        request.query.get("job_id") or None,
        request.query.get("campaign_id") or None,
        state.settings.heartbeat_s,
        faults,
    )
    try:
        await _run(state, request, response, passed, sub)
    finally:
        hub.unsubscribe(sub)
    with contextlib.suppress(ConnectionError, RuntimeError):
        await response.write_eof()
    return response


async def _run(
    state: SimState, request: web.Request, response: web.StreamResponse, passed: Passed, sub: Subscriber
) -> None:
    """The loop of one stream, until cut, closed by an error event, shut down or disconnected."""
    hub, faults, clock, settings = state.hub, state.faults, state.clock, state.settings
    cred = passed.cred
    nl = "\r\n" if faults.stream_crlf else "\n"
    cut_at = None if faults.stream_cut_s is None else sub.opened_at + faults.stream_cut_s
    greeted = False
    while True:
        wake = hub.waiter()
        now = clock.now()
        hub.advance(now, faults)
        if hub.closing:
            return
        out: list[str] = []
        if cred.status != "active":
            message = REVOKED if cred.status == "revoked" else INACTIVE
            out.append(frame(Item(now, "error", {"message": message["detail"]}), nl))
            hub.sent["error"] += 1
            hub.closed_by_error += 1
            await _write(request, response, out)
            return
        if cut_at is not None and now >= cut_at:
            hub.cut += 1
            return
        if faults.stream_stall:
            sub.pending.clear()
            while sub.next_beat <= now:  # missed heartbeats are skipped, not sent late
                sub.next_beat += settings.heartbeat_s
        else:
            if not greeted:
                greeted = True
                hello = Item(now, "connected", {"client_id": cred.client_id, "message": CONNECTED_MESSAGE})
                out.append(frame(hello, nl, retry_ms=faults.stream_retry_ms))
                hub.sent["connected"] += 1
            items = sub.pending
            sub.pending = []
            while sub.next_beat <= now:
                beat = {"timestamp": iso_z(clock.wall(sub.next_beat))}
                items.append(Item(sub.next_beat, "heartbeat", beat))
                if hub.rng_draw(faults.stream_shares["stream_noise"]):
                    items.append(Item(sub.next_beat, None, comment="keep-alive"))
                sub.next_beat += settings.heartbeat_s
            items.sort(key=lambda item: item.t)
            for item in items:
                split = item.event is not None and hub.rng_draw(faults.stream_shares["stream_multiline"])
                out.append(frame(item, nl, split))
                if item.comment is not None:
                    hub.comments_sent += 1
                else:
                    hub.sent[str(item.event)] += 1
        if out and not await _write(request, response, out):
            return
        transport = request.transport
        if transport is None or transport.is_closing():
            return
        deadlines = [sub.next_beat] + [t for t in (hub.next_due(), cut_at) if t is not None]
        real_wait = max(0.0, (min(deadlines) - now) / clock.speed)
        await _sleep(wake, min(settings.stream_tick_s, real_wait))


async def _sleep(wake: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds`` real seconds or until the hub is notified."""
    if seconds <= 0:
        await asyncio.sleep(0)
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(wake.wait(), seconds)


async def _write(request: web.Request, response: web.StreamResponse, chunks: list[str]) -> bool:
    """Write the chunks; False if the client has gone."""
    try:
        await response.write("".join(chunks).encode())
    except (ConnectionError, RuntimeError):
        return False
    return True


async def get_status(request: web.Request) -> web.Response:
    passed = guard(request, STATUS, faultable=False)
    if isinstance(passed, web.Response):
        return passed
    state = request.app[STATE_KEY]
    hub = state.hub
    unavailable = state.faults.stream_refuse == "503"
    body = {
        "status": "unhealthy" if unavailable else "healthy",
        "connections": len(hub.subscribers),
        "client_connections": sum(1 for sub in hub.subscribers if sub.token == passed.cred.token),
        "timestamp": iso_z(state.clock.wall(state.clock.now())),
    }
    state.record(STATUS, "200", passed.cred.client_id)
    return json_response(200, body, passed.headers)


async def _on_shutdown(app: web.Application) -> None:
    hub = app[STATE_KEY].hub
    hub.closing = True
    hub.notify()


def add_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/events/stream", get_stream)
    app.router.add_get("/api/v1/events/status", get_status)
    app.on_shutdown.append(_on_shutdown)
