"""The gate every sender passes: the shared budget, the brakes, what was learned, who is healthy.

The daemon builds one ``Gate`` and hands it to the worker and to each discovery source (the list
today). Every response any of them gets goes through ``observe``, which records it (metrics), moves
the brakes and, for a 429, pauses the shared limiter; every sender asks the gate whether it may
send. Discovery publishes its health here, and the worker reads it to decide how long an unseen job
may wait for the list before a direct poll. Nothing here points back at the worker or discovery.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from typing import Protocol

from harvester import logs
from harvester.api import outcomes
from harvester.config import Config
from harvester.ports import Limiter
from harvester.scheduling import brakes
from harvester.scheduling.brakes import Brakes
from harvester.scheduling.durations import DurationModel

log = logs.get("harvester.scheduling.gate")
STREAM_POLL_FACTOR = 2.0  # on top of list_poll_factor while the stream is connected


class Observer(Protocol):
    """Where the loops report what happened (metrics); every method is cheap and never raises."""

    def request_done(self, endpoint: str, status: int | str, wait_s: float) -> None: ...
    def job_finished(self, state: str, polls: int, latency_s: float | None) -> None: ...
    def store_done(self, seconds: float) -> None: ...
    def stream_event(self, kind: str, matched: int) -> None: ...
    def stream_state(self, connected: bool, *, reconnect: bool = False) -> None: ...
    def error(self, kind: str) -> None: ...


class NullObserver:
    def request_done(self, endpoint: str, status: int | str, wait_s: float) -> None:
        pass

    def job_finished(self, state: str, polls: int, latency_s: float | None) -> None:
        pass

    def store_done(self, seconds: float) -> None:
        pass

    def stream_event(self, kind: str, matched: int) -> None:
        pass

    def stream_state(self, connected: bool, *, reconnect: bool = False) -> None:
        pass

    def error(self, kind: str) -> None:
        pass


class Gate:
    def __init__(
        self,
        cfg: Config,
        limiter: Limiter,
        *,
        observer: Observer | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.polling = cfg.polling
        self.default_pause_s = cfg.rate_limit.default_pause_s
        self.limiter = limiter
        self.observer: Observer = observer or NullObserver()
        self.durations = DurationModel()
        self.clock = clock
        self.wall = wall
        self.brakes = Brakes()
        self.in_flight = 0  # requests the worker has out or waiting for a slot
        self.discovery_healthy = cfg.polling.discovery == "list"
        self.stream_up = False  # the credential's event stream is connected (in any process)
        # Tokens rotated in so far: a request notes it when it leaves, so that a refusal of the
        # token it carried, arriving after a rotation, is not taken for a refusal of the new one.
        self.rotations = 0
        self._work = asyncio.Event()
        self.server_remaining: int | None = None  # the latest X-RateLimit-Remaining

    # ------------------------------------------------------------ what senders ask
    def claim_budget(self, free: int) -> int:
        return brakes.claim_budget(
            self.brakes, self.clock(), free=free, in_flight=self.in_flight, cfg=self.polling
        )

    def hold_back(self) -> float | None:
        return brakes.hold_back(self.brakes, self.clock())

    def side_requests_paused(self) -> bool:
        return brakes.side_requests_paused(
            self.brakes, self.clock(), in_flight=self.in_flight, cfg=self.polling
        )

    def paused_reason(self) -> str | None:
        return brakes.reason(self.brakes, self.clock())

    def token_rotated(self) -> None:
        """A new token: a refused credential is re-checked at once instead of at the next recheck."""
        self.rotations += 1
        if self.brakes.auth_failed:
            self.brakes = dataclasses.replace(self.brakes, auth_paused_until=self.clock())
        self.nudge()

    def poll_factor(self) -> float:
        """While the list works, direct polls of unseen jobs are rarer (``list_poll_factor``);
        while the event stream is connected as well, rarer still: it announces every end."""
        if self.stream_up:
            return self.polling.list_poll_factor * STREAM_POLL_FACTOR
        return self.polling.list_poll_factor if self.discovery_healthy else 1.0

    def discovery_detail(self) -> str:
        """How this process learns which jobs finished, for ``/readyz``: never a failure (direct
        polls carry every job whatever the sources do), but worth seeing."""
        events, listing = self.polling.events == "sse", self.polling.discovery == "list"
        stream = ("event stream connected" if self.stream_up else "event stream down") if events else ""
        if not listing:
            lister = "list discovery off"
        elif not self.discovery_healthy:
            lister = "list pages failing: direct polls only"
        elif self.stream_up:
            lister = f"list reconciles every {self.polling.list_reconcile_s:g} s"
        else:
            lister = "list passes carry discovery"
        return "; ".join(part for part in (stream, lister) if part)

    # ------------------------------------------------------------ work arriving
    def nudge(self) -> None:
        """New or newly due jobs (an insert, a list page that showed jobs finished)."""
        self._work.set()

    @property
    def work(self) -> asyncio.Event:
        return self._work

    # ------------------------------------------------------------ every response
    def note_remaining(self, remaining: int) -> None:
        """What the server's ``X-RateLimit-Remaining`` said on the latest answer."""
        self.server_remaining = remaining

    def claim_limit(self, limit: int) -> int:
        """Never plan past what the server says is left: claim no more jobs than that (one at
        least, so a stale reading cannot stall the loop; the shared limiter paces the sends)."""
        if self.server_remaining is None:
            return limit
        return max(1, min(limit, self.server_remaining))

    async def observe(
        self, endpoint: str, outcome: object, waited_s: float, sent_with: int | None = None
    ) -> None:
        """Process-wide consequences of any response: metrics, 429 pause, credential, breaker.
        ``sent_with``: ``rotations`` when the request left; a refusal of a token replaced since
        then says nothing about the new one."""
        status = getattr(outcome, "http_status", None)
        self.observer.request_done(endpoint, status if status is not None else "error", waited_s)
        if isinstance(outcome, outcomes.AuthFailed) and sent_with is not None and sent_with != self.rotations:
            log.info("api_auth_failed_old_token", endpoint=endpoint, http_status=outcome.http_status)
            return
        pause = 0.0
        if isinstance(outcome, outcomes.RateLimited):
            pause = await self.limiter.pause(
                retry_after_s=outcome.retry_after_s, reset_at=outcome.reset_at, reason=outcome.detail
            )
        before = self.brakes
        now = self.clock()
        self.brakes = brakes.after(before, outcome, now, self.polling, pause)
        self._log_change(endpoint, outcome, before, now, pause)

    def rate_pause_s(self, outcome: outcomes.RateLimited) -> float:
        """How long a 429 keeps the job it answered waiting (the same rule as the limiter's)."""
        return brakes.rate_pause_s(outcome.retry_after_s, outcome.reset_at, self.wall(), self.default_pause_s)

    def _log_change(self, endpoint: str, outcome: object, before: Brakes, now: float, pause: float) -> None:
        after = self.brakes
        if isinstance(outcome, outcomes.RateLimited):
            self.observer.error("rate_limited")
            log.warning("api_rate_limited", endpoint=endpoint, pause_s=round(pause, 3))
        elif isinstance(outcome, outcomes.AuthFailed):
            self.observer.error("auth")
            log.error(
                "api_auth_failed",
                endpoint=endpoint,
                http_status=outcome.http_status,
                detail=logs.scrub(outcome.detail),
                recheck_in_s=self.polling.auth_recheck_s,
            )
        elif isinstance(outcome, outcomes.Transient):
            self.observer.error("transient")
            if after.breaker.is_open(now) and not before.breaker.is_open(now):
                log.warning(
                    "breaker_opened",
                    failures=after.breaker.failures,
                    pause_s=self.polling.breaker_pause_s,
                    reason=outcome.reason,
                )
        elif before.auth_failed and not after.auth_failed:
            log.info("api_auth_restored")
