"""The gate every sender passes: what a response does to the process, and what senders may do.

The rules themselves are ``brakes`` (tests/unit/test_brakes.py); these tests state the gate's own
part: it feeds every response through them with its clock, pauses the shared limiter on a 429,
reports each response and error to the observer, ignores a refusal of a token rotated out, and
answers the loops' questions (budget, hold-back, poll factor, readiness details).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from structlog.testing import capture_logs

from harvester.api import outcomes
from harvester.config import Config
from harvester.scheduling.gate import STREAM_POLL_FACTOR, Gate
from tests.support import configs
from tests.support.fakes import FakeLimiter


def cfg_with(**overrides: object) -> Config:
    return configs.loaded({**overrides})


CFG = cfg_with()
POLLING = CFG.polling


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Recorder:
    requests: list[tuple[str, int | str, float]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def request_done(self, endpoint: str, status: int | str, wait_s: float) -> None:
        self.requests.append((endpoint, status, wait_s))

    def job_finished(self, state: str, polls: int, latency_s: float | None) -> None:
        pass

    def store_done(self, seconds: float) -> None:
        pass

    def stream_event(self, kind: str, matched: int) -> None:
        pass

    def stream_state(self, connected: bool, *, reconnect: bool = False) -> None:
        pass

    def error(self, kind: str) -> None:
        self.errors.append(kind)


@dataclass
class Parts:
    clock: Clock = field(default_factory=Clock)
    limiter: FakeLimiter = field(default_factory=FakeLimiter)
    observer: Recorder = field(default_factory=Recorder)
    cfg: Config = CFG

    def __post_init__(self) -> None:
        self.gate = Gate(
            self.cfg, self.limiter, observer=self.observer, clock=self.clock, wall=lambda: 1_700_000_000.0
        )


async def test_every_response_is_reported_with_its_status_and_wait() -> None:
    parts = Parts()
    await parts.gate.observe("results", outcomes.Pending(), 0.25)
    await parts.gate.observe("list", outcomes.Transient(reason="reset"), 0.5)
    assert parts.observer.requests == [("results", 202, 0.25), ("list", "error", 0.5)]
    assert parts.observer.errors == ["transient"]


async def test_a_429_pauses_the_shared_limiter_and_shows_in_readiness() -> None:
    parts = Parts()
    with capture_logs() as logged:
        await parts.gate.observe("results", outcomes.RateLimited(retry_after_s=120.0), 0.0)
    assert parts.limiter.pauses == [120.0]
    assert parts.observer.errors == ["rate_limited"]
    assert [e["pause_s"] for e in logged if e["event"] == "api_rate_limited"] == [120.0]
    assert parts.gate.paused_reason() == "rate limited (429): paused for 120 s more"
    assert parts.gate.hold_back() is None  # the limiter holds every process's sends, not the gate
    parts.clock.now += 121.0
    assert parts.gate.paused_reason() is None


async def test_a_refused_credential_allows_one_probe_per_recheck() -> None:
    parts = Parts()
    with capture_logs() as logged:
        await parts.gate.observe("results", outcomes.AuthFailed(detail="revoked", http_status=401), 0.0)
    assert parts.observer.errors == ["auth"]
    assert [e["event"] for e in logged] == ["api_auth_failed"]
    assert parts.gate.claim_budget(8) == 0
    assert parts.gate.hold_back() == pytest.approx(POLLING.auth_recheck_s)
    assert parts.gate.side_requests_paused() and parts.gate.paused_reason() == "credential refused"
    parts.clock.now += POLLING.auth_recheck_s
    assert parts.gate.claim_budget(8) == 1  # the probe
    parts.gate.in_flight = 1
    assert parts.gate.claim_budget(8) == 0 and parts.gate.side_requests_paused()  # probe out
    parts.gate.in_flight = 0
    with capture_logs() as logged:
        await parts.gate.observe("results", outcomes.Pending(), 0.0)
    assert [e["event"] for e in logged] == ["api_auth_restored"]
    assert parts.gate.claim_budget(8) == 8 and parts.gate.paused_reason() is None


async def test_transport_failures_open_the_breaker_once() -> None:
    parts = Parts()
    with capture_logs() as logged:
        for _ in range(POLLING.breaker_threshold + 2):
            await parts.gate.observe("results", outcomes.Transient(reason="reset"), 0.0)
    assert [e["event"] for e in logged] == ["breaker_opened"]
    assert parts.gate.paused_reason() == "circuit breaker open"
    assert parts.gate.claim_budget(8) == 0
    assert parts.gate.hold_back() == pytest.approx(POLLING.breaker_pause_s)
    parts.clock.now += POLLING.breaker_pause_s
    assert parts.gate.claim_budget(8) == 1  # half-open: one probe
    await parts.gate.observe("results", outcomes.Pending(), 0.0)
    assert parts.gate.claim_budget(8) == 8


async def test_a_refusal_of_a_token_rotated_out_meanwhile_does_not_pause_the_new_one() -> None:
    """SIGHUP while a request with the old token is in flight: its 401 arrives after the rotation
    and must not park the new token until the next recheck; a refusal of the new token does."""
    parts = Parts()
    gate = parts.gate
    await gate.observe("list", outcomes.AuthFailed(detail="bad"), 0.0, gate.rotations)
    assert gate.brakes.auth_failed and gate.hold_back() is not None
    old = gate.rotations
    gate.token_rotated()
    assert gate.hold_back() is None  # the new token is tried at once
    with capture_logs() as logged:
        await gate.observe("list", outcomes.AuthFailed(detail="bad"), 0.0, old)  # sent before the rotation
    assert [e["event"] for e in logged] == ["api_auth_failed_old_token"]
    assert gate.hold_back() is None
    await gate.observe("list", outcomes.AuthFailed(detail="bad"), 0.0, gate.rotations)
    assert gate.hold_back() is not None  # the new token refused too


def test_a_rotated_token_wakes_the_worker() -> None:
    parts = Parts()
    assert not parts.gate.work.is_set()
    parts.gate.token_rotated()
    assert parts.gate.rotations == 1 and parts.gate.work.is_set()


def test_the_gate_never_plans_past_what_the_server_says_is_left() -> None:
    gate = Parts().gate
    assert gate.claim_limit(8) == 8  # the server said nothing
    gate.note_remaining(3)
    assert gate.claim_limit(8) == 3
    gate.note_remaining(0)
    assert gate.claim_limit(8) == 1  # one at least: the shared limiter paces the sends
    gate.note_remaining(50)
    assert gate.claim_limit(8) == 8


@pytest.mark.parametrize(
    ("discovery", "healthy", "stream_up", "factor"),
    [
        ("list", True, False, POLLING.list_poll_factor),
        ("list", True, True, POLLING.list_poll_factor * STREAM_POLL_FACTOR),
        ("list", False, False, 1.0),  # list pages failing: direct polls carry every job
        ("list", False, True, POLLING.list_poll_factor * STREAM_POLL_FACTOR),
        ("poll", False, False, 1.0),
    ],
)
def test_direct_polls_are_rarer_while_discovery_finds_finished_jobs(
    discovery: str, healthy: bool, stream_up: bool, factor: float
) -> None:
    gate = Parts(cfg=cfg_with(**{"polling.discovery": discovery})).gate
    assert gate.discovery_healthy is (discovery == "list")
    gate.discovery_healthy, gate.stream_up = healthy, stream_up
    assert gate.poll_factor() == pytest.approx(factor)


@pytest.mark.parametrize(
    ("discovery", "events", "healthy", "stream_up", "detail"),
    [
        ("list", "sse", True, True, "event stream connected; list reconciles every 300 s"),
        ("list", "sse", True, False, "event stream down; list passes carry discovery"),
        ("list", "sse", False, False, "event stream down; list pages failing: direct polls only"),
        ("list", "off", True, False, "list passes carry discovery"),
        ("poll", "off", False, False, "list discovery off"),
    ],
)
def test_readiness_names_how_finished_jobs_are_found(
    discovery: str, events: str, healthy: bool, stream_up: bool, detail: str
) -> None:
    gate = Parts(cfg=cfg_with(**{"polling.discovery": discovery, "polling.events": events})).gate
    gate.discovery_healthy, gate.stream_up = healthy, stream_up
    assert gate.discovery_detail() == detail
