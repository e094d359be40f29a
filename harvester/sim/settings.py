"""Settings of one simulator instance: a frozen value built from flags or by tests.

Everything that shapes the simulated API lives here: accepted credentials, the rate limit, the job
durations and outcome rates, the seed and the fault shares that apply from start-up. Faults can be
changed later at run time through ``POST /_sim/faults``; the rest is fixed for the life of the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_TOKEN = "demo:demo:demo"  # noqa: S105 - the documented demo credential


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Shares of requests (0..1) to /results, /status and /list that misbehave, and how."""

    error_5xx: float = 0.0
    hang: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    long_retry_after: float = 0.0
    long_retry_after_s: int = 3600
    hang_s: float = 300.0
    storm_s: float = 0.0


@dataclass(frozen=True, slots=True)
class SimSettings:
    """The whole configuration of one simulator; durations are in simulated seconds."""

    host: str = "127.0.0.1"
    port: int = 8765
    speed: float = 1.0
    seed: int = 0
    tokens: tuple[str, ...] = (DEFAULT_TOKEN,)
    inactive_tokens: tuple[str, ...] = ()
    rate_per_minute: float = 100.0
    burst: int = 20
    fail_rate: float = 0.05
    cancel_rate: float = 0.02
    queue_wait_s: tuple[float, float] = (0.5, 4.0)
    site_duration_s: tuple[float, float] = (10.0, 30.0)
    maps_duration_s: tuple[float, float] = (30.0, 90.0)
    other_duration_s: tuple[float, float] = (3.0, 10.0)
    revoked_status: int = 401
    variants: bool = True
    initial_jobs: int = 0
    epoch: float | None = None
    faults: FaultSettings = field(default_factory=FaultSettings)

    def __post_init__(self) -> None:
        if self.speed <= 0:
            raise ValueError("speed must be positive")
        if self.burst < 1 or self.rate_per_minute <= 0:
            raise ValueError("burst and rate_per_minute must be positive")
        for name in ("fail_rate", "cancel_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.fail_rate + self.cancel_rate > 1.0:
            raise ValueError("fail_rate + cancel_rate must not exceed 1")
        if self.revoked_status not in (401, 403):
            raise ValueError("revoked_status must be 401 or 403")
