"""Waiting, backing off and keeping side tasks alive: the daemon's lifetime helpers.

``wait`` is the one way a loop sleeps: until ``seconds`` pass, the stop event is set or one of the
given events fires. ``Backoff`` is the capped, jittered exponential delay every retry loop uses.
``keep_running`` runs a side task's loop (housekeeping, heartbeat, discovery, listener, metrics) so
that a database error inside it is logged and retried with backoff and never ends the daemon;
only a bug does, and only the main loop's own failures and signals stop the process.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from harvester import logs
from harvester.errors import DatabaseError

log = logs.get("harvester.lifetime")


async def wait(stop: asyncio.Event, seconds: float, *events: asyncio.Event) -> bool:
    """Sleep up to ``seconds``, less if ``stop`` or an event is set; True when stopped.

    The events (not ``stop``) are cleared once seen, so each wake-up is consumed once.
    """
    if stop.is_set():
        return True
    waiters = [asyncio.ensure_future(e.wait()) for e in (stop, *events)]
    try:
        await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        for event in events:
            event.clear()
    return stop.is_set()


@dataclass(slots=True)
class Backoff:
    """Exponential delay with jitter, capped: ``next()`` after a failure, ``reset()`` after success."""

    base_s: float
    max_s: float
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next(self) -> float:
        delay = min(self.max_s, self.base_s * 2.0 ** min(self.failures, 30))
        self.failures += 1
        return max(0.0, delay * (1.0 + self.rng.uniform(-self.jitter, self.jitter)))

    def reset(self) -> None:
        self.failures = 0


async def keep_running(
    name: str, step: Callable[[], Awaitable[float]], stop: asyncio.Event, *, backoff: Backoff
) -> None:
    """Run ``step`` until stopped; it returns how long to sleep before the next round.

    A ``DatabaseError`` (the database away, a statement refused or timed out) is logged as
    ``{name}_failed`` and the round is retried after a backoff; it never ends the daemon.
    """
    while not stop.is_set():
        try:
            pause = await step()
        except DatabaseError as exc:
            delay = backoff.next()
            log.warning(f"{name}_failed", error=str(exc), retry_in_s=round(delay, 2))
            await wait(stop, delay)
            continue
        backoff.reset()
        await wait(stop, pause)
