"""Settings of one simulator instance: a frozen value built from flags or by tests.

Everything that shapes the simulated API lives here: accepted credentials, the rate limit, the job
durations, their shape and the share of a run the reported processing time covers, outcome rates,
the seed and the fault shares that apply from start-up. Faults can be changed later at run time
through ``POST /_sim/faults``, the queue's pace through ``POST /_sim/queue`` and the run times
through ``POST /_sim/run-times``; the rest is fixed for the life of the app.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from harvester.sim.jobs import RunTimes, Shape

DEFAULT_TOKEN = "demo:demo:demo"  # noqa: S105 - the documented demo credential


@dataclass(frozen=True, slots=True)
class FaultSettings:
    """Shares of requests (0..1) to /results, /status and /list that misbehave, and how; and the
    event stream's faults and framing quirks."""

    error_5xx: float = 0.0
    hang: float = 0.0
    reset: float = 0.0
    truncate: float = 0.0
    long_retry_after: float = 0.0
    long_retry_after_s: int = 3600
    hang_s: float = 300.0
    storm_s: float = 0.0
    # The event stream (GET /api/v1/events/stream); durations in simulated seconds.
    events_lost: float = 0.0
    stream_cut_s: float | None = None
    stream_stall: bool = False
    stream_refuse: str | None = None
    stream_refuse_retry_after_s: int = 30
    stream_noise: float = 0.05
    stream_crlf: bool = False
    stream_multiline: float = 0.0
    stream_retry_ms: int | None = None

    def __post_init__(self) -> None:
        for name in ("events_lost", "stream_noise", "stream_multiline"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within 0..1")
        if self.stream_refuse not in (None, "429", "503"):
            raise ValueError("stream_refuse must be '429', '503' or None")
        if self.stream_cut_s is not None and self.stream_cut_s <= 0:
            raise ValueError("stream_cut_s must be positive")


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
    # Run times within those ranges: "uniform", or "lognormal" with the range's midpoint as median
    # and this sigma (heavy-tailed, capped); see harvester.sim.jobs.
    run_time_shape: Shape = "uniform"
    run_time_sigma: float = 1.0
    # The share of a run that the reported processing time covers (None: reported as null).
    processing_time_share: float | None = 1.0
    revoked_status: int = 401
    variants: bool = True
    initial_jobs: int = 0
    epoch: float | None = None
    # The queue's own throughput: jobs start no faster than this, FIFO by creation (None = unlimited).
    queue_starts_per_minute: float | None = None
    heartbeat_s: float = 30.0
    # Longest real pause of a stream's loop; it also wakes at its next simulated deadline.
    stream_tick_s: float = 0.05
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
        if self.queue_starts_per_minute is not None and self.queue_starts_per_minute <= 0:
            raise ValueError("queue_starts_per_minute must be positive")
        if self.heartbeat_s <= 0 or self.stream_tick_s <= 0:
            raise ValueError("heartbeat_s and stream_tick_s must be positive")
        self.run_times()  # refuses a bad shape, sigma or share

    def run_times(self) -> RunTimes:
        return RunTimes(self.run_time_shape, self.run_time_sigma, self.processing_time_share)
