"""The shared rate limiter: one budget per API credential for every harvester process on a database.

The state lives in ``harvester.rate_limits`` (keyed by the account's name, or without one by a sha256
fingerprint of the token, never the token), so it is shared across processes, survives restarts and
survives a token rotation. ``acquire`` reserves one request
slot with a single call of ``harvester.rate_reserve``, which, under the row lock, finds the earliest
time that satisfies both readings of "N per minute, burst B" at once (a GCRA token bucket and a
rolling-window cap over the recorded grant times) and any 429 pause, records the grant and returns
it; the caller then sleeps until that time. Interval and window are stretched by a small ``margin``
and one token of the burst is held back, because the server measures arrival times and our sends
jitter. ``pause`` extends (never shortens)
a pause that every process honours.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from harvester import logs
from harvester.config import AccountConfig, RateLimitConfig
from harvester.db import connection, guard
from harvester.db.queries import NamedQueries
from harvester.errors import ConfigError
from harvester.ports import Usage
from harvester.scheduling.brakes import rate_pause_s

log = logs.get("harvester.db.limiter")

DEFAULT_MARGIN = 0.02  # 2 % of the interval and of the window: leaves ~98 % of the budget usable
MAX_PAUSE_S = 26 * 3600.0  # a budget refusal lasts until midnight UTC at most; junk is capped
DEFAULT_JITTER_S = 0.025  # how late a send may leave after its slot (see SharedLimiter.__init__)
MAX_PEEK = 10_000


class SQL(NamedQueries):
    reserve_slot: str
    peek_limiter: str
    pause_limiter: str
    select_paused_until: str
    describe_limiters: str


def fingerprint(token: str) -> str:
    """The key a credential's state is stored under: sha256 hex; the token never reaches the DB."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class Grant:
    """One reserved request slot: send at ``at`` (database clock); ``db_now`` was read with it."""

    at: datetime
    db_now: datetime

    @property
    def wait_s(self) -> float:
        return max(0.0, (self.at - self.db_now).total_seconds())


@dataclass(frozen=True, slots=True)
class LimiterState:
    credential: str  # a short prefix of the fingerprint, for display
    tokens: int  # requests that could be sent right now
    next_free_at: datetime
    next_free_in_s: float
    paused_until: datetime | None
    pause_reason: str | None
    in_window: int  # grants (sent or reserved) inside the current rolling window
    limit: int  # the rolling-window cap
    window_s: float
    burst: int
    granted_total: int
    db_now: datetime

    @property
    def paused(self) -> bool:
        return self.paused_until is not None and self.paused_until > self.db_now

    def as_dict(self) -> dict[str, Any]:
        paused = self.paused
        return {
            "credential": self.credential,
            "tokens": self.tokens,
            "next_free_in_s": round(self.next_free_in_s, 3),
            "in_window": self.in_window,
            "limit": self.limit,
            "window_s": self.window_s,
            "burst": self.burst,
            "granted_total": self.granted_total,
            "paused_until": self.paused_until.isoformat() if paused and self.paused_until else None,
            "pause_reason": self.pause_reason if paused else None,
        }


