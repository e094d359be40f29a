"""The process-wide brakes on sending: a refused credential, the circuit breaker, a 429 pause.

``Brakes`` is one frozen value; every question the loops ask of it is a pure function over it and
``now`` (the monotonic clock): what an outcome does to it (``after``), how many jobs may be claimed
(``claim_budget``), whether a job already claimed must wait instead of being sent (``hold_back``),
whether a side request such as a list page may go out (``side_requests_paused``) and what
``/readyz`` says (``reason``). ``rate_pause_s`` is the one rule for how long a 429 pauses, with one
cap. Nothing here does I/O.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from harvester.api.outcomes import AuthFailed, RateLimited, Transient
from harvester.config import PollingConfig

# A budget refusal lasts until midnight UTC at most; a longer Retry-After is junk and is capped,
# so no header can park the queue (and let its jobs expire unpolled) for days.
MAX_RATE_PAUSE_S = 26 * 3600.0


def rate_pause_s(
    retry_after_s: float | None,
    reset_at: float | None,
    now_unix: float,
    default_s: float,
    max_s: float = MAX_RATE_PAUSE_S,
) -> float:
    """How long a 429 pauses every process: Retry-After, else X-RateLimit-Reset, else default."""
    if retry_after_s is not None and retry_after_s >= 0:
        length = retry_after_s
    elif reset_at is not None and reset_at > now_unix:
        length = reset_at - now_unix
    else:
        length = default_s
    return min(length, max_s)


@dataclass(frozen=True, slots=True)
class Breaker:
    """Consecutive transport failures; open pauses all polling until ``open_until``."""

    failures: int = 0
    open_until: float = 0.0

    def is_open(self, now: float) -> bool:
        return now < self.open_until

    def record_success(self) -> Breaker:
        return Breaker() if self.failures or self.open_until else self

    def record_failure(self, now: float, cfg: PollingConfig) -> Breaker:
        failures = self.failures + 1
        if failures >= cfg.breaker_threshold:
            # Half-open after the pause: one more failure re-opens it at once.
            return replace(self, failures=failures, open_until=now + cfg.breaker_pause_s)
        return replace(self, failures=failures)

    def half_open(self, now: float, cfg: PollingConfig) -> bool:
        return not self.is_open(now) and self.failures >= cfg.breaker_threshold


@dataclass(frozen=True, slots=True)
class Brakes:
    auth_failed: bool = False
    auth_paused_until: float = 0.0
    breaker: Breaker = Breaker()
    rate_paused_until: float = 0.0  # when a 429 seen here pauses the shared limiter until


def after(brakes: Brakes, outcome: object, now: float, cfg: PollingConfig, rate_pause: float = 0.0) -> Brakes:
    """What one response does to the brakes. ``rate_pause`` is the pause a 429 set (seconds)."""
    if isinstance(outcome, RateLimited):
        return replace(brakes, rate_paused_until=max(brakes.rate_paused_until, now + rate_pause))
    if isinstance(outcome, AuthFailed):
        return replace(brakes, auth_failed=True, auth_paused_until=now + cfg.auth_recheck_s)
    if isinstance(outcome, Transient):
        return replace(brakes, breaker=brakes.breaker.record_failure(now, cfg))
    breaker = brakes.breaker.record_success()
    if breaker is brakes.breaker and not brakes.auth_failed:
        return brakes
    return replace(brakes, auth_failed=False, auth_paused_until=0.0, breaker=breaker)


def claim_budget(brakes: Brakes, now: float, *, free: int, in_flight: int, cfg: PollingConfig) -> int:
    """How many jobs may be claimed now: the free in-flight slots, or one probe while paused."""
    if brakes.auth_failed:
        if now < brakes.auth_paused_until or in_flight:
            return 0
        return 1  # one slow re-check of the credential
    if brakes.breaker.is_open(now):
        return 0
    if brakes.breaker.half_open(now, cfg):
        return 0 if in_flight else 1
    return max(0, free)


def hold_back(brakes: Brakes, now: float) -> float | None:
    """Seconds a claimed job must wait instead of being sent now, None to send it.

    Jobs claimed before a refused credential or an opened breaker still queue for a limiter slot;
    sending them once the pause is known would spend requests the pause exists to save. The one
    probe that tests a pause is claimed only after it ends, so it is never held. A 429 pause is
    not here: the shared limiter holds every process's sends until it ends.
    """
    if brakes.auth_failed and now < brakes.auth_paused_until:
        return brakes.auth_paused_until - now
    if brakes.breaker.is_open(now):
        return brakes.breaker.open_until - now
    return None


def side_requests_paused(brakes: Brakes, now: float, *, in_flight: int, cfg: PollingConfig) -> bool:
    """Whether side requests (list pages) must hold off.

    While the credential is refused, the worker's one probe per ``auth_recheck_s`` is the only
    request allowed: a list page sent beside it would be a second probe. While the breaker is
    open (or half-open with its probe out) nothing else goes out either.
    """
    if brakes.auth_failed:
        return now < brakes.auth_paused_until or in_flight > 0
    if brakes.breaker.is_open(now):
        return True
    return brakes.breaker.half_open(now, cfg) and in_flight > 0


def reason(brakes: Brakes, now: float) -> str | None:
    """Why sending is paused, for ``/readyz``; None when nothing holds it."""
    if brakes.auth_failed:
        return "credential refused"
    if brakes.breaker.is_open(now):
        return "circuit breaker open"
    if now < brakes.rate_paused_until:
        return f"rate limited (429): paused for {brakes.rate_paused_until - now:.0f} s more"
    return None
