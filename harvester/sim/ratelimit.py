"""Per-credential rate limiting and rate accounting for the simulator.

:class:`TokenBucket` is the server's limit: ``burst`` tokens, refilled at ``rate_per_minute / 60``
tokens per simulated second. :class:`RateMeter` watches every request that reached the limiter
(allowed or refused) and keeps the facts a client is judged by: the largest number of requests in
any rolling 60 s window and the largest burst, i.e. the most requests sent beyond the sustained
rate since the client was last idle (a client that obeys "100/min, burst 20" never exceeds 20).
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class Decision:
    """The limiter's answer to one request, with the values of the rate-limit headers."""

    allowed: bool
    limit: int
    remaining: int
    retry_after_s: float
    full_in_s: float


class TokenBucket:
    """A classic token bucket on the simulated clock."""

    def __init__(self, rate_per_minute: float, burst: int, now: float) -> None:
        self.rate_per_minute = rate_per_minute
        self.burst = burst
        self._per_s = rate_per_minute / 60.0
        self._tokens = float(burst)
        self._at = now

    def _refill(self, now: float) -> None:
        if now > self._at:
            self._tokens = min(float(self.burst), self._tokens + (now - self._at) * self._per_s)
            self._at = now

    def take(self, now: float) -> Decision:
        """Spend one token if there is one."""
        self._refill(now)
        allowed = self._tokens >= 1.0
        if allowed:
            self._tokens -= 1.0
        retry = 0.0 if allowed else (1.0 - self._tokens) / self._per_s
        return Decision(
            allowed=allowed,
            limit=int(self.rate_per_minute),
            remaining=math.floor(self._tokens),
            retry_after_s=retry,
            full_in_s=(self.burst - self._tokens) / self._per_s,
        )

    def peek(self, now: float) -> Decision:
        """The header values without spending anything (for answers that bypass the bucket)."""
        self._refill(now)
        return Decision(
            allowed=self._tokens >= 1.0,
            limit=int(self.rate_per_minute),
            remaining=math.floor(self._tokens),
            retry_after_s=0.0,
            full_in_s=(self.burst - self._tokens) / self._per_s,
        )


class RateMeter:
    """Counts requests per credential over a rolling window and tracks the largest burst."""

    def __init__(self, rate_per_minute: float) -> None:
        self._per_s = rate_per_minute / 60.0
        self._times: deque[float] = deque()
        self._excess = 0.0
        self._last: float | None = None
        self.max_in_window = 0
        self.max_burst = 0.0
        self.total = 0

    def record(self, now: float) -> None:
        self.total += 1
        self._times.append(now)
        # The window is (now - 60 s, now]: a request exactly 60 s old no longer counts.
        while self._times and self._times[0] <= now - WINDOW_S + 1e-6:
            self._times.popleft()
        self.max_in_window = max(self.max_in_window, len(self._times))
        if self._last is not None:
            self._excess = max(0.0, self._excess - (now - self._last) * self._per_s)
        self._excess += 1.0
        self._last = now
        self.max_burst = max(self.max_burst, self._excess)

    def in_window(self, now: float) -> int:
        return sum(1 for t in self._times if t > now - WINDOW_S + 1e-6)
