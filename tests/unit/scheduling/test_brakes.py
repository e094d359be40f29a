"""The brakes as a value: what each outcome does to them and what each question answers."""

from __future__ import annotations

import pytest

from harvester.api import outcomes
from harvester.config import PollingConfig
from harvester.scheduling import brakes
from harvester.scheduling.brakes import Brakes, Breaker

CFG = PollingConfig(breaker_threshold=3, breaker_pause_s=10.0, auth_recheck_s=300.0)
NOW = 1_000.0
UNIX = 1_760_000_000.0
REFUSED = Brakes(auth_failed=True, auth_paused_until=NOW + 300.0)
OPEN = Brakes(breaker=Breaker(failures=3, open_until=NOW + 10.0))
HALF_OPEN = Brakes(breaker=Breaker(failures=3, open_until=NOW - 1.0))
RATE = Brakes(rate_paused_until=NOW + 45.0)


@pytest.mark.parametrize(
    ("retry_after", "reset_at", "expected"),
    [
        (30.0, None, 30.0),
        (7200.0, UNIX + 10, 7200.0),  # Retry-After wins over the reset time
        (0.0, None, 0.0),
        (0.0, UNIX + 30, 0.0),
        (None, UNIX + 45, 45.0),
        (None, UNIX - 45, 60.0),  # a reset in the past: the default
        (None, None, 60.0),
        (-1.0, None, 60.0),
        (10 * 86400.0, None, brakes.MAX_RATE_PAUSE_S),  # junk is capped
        (None, UNIX + 10 * 86400.0, brakes.MAX_RATE_PAUSE_S),
        (23 * 3600.0, None, 23 * 3600.0),  # a day-long budget refusal is not junk
    ],
)
def test_rate_pause(retry_after: float | None, reset_at: float | None, expected: float) -> None:
    assert brakes.rate_pause_s(retry_after, reset_at, UNIX, 60.0) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("start", "outcome", "pause", "expected"),
    [
        (
            Brakes(),
            outcomes.AuthFailed(http_status=401),
            0.0,
            Brakes(auth_failed=True, auth_paused_until=NOW + 300.0),
        ),
        (
            Brakes(),
            outcomes.AuthFailed(http_status=402),
            0.0,
            Brakes(auth_failed=True, auth_paused_until=NOW + 300.0),
        ),
        (REFUSED, outcomes.Pending(), 0.0, Brakes()),  # any answer but 401/402/403 restores it
        (REFUSED, outcomes.NotFound(), 0.0, Brakes()),
        (
            REFUSED,
            outcomes.RateLimited(),
            30.0,
            Brakes(auth_failed=True, auth_paused_until=NOW + 300.0, rate_paused_until=NOW + 30.0),
        ),
        (Brakes(), outcomes.Transient(), 0.0, Brakes(breaker=Breaker(failures=1))),
        (
            Brakes(breaker=Breaker(failures=2)),
            outcomes.Transient(),
            0.0,
            Brakes(breaker=Breaker(failures=3, open_until=NOW + 10.0)),
        ),
        (
            HALF_OPEN,
            outcomes.Transient(),
            0.0,  # the half-open probe failed: open again at once
            Brakes(breaker=Breaker(failures=4, open_until=NOW + 10.0)),
        ),
        (HALF_OPEN, outcomes.Completed(body=b"{}", doc={}), 0.0, Brakes()),
        (Brakes(), outcomes.RateLimited(), 45.0, Brakes(rate_paused_until=NOW + 45.0)),
        (RATE, outcomes.RateLimited(), 5.0, RATE),  # a shorter pause never shortens a longer one
        (RATE, outcomes.Pending(), 0.0, RATE),  # the limiter ends a 429 pause, not an answer
        (Brakes(), outcomes.Pending(), 0.0, Brakes()),
    ],
)
def test_after(start: Brakes, outcome: object, pause: float, expected: Brakes) -> None:
    assert brakes.after(start, outcome, NOW, CFG, pause) == expected


