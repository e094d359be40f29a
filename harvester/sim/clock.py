"""Simulated time for the SpiderIQ simulator.

The simulator runs on one clock: simulated seconds are real monotonic seconds multiplied by the
speed factor, so ``--speed 30`` makes a 20 s job finish in two thirds of a real second and refills
the rate-limit bucket thirty times faster. Simulated wall time (what appears in response bodies) is
the real wall time at start-up plus the simulated seconds elapsed since. Tests inject a
:class:`ManualClock` to move time by hand instead of sleeping.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    """What the simulator needs from time: a monotonic simulated clock and its wall anchor."""

    speed: float

    def now(self) -> float:
        """Simulated seconds since the clock started."""
        ...

    def wall(self, sim_t: float) -> float:
        """Unix timestamp (simulated wall time) of a simulated instant."""
        ...

    def real_wall(self, sim_t: float) -> float:
        """Real unix timestamp at which a simulated instant happens (or happened)."""
        ...


class SimClock:
    """Real monotonic time scaled by ``speed``; anchored to the real wall clock at creation."""

    def __init__(self, speed: float = 1.0, epoch: float | None = None) -> None:
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = speed
        self._t0 = time.monotonic()
        self._real_wall0 = time.time()
        self._wall0 = self._real_wall0 if epoch is None else epoch

    def now(self) -> float:
        return (time.monotonic() - self._t0) * self.speed

    def wall(self, sim_t: float) -> float:
        return self._wall0 + sim_t

    def real_wall(self, sim_t: float) -> float:
        return self._real_wall0 + sim_t / self.speed


class ManualClock:
    """A clock that moves only when told to; for deterministic tests."""

    def __init__(self, speed: float = 1.0, epoch: float = 1_761_559_200.0) -> None:
        self.speed = speed
        self._t = 0.0
        self._wall0 = epoch

    def now(self) -> float:
        return self._t

    def advance(self, sim_seconds: float) -> None:
        self._t += sim_seconds

    def wall(self, sim_t: float) -> float:
        return self._wall0 + sim_t

    def real_wall(self, sim_t: float) -> float:
        return self._wall0 + sim_t / self.speed


def iso_z(unix_ts: float) -> str:
    """``2025-10-27T10:00:00Z`` style (whole seconds), as in the documentation's examples."""
    return datetime.fromtimestamp(unix_ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def iso_naive(unix_ts: float) -> str:
    """``2026-01-18T12:31:37.073080`` style: no offset, microseconds (a documented variant)."""
    return datetime.fromtimestamp(unix_ts, UTC).replace(tzinfo=None).isoformat(timespec="microseconds")