class SharedLimiter:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        token: str = "",
        key: str = "",
        requests_per_minute: float,
        burst: int,
        window_s: float,
        default_pause_s: float,
        margin: float = DEFAULT_MARGIN,
        jitter_s: float = DEFAULT_JITTER_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        wall: Callable[[], float] = time.time,
    ) -> None:
        if not token and not key:
            raise ConfigError("api.token: the rate limiter needs a credential")
        if not requests_per_minute > 0 or not window_s > 0 or burst < 1:
            raise ConfigError("rate_limit: requests_per_minute, window and burst must be positive")
        if not 0 <= margin < 1 or jitter_s < 0:
            raise ConfigError("rate_limit: margin must be in [0, 1) and jitter_s >= 0")
        self.pool = pool
        self.key = key or fingerprint(token)
        self._scrub = logs.scrubber(token) if token else logs.scrub
        self.interval_s = 60.0 / requests_per_minute
        # the cap of any rolling window: requests_per_minute is already speed-scaled, window_s too
        self.limit = max(1, math.floor(requests_per_minute * window_s / 60.0 + 1e-9))
        self.burst = min(burst, self.limit)
        # A few tokens of the burst are held back as a cushion: right after a full burst the
        # server's bucket is empty, and a send that jitters later than the margin would be a 429.
        # The cushion covers ``jitter_s`` of lateness (at least one interval); it shapes bursts
        # only, the sustained rate is unchanged.
        cushion = max(1, math.ceil(jitter_s / self.interval_s))
        self.gcra_burst = max(1, self.burst - cushion)
        self.window_s = window_s
        self.margin = margin
        self.jitter_s = jitter_s
        self.default_pause_s = default_pause_s
        # How much later than its slot a send may leave: the widening of the window (see _params)
        self.late_allowance_s = (window_s + jitter_s) * (1 + margin) - window_s
        self._clock = clock
        self._sleep = sleep
        self._wall = wall

    @classmethod
    def for_account(
        cls, pool: asyncpg.Pool, account: AccountConfig, default_pause_s: float, window_s: float
    ) -> SharedLimiter:
        """An account's budget (keyed by its name): its limit minus its reserve for other users."""
        return cls(
            pool,
            key=account.name,
            requests_per_minute=account.requests_per_minute - account.reserve_per_minute,
            burst=account.burst,
            window_s=window_s,
            default_pause_s=default_pause_s,
        )

    @classmethod
    def from_config(cls, pool: asyncpg.Pool, token: str, cfg: RateLimitConfig) -> SharedLimiter:
        """The budget harvester plans with: the limit minus what is reserved for other users."""
        return cls(
            pool,
            token=token,
            requests_per_minute=cfg.requests_per_minute - cfg.reserve_per_minute,
            burst=cfg.burst,
            window_s=cfg.window_s,
            default_pause_s=cfg.default_pause_s,
        )

    def __repr__(self) -> str:
        return f"SharedLimiter(credential={self.key[:12]}, limit={self.limit}/{self.window_s}s)"

    def _params(self) -> tuple[str, int, float, float, int, float]:
        # the window is also widened by the jitter allowance: a late send must not pull the
        # next window's first request into this one
        return (
            self.key,
            self.limit,
            self.window_s + self.jitter_s,
            self.interval_s,
            self.gcra_burst,
            self.margin,
        )

    async def reserve(self) -> Grant:
        """Reserve the next free slot for this credential (shared by every process)."""
        with guard("rate limiter"):
            async with connection(self.pool) as conn:
                row = await conn.fetchrow(SQL.reserve_slot, *self._params())
        assert row is not None
        return Grant(at=row["granted_at"], db_now=row["db_now"])

    async def acquire(self) -> None:
        """Wait for one request slot; a cancelled wait simply wastes the reserved slot."""
        while True:
            grant = await self.reserve()
            if grant.wait_s <= 0:
                return
            deadline = self._clock() + grant.wait_s
            await self._sleep(max(0.0, deadline - self._clock()))
            # A 429 seen by any process while we slept pauses us too: take a new slot after it.
            with guard("rate limiter"):
                async with connection(self.pool) as conn:
                    paused_until = await conn.fetchval(SQL.select_paused_until, self.key)
            if paused_until is not None and paused_until > grant.at:
                log.info(
                    "limiter_slot_dropped",
                    reason="paused while waiting",
                    paused_until=paused_until.isoformat(),
                )
                continue
            # A send later than the window's slack could put one request too many into somebody's
            # rolling window (the grant was recorded at its slot, the server counts arrivals).
            # Only an overloaded event loop is that late; the slot stays counted and is wasted.
            late = self._clock() - deadline
            if late <= self.late_allowance_s:
                return
            log.info("limiter_slot_dropped", reason="woke too late", late_s=round(late, 4))

    async def pause(self, *, retry_after_s: float | None, reset_at: float | None, reason: str) -> float:
        """Pause every process on this credential; return how long the pause now lasts."""
        length = rate_pause_s(retry_after_s, reset_at, self._wall(), self.default_pause_s)
        reason = self._scrub(reason)[:200]
        with guard("rate limiter"):
            async with connection(self.pool) as conn:
                remaining = await conn.fetchval(SQL.pause_limiter, self.key, length, reason)
        effective = max(0.0, float(remaining)) if remaining is not None else length
        log.warning(
            "limiter_paused", pause_s=round(effective, 3), requested_s=round(length, 3), reason=reason
        )
        return effective

    async def _peek(self, horizon_s: float, max_count: int) -> asyncpg.Record:
        with guard("rate limiter"):
            async with connection(self.pool) as conn:
                row = await conn.fetchrow(SQL.peek_limiter, *self._params(), max(0.0, horizon_s), max_count)
        assert row is not None
        return row

    async def available_slots(self, horizon_s: float) -> int:
        """How many requests could be granted from now until ``horizon_s`` from now."""
        cap = min(MAX_PEEK, self.limit + math.ceil(max(0.0, horizon_s) / self.interval_s) + 1)
        row = await self._peek(horizon_s, cap)
        return int(row["available"])

    async def state(self) -> LimiterState:
        row = await self._peek(0.0, self.limit)
        return _state(row, self.key, self.limit, self.window_s, self.burst)

    async def usage(self) -> Usage:
        state = await self.state()
        return Usage(in_window=state.in_window, limit=state.limit, window_s=state.window_s)


def _state(
    row: asyncpg.Record | dict[str, Any], key: str, limit: int, window_s: float, burst: int
) -> LimiterState:
    return LimiterState(
        credential=key[:12],
        tokens=int(row["available"]),
        next_free_at=row["next_at"],
        next_free_in_s=max(0.0, (row["next_at"] - row["db_now"]).total_seconds()),
        paused_until=row["paused_until"],
        pause_reason=row["pause_reason"],
        in_window=int(row["in_window"]),
        limit=limit,
        window_s=window_s,
        burst=burst,
        granted_total=int(row["granted_total"]),
        db_now=row["db_now"],
    )


async def describe_all(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Every credential's limiter state, for ``harvester status`` (no token, only a fingerprint)."""
    with guard("rate limiter"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.describe_limiters)
    return [
        {
            "account": row["account"],
            **_state(
                row,
                row["credential"],
                int(row["n_limit"] or 0),
                float(row["window_s"] or 0.0),
                int(row["burst"] or 0),
            ).as_dict(),
        }
        for row in rows
    ]