def test_after_leaves_a_quiet_value_as_it_is() -> None:
    quiet = Brakes()
    assert brakes.after(quiet, outcomes.Pending(), NOW, CFG) is quiet


@pytest.mark.parametrize(
    ("state", "now", "free", "in_flight", "expected"),
    [
        (Brakes(), NOW, 8, 0, 8),
        (Brakes(), NOW, 0, 8, 0),
        (REFUSED, NOW, 8, 0, 0),  # refused: nothing until the re-check
        (REFUSED, NOW + 301, 8, 0, 1),  # then one probe
        (REFUSED, NOW + 301, 7, 1, 0),  # ... and only when nothing else is out
        (OPEN, NOW, 8, 0, 0),
        (HALF_OPEN, NOW, 8, 0, 1),  # half-open: one probe
        (HALF_OPEN, NOW, 7, 1, 0),
        (RATE, NOW, 8, 0, 8),  # the shared limiter holds sends during a 429 pause
    ],
)
def test_claim_budget(state: Brakes, now: float, free: int, in_flight: int, expected: int) -> None:
    assert brakes.claim_budget(state, now, free=free, in_flight=in_flight, cfg=CFG) == expected


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        (Brakes(), NOW, None),
        (REFUSED, NOW, 300.0),
        (REFUSED, NOW + 301, None),  # the probe is claimed after the pause: never held
        (OPEN, NOW + 4, 6.0),
        (HALF_OPEN, NOW, None),
        (RATE, NOW, None),
    ],
)
def test_hold_back(state: Brakes, now: float, expected: float | None) -> None:
    assert brakes.hold_back(state, now) == (None if expected is None else pytest.approx(expected))


@pytest.mark.parametrize(
    ("state", "now", "in_flight", "expected"),
    [
        (Brakes(), NOW, 0, False),
        (Brakes(), NOW, 8, False),
        (REFUSED, NOW, 0, True),
        (REFUSED, NOW + 301, 0, False),  # a list page may be the probe...
        (REFUSED, NOW + 301, 1, True),  # ... but not beside the worker's
        (OPEN, NOW, 0, True),
        (OPEN, NOW, 3, True),
        (HALF_OPEN, NOW, 0, False),
        (HALF_OPEN, NOW, 1, True),
        (RATE, NOW, 0, False),  # list pages queue in the shared limiter like every request
    ],
)
def test_side_requests_paused(state: Brakes, now: float, in_flight: int, expected: bool) -> None:
    assert brakes.side_requests_paused(state, now, in_flight=in_flight, cfg=CFG) is expected


@pytest.mark.parametrize(
    ("state", "now", "expected"),
    [
        (Brakes(), NOW, None),
        (REFUSED, NOW, "credential refused"),
        (OPEN, NOW, "circuit breaker open"),
        (HALF_OPEN, NOW, None),
        (RATE, NOW, "rate limited (429): paused for 45 s more"),
        (RATE, NOW + 46, None),
    ],
)
def test_reason(state: Brakes, now: float, expected: str | None) -> None:
    assert brakes.reason(state, now) == expected


def test_breaker_opens_after_threshold_and_closes_on_success() -> None:
    breaker = Breaker()
    for _ in range(2):
        breaker = breaker.record_failure(100.0, CFG)
    assert not breaker.is_open(100.0)
    breaker = breaker.record_failure(100.0, CFG)
    assert breaker.is_open(105.0)
    assert not breaker.is_open(110.0)
    assert breaker.half_open(110.0, CFG)
    assert breaker.record_success() == Breaker()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-RateLimit-Remaining": "0"}, 0),
        ({"X-RateLimit-Remaining": " 7 "}, 7),
        ({"X-RateLimit-Remaining": "-1"}, None),
        ({"X-RateLimit-Remaining": "lots"}, None),
        ({}, None),
    ],
)
def test_the_servers_remaining_requests_are_read_from_its_header(
    headers: dict[str, str], expected: int | None
) -> None:
    from harvester.api.classify import remaining

    assert remaining(headers) == expected
