"""The SpiderIQ event stream as a second discovery source: a nudge, never the truth.

``GET /api/v1/events/stream?token=…`` is account-wide, best effort and has no replay. One process
per credential holds it (a lease on the discovery row, renewed while it runs). ``job.completed``
and ``job.failed`` make our pending job due at once, exactly as a list page does; ``job.started``
and ``job.queued`` defer its direct polls, since the stream will announce the end. An end seen
before the job reached our queue (the producer inserts after submitting) is remembered for a while
and applied when the job appears. Every (re)connect asks for one reconciling list pass, because
whatever happened while disconnected is lost; no heartbeat for twice its interval means the
stream is dead. Reconnects back off, capped and jittered. Opening the stream costs one request.

The token travels in the URL, so every text that leaves this module (log fields, errors) passes the
token's own scrubber, which knows the URL-encoded forms too.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import aiohttp

from harvester import lifetime, logs
from harvester.api import classify
from harvester.api.event_bodies import FINISHED, RUNNING, event_time, job_fields, parse_body
from harvester.api.outcomes import TERMINAL_UPSTREAM, AuthFailed, RateLimited, Transient
from harvester.api.sse import Event, Parser, StreamError
from harvester.config import DEFAULT_ACCOUNT, Config
from harvester.errors import DatabaseError
from harvester.ports import Adopter, Listed, StreamStore
from harvester.scheduling import policy
from harvester.scheduling.gate import Gate
from harvester.scheduling.queue_watch import QueueWatch

log = logs.get("harvester.discovery.stream")

PATH = "/api/v1/events/stream"
HEARTBEAT_API_S = 30.0  # the documented heartbeat interval, in the API's time
RECENT_MAX = 10_000  # ends remembered for jobs not in the queue yet


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
        self.adopter = adopter  # adopt mode: a job an event names that the queue lacks is queued
        self.adopted = 0
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
        self._events = self._matched = 0  # since the last lease renewal
        self._recent: OrderedDict[UUID, tuple[Listed, float]] = OrderedDict()
        self.queue = QueueWatch()  # jobs seen queued, in queue order: their type, who passed whom
        self._last_seen: datetime | None = None  # API time of the newest event received
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
        events, matched = self._events, self._matched
        held = await self.store.claim_stream(
            self.key,
            self.owner,
            self.cfg.worker.lease_s,
            connected=connected,
            events=events,
            matched=matched,
        )
        self._events -= events
        self._matched -= matched
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
            await self.store.request_reconcile(self.key, self._last_seen)
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
                        await self._handle(event)
                elif stop.is_set():
                    return
                elif now - heard >= self.dead_after_s:
                    log.warning("stream_silent", seconds=round(self.dead_after_s, 2))
                    return
                if now >= replay_at and self._recent:
                    await self._replay_recent()
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

    async def _handle(self, event: Event) -> None:
        self._events += 1
        matched = 0
        body = parse_body(event.data)
        stamp = event_time(body)
        if stamp is not None and (self._last_seen is None or stamp > self._last_seen):
            self._last_seen = stamp
        if event.type in FINISHED or event.type in RUNNING:
            job_id, job_type = job_fields(body)
            if job_id is not None and self.adopter is not None:
                status = FINISHED.get(event.type) or RUNNING[event.type]
                if await self.adopter.adopt([Listed(job_id, status, job_type)]):
                    self.adopted += 1
                    log.info("jobs_adopted", count=1, source="stream")
            if job_id is None:
                log.debug("stream_event_unreadable", type=event.type)
            elif event.type in FINISHED:
                matched = await self._finished(Listed(job_id, FINISHED[event.type], job_type))
            else:
                matched = await self._running(job_id, RUNNING[event.type], job_type)
        elif event.type == "error":
            log.warning("stream_error_event", detail=self._scrub(event.data[:300]))
        self._matched += matched
        self.gate.observer.stream_event(event.type, matched)

    async def _finished(self, job: Listed) -> int:
        self.queue.ended(job.job_id)
        self.gate.durations.ended(job.job_id)
        marked = await self.store.mark_finished([job])
        if marked:
            self.gate.nudge()
            return 1
        self._remember(job)
        return 0

    async def _running(self, job_id: UUID, status: str, job_type: str | None) -> int:
        """A job that started (or waits queued) ends later: its direct polls can wait that long.

        A started job whose end event does not come by when nearly every run of its type has ended
        (``policy.started_defer``: the event was lost, or it was cancelled, which no event says) is
        polled directly then, one request for that one job instead of a list pass. A start also
        tells which jobs queued before it the queue went past (``passing``): those are polled when
        they would be overdue.
        """
        polling = self.cfg.polling
        if status == "queued":  # a busy queue can hold it for many minutes; its start is announced
            self.queue.queued(job_id, job_type)
            defer = policy.queued_defer(polling)
        else:
            job_type = job_type or self.queue.type_of(job_id)
            await self._passed(self.queue.started(job_id))
            kinds = (job_type,) if job_type else (policy.SITE, policy.MAPS)
            now = self.gate.clock()
            self.gate.durations.started(job_id, job_type, now)
            defer = max(policy.started_defer(t, polling, self.gate.durations, now) for t in kinds)
        job = Listed(job_id, status, job_type, defer)
        if await self.store.defer_running([job]):
            return 1
        self._remember(job)
        return 0

    async def _passed(self, passed: list[tuple[UUID, str]]) -> None:
        """Jobs the queue went past: cancelled while they waited, or started with the event lost.
        Each is polled when its end would be overdue had it started now (``policy.started_defer``):
        a start that was only lost has been announced ended by then (a poll sooner finds it still
        running), and a job cancelled while it waited is found that long after its turn."""
        if not passed:
            return
        polling, now = self.cfg.polling, self.gate.clock()
        jobs = [
            Listed(job_id, "queued", kind, policy.started_defer(kind, polling, self.gate.durations, now))
            for job_id, kind in passed
        ]
        pulled = await self.store.pull_in_queued(jobs)
        if pulled:
            log.debug("stream_queue_passed", jobs=len(pulled))

    def _remember(self, job: Listed) -> None:
        """An event for a job not (yet) in our queue: the producer may insert it in a moment."""
        known = self._recent.get(job.job_id)
        if known is not None and known[0].status in TERMINAL_UPSTREAM:
            return  # an end is not undone by a late start
        self._recent[job.job_id] = (job, self.clock())
        self._recent.move_to_end(job.job_id)
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    async def _replay_recent(self) -> None:
        """Ends seen before their job reached the queue: apply them now that it may be there."""
        horizon = self.clock() - self.cfg.polling.list_reconcile_s
        for job_id in [j for j, (_, seen) in self._recent.items() if seen < horizon]:
            del self._recent[job_id]
        if not self._recent:
            return
        jobs = [job for job, _ in self._recent.values()]
        marked = await self.store.mark_finished([j for j in jobs if j.status in TERMINAL_UPSTREAM])
        deferred = await self.store.defer_running([j for j in jobs if j.status not in TERMINAL_UPSTREAM])
        for job_id in (*marked, *deferred):
            self._recent.pop(job_id, None)
        self._matched += len(marked) + len(deferred)
        if marked:
            self.gate.nudge()


async def _read_small(response: aiohttp.ClientResponse) -> bytes:
    try:
        return await asyncio.wait_for(response.content.read(64 * 1024), 5.0)
    except (aiohttp.ClientError, OSError, TimeoutError):
        return b""
