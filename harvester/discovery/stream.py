"""The SpiderIQ event stream as a second discovery source: connecting, reading, and its lease.

``GET /api/v1/events/stream?token=…`` is account-wide, best effort and has no replay. One process
per credential holds it (a lease on the discovery row, renewed while it runs). What each event
does to our queue is ``stream_events`` (and what it means for a job's next poll,
``scheduling.stream_rules``). Every (re)connect asks for one reconciling list pass, because
whatever happened while disconnected is lost; no heartbeat for twice its interval means the
stream is dead. Reconnects back off, capped and jittered. Opening the stream costs one request.

The token travels in the URL, so every text that leaves this module (log fields, errors) passes the
token's own scrubber, which knows the URL-encoded forms too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from harvester import lifetime, logs
from harvester.api import classify
from harvester.api.outcomes import AuthFailed, RateLimited, Transient
from harvester.api.sse import Parser, StreamError
from harvester.config import DEFAULT_ACCOUNT, Config
from harvester.discovery.stream_events import StreamEvents
from harvester.errors import DatabaseError
from harvester.ports import Adopter, StreamStore
from harvester.scheduling.gate import Gate

log = logs.get("harvester.discovery.stream")

PATH = "/api/v1/events/stream"
HEARTBEAT_API_S = 30.0  # the documented heartbeat interval, in the API's time


@dataclass(frozen=True, slots=True)
class Connected:
    """The stream opened: read it until it ends."""

    response: aiohttp.ClientResponse


UNAVAILABLE = frozenset({404, 405, 501})  # this API has no stream: ask again only now and then
REFUSED_FIRST_API_S = 15.0  # the first retry after a refusal (5xx and the like), in API seconds
RETRY_AFTER_MAX_API_S = 3600.0  # a longer Retry-After on a refused stream is junk


@dataclass(frozen=True, slots=True)
class Refused:
    """The server answered and would not stream (a 5xx, a 429 the brakes handle, ...)."""

    http_status: int
    retry_after_s: float | None  # local seconds, from its Retry-After


class Chunks:
    """A stream's bytes as they come, each wait bounded. The read in flight outlives a wait that
    timed out, so nothing is lost between waits."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self._response = response
        self._read: asyncio.Future[bytes] | None = None

    async def next(self, stop: asyncio.Event, timeout_s: float) -> bytes | None:
        """The next bytes; ``b""`` when the server closed the stream; None when ``timeout_s``
        passed first or we stop."""
        if self._read is None:
            self._read = asyncio.ensure_future(self._response.content.readany())
        stopping: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
        waiting: set[asyncio.Future[Any]] = {self._read, stopping}
        try:
            done, _ = await asyncio.wait(
                waiting, timeout=max(0.0, timeout_s), return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            stopping.cancel()
        if self._read not in done:
            return None
        read, self._read = self._read, None
        return read.result()

    def close(self) -> None:
        if self._read is not None and not self._read.done():
            self._read.cancel()
        self._read = None


class EventStream:
    def __init__(
        self,
        cfg: Config,
        store: StreamStore,
        gate: Gate,
        token: str | Callable[[], str],
        *,
        account: str = DEFAULT_ACCOUNT,
        adopter: Adopter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.gate = gate
        self.key = account  # the account's stream lease lives on its discovery row
        self.owner = cfg.worker.worker_id
        self.clock = clock
        # A callable gives the current token at each (re)connect: a rotated token is used from
        # the next connection on.
        self._token_now: Callable[[], str] = token if callable(token) else (lambda: token)
        self._token = self._token_now()
        self._scrub = logs.scrubber(self._token)
        self._url = cfg.api.base_url.rstrip("/") + PATH
        self.dead_after_s = 2 * cfg.local_s(HEARTBEAT_API_S)
        self.connections = 0
        self.connected = False
        # What the events do to our queue; it scrubs with the token in use, rotated or not.
        self.events = StreamEvents(
            cfg.polling, store, gate, lambda text: self._scrub(text), adopter=adopter, clock=clock
        )
        self._session: aiohttp.ClientSession | None = None

    # ------------------------------------------------------------ lifetime
    async def run(self, stop: asyncio.Event) -> None:
        """Hold the stream until stopped: claim the lease, connect, read, reconnect with backoff."""
        backoff = lifetime.Backoff(self.cfg.local_s(1.0), self.cfg.local_s(60.0))
        # A server that answers and refuses (5xx) is down for a while: each attempt costs a
        # request from the credential's budget, so those retries start slower and grow to one
        # reconcile interval (the list carries discovery meanwhile), or wait its Retry-After.
        refused = lifetime.Backoff(self.cfg.local_s(REFUSED_FIRST_API_S), self.cfg.polling.list_reconcile_s)
        try:
            while not stop.is_set():
                reconnecting = False
                pause: float | None = None
                try:
                    if not await self._hold(connected=self.connected):
                        await self._set_connected(False)
                        await lifetime.wait(stop, self.cfg.worker.lease_s / 2)  # another process has it
                        continue
                    opened = await self._open()
                    if isinstance(opened, Connected):
                        began = self.clock()
                        await self._read(opened.response, stop)
                        # A stream that lived a while and ended (a cut) gets one quick reconnect
                        # while it still counts as up, so the list does not start full passes for a
                        # gap of a second: the reconnect's own pass covers it. One that ends at once
                        # keeps backing off (a server that accepts and closes must not cost a
                        # request a second).
                        if self.clock() - began >= self.dead_after_s:
                            backoff.reset()
                            refused.reset()
                            reconnecting = self.connected
                    elif opened in UNAVAILABLE:
                        await self._set_connected(False)
                        await lifetime.wait(stop, self.cfg.polling.list_reconcile_s)
                        continue
                    elif isinstance(opened, Refused):
                        pause = max(refused.next(), opened.retry_after_s or 0.0)
                except DatabaseError as exc:
                    log.warning("stream_db_unavailable", error=self._scrub(str(exc)))
                if not reconnecting:
                    await self._set_connected(False)
                if not stop.is_set():
                    await lifetime.wait(stop, backoff.next() if pause is None else pause)
        finally:
            await self._close()

    async def _close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        with contextlib.suppress(DatabaseError, TimeoutError):  # else the lease runs out by itself
            await asyncio.wait_for(self.store.release_stream(self.key, self.owner), 1.0)

    async def _hold(self, *, connected: bool) -> bool:
        """Claim or renew the lease, reporting the connection and what was seen meanwhile."""
        events, matched = self.events.seen, self.events.matched
        held = await self.store.claim_stream(
            self.key,
            self.owner,
            self.cfg.worker.lease_s,
            connected=connected,
            events=events,
            matched=matched,
        )
        self.events.reported(events, matched)
        return held

    async def _set_connected(self, connected: bool) -> None:
        """Report a change of the connection (a reconnect within the grace reports again)."""
        if self.connected == connected and not connected:
            return
        self.connected = connected
        self.gate.stream_up = connected
        self.gate.observer.stream_state(connected, reconnect=connected and self.connections > 1)
        with contextlib.suppress(DatabaseError):  # else reported at the next renewal
            await self._hold(connected=connected)

    # ------------------------------------------------------------ connecting
    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            api = self.cfg.api
            timeout = aiohttp.ClientTimeout(
                total=None, connect=api.connect_timeout_s, sock_connect=api.connect_timeout_s
            )
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=api.verify_tls), timeout=timeout
            )
        return self._session

    async def _open(self) -> Connected | Refused | int | None:
        """One connection attempt: a request slot, then GET; any refusal goes through the gate."""
        if self.gate.side_requests_paused():
            return None
        started = self.clock()
        await self.gate.limiter.acquire()
        waited = self.clock() - started
        sent_with = self.gate.rotations
        token = self._token_now()
        if token != self._token:
            self._token, self._scrub = token, logs.scrubber(token)
        headers = {
            "Accept": "text/event-stream",
            "User-Agent": self.cfg.api.user_agent,
            "Cache-Control": "no-cache",
        }
        try:
            # A server that takes the request and never answers would hold this attempt for good:
            # the headers get ``api.read_timeout_s``, as a poll's answer does. The body is the
            # stream and has no deadline; its silence is watched while reading.
            async with asyncio.timeout(self.cfg.api.read_timeout_s):
                response = await self._get_session().get(
                    self._url, params={"token": self._token}, headers=headers, allow_redirects=False
                )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            reason = self._scrub(f"connection error: {type(exc).__name__}: {exc}")
            self.gate.observer.request_done("stream", "error", waited)
            log.warning("stream_connect_failed", reason=reason)
            return None
        self.connections += 1
        if response.status == 200:
            self.gate.observer.request_done("stream", 200, waited)
            return Connected(response)
        body = await _read_small(response)
        outcome = classify.classify_error(
            response.status, response.headers, body, time.time(), scrub=self._scrub
        )
        response.release()
        if isinstance(outcome, RateLimited) and outcome.retry_after_s is not None:
            outcome = RateLimited(
                retry_after_s=self.cfg.local_s(outcome.retry_after_s),
                reset_at=outcome.reset_at,
                detail=outcome.detail,
                http_status=outcome.http_status,
            )
        if isinstance(outcome, AuthFailed | RateLimited):
            await self.gate.observe("stream", outcome, waited, sent_with)  # the credential's brakes
        else:  # the stream failing must not open the breaker that pauses polling
            self.gate.observer.request_done("stream", response.status, waited)
        reason = outcome.reason if isinstance(outcome, Transient) else getattr(outcome, "detail", "")
        log.warning("stream_refused", http_status=response.status, reason=self._scrub(reason))
        if response.status in UNAVAILABLE:
            return response.status
        retry_after = classify.parse_retry_after(response.headers.get("Retry-After"), time.time())
        if retry_after is None:
            return Refused(response.status, None)
        return Refused(response.status, self.cfg.local_s(min(retry_after, RETRY_AFTER_MAX_API_S)))

    # ------------------------------------------------------------ reading
    async def _read(self, response: aiohttp.ClientResponse, stop: asyncio.Event) -> None:
        """Read until the stream ends, goes silent for ``dead_after_s`` or we stop. The lease is
        renewed every third of it on a clock, not only when bytes come: a quiet stream (a
        heartbeat every 30 s, the lease's own length by default) must not lapse and be taken by
        another process while this one still reads."""
        parser = Parser()
        chunks = Chunks(response)
        renew_every = self.cfg.worker.lease_s / 3
        renew_at = self.clock() + renew_every
        replay_at = heard = self.clock()
        try:
            await self._set_connected(True)
            # The gap before this connection: back to the last event the previous one received
            # (none yet in this process: a full pass).
            await self.store.request_reconcile(self.key, self.events.last_seen)
            log.info("stream_connected", connections=self.connections)
            while not stop.is_set():
                chunk = await chunks.next(stop, min(renew_at, heard + self.dead_after_s) - self.clock())
                now = self.clock()
                if chunk == b"":
                    log.info("stream_ended", reason="closed by the server")
                    return
                if chunk is not None:
                    heard = now
                    for event in parser.feed(chunk):
                        await self.events.handle(event)
                elif stop.is_set():
                    return
                elif now - heard >= self.dead_after_s:
                    log.warning("stream_silent", seconds=round(self.dead_after_s, 2))
                    return
                if now >= replay_at and self.events.remembered:
                    await self.events.replay_recent()
                    replay_at = now + self.cfg.polling.list_tick_s * 4
                if now >= renew_at:
                    renew_at = now + renew_every
                    if not await self._hold(connected=True):
                        log.warning("stream_lease_lost")
                        return
        except StreamError as exc:
            log.warning("stream_malformed", error=self._scrub(str(exc)))
        except (aiohttp.ClientError, OSError) as exc:
            log.info("stream_ended", reason=self._scrub(f"{type(exc).__name__}: {exc}"))
        finally:
            chunks.close()
            response.close()


async def _read_small(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await asyncio.wait_for(response.content.read(64 * 1024), 5.0)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return b""
