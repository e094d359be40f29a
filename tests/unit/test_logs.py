"""Log output: one JSON object per line, from our events and from libraries, secrets redacted."""

from __future__ import annotations

import io
import itertools
import json
import logging
from collections.abc import Iterator

import pytest

from harvester import logs

TOKEN = "cli_logtest:sk_logkey_0123456789:secret_logsecret_abcdef"


@pytest.fixture
def output() -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.register_secret(TOKEN)
    logs.setup("json", "info", stream=stream)
    yield stream


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_our_events_are_json_with_the_token_redacted(output: io.StringIO) -> None:
    logs.get("harvester.test").warning("api_auth_failed", detail=f"Bearer {TOKEN}", job_id="j1")
    [event] = lines(output)
    assert event["event"] == "api_auth_failed" and event["level"] == "warning"
    assert event["job_id"] == "j1" and "***" in str(event["detail"])
    assert TOKEN.split(":")[2] not in output.getvalue()


def test_library_records_become_redacted_json_lines(output: io.StringIO) -> None:
    try:
        raise ConnectionError(f"lost connection while sending {TOKEN}")
    except ConnectionError:
        logging.getLogger("asyncpg.pool").exception("Failed to restore the pool connection floor")
    [event] = lines(output)
    assert event["logger"] == "asyncpg.pool" and event["level"] == "error"
    assert "ConnectionError" in str(event["exception"])
    for part in TOKEN.split(":"):
        assert part not in output.getvalue()


def test_library_debug_chatter_is_not_published(output: io.StringIO) -> None:
    logging.getLogger("aiohttp.client").info("connection pool stats")
    assert output.getvalue() == ""


def test_setting_up_twice_keeps_one_handler(output: io.StringIO) -> None:
    logs.setup("json", "info", stream=output)
    logging.getLogger("asyncpg").warning("once")
    assert len(lines(output)) == 1


# ---------------------------------------------------------------- repeats


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limited(clock: FakeClock) -> Iterator[io.StringIO]:
    stream = io.StringIO()
    logs.register_secret(TOKEN)
    logs.setup("json", "info", stream=stream, clock=clock)
    yield stream


def outage(clock: FakeClock, seconds: float, every_s: float, *events: str) -> None:
    log = logs.get("harvester.daemon.worker")
    for tick in range(int(seconds / every_s)):
        clock.now = tick * every_s
        for event in events:
            log.warning(event, error=f"connection refused (attempt {tick})", retry_in_s=0.5)


def test_an_hour_of_outage_at_two_warnings_a_second_is_tens_of_lines(
    limited: io.StringIO, clock: FakeClock
) -> None:
    outage(clock, 3600, 0.5, "db_unavailable")
    written = lines(limited)
    assert 10 <= len(written) <= 20, len(written)  # 7,200 warnings
    assert written[0]["event"] == "db_unavailable" and "suppressed" not in written[0]
    assert (
        sum(1 + int(str(e.get("suppressed", 0))) for e in written)
        + sum(n for _, n in logs._limiter.held_back())
        == 7200
    )


def test_the_line_after_a_window_counts_what_was_held_back(limited: io.StringIO, clock: FakeClock) -> None:
    outage(clock, 61, 0.5, "db_unavailable")
    first, second = lines(limited)
    assert "suppressed" not in first
    assert second["suppressed"] == 119 and second["error"] == "connection refused (attempt 120)"


def test_the_window_doubles_while_repeats_go_on_up_to_a_cap() -> None:
    clock = FakeClock()
    limiter = logs.RepeatLimiter(window_s=60, max_window_s=300, clock=clock)
    written = []
    for second in range(3600):
        clock.now = float(second)
        if limiter.check("k") is not None:
            written.append(second)
    assert written[:6] == [0, 60, 180, 420, 720, 1020]
    assert all(b - a == 300 for a, b in itertools.pairwise(written[4:]))


def test_a_warning_after_a_quiet_window_is_written_at_once() -> None:
    clock = FakeClock()
    limiter = logs.RepeatLimiter(window_s=60, clock=clock)
    assert limiter.check("k") == 0
    clock.now = 10
    assert limiter.check("k") is None
    clock.now = 200
    assert limiter.check("k") == 1  # written, with the one held back before the quiet spell
    clock.now = 201
    assert limiter.check("k") is None  # and the window starts again at 60 s
    clock.now = 262
    assert limiter.check("k") == 1


def test_different_events_and_different_jobs_are_not_repeats(limited: io.StringIO, clock: FakeClock) -> None:
    log = logs.get()
    log.warning("db_unavailable", error="a")
    log.warning("heartbeat_failed", error="a")
    log.warning("job_lease_lost", job_id="j1")
    log.warning("job_lease_lost", job_id="j2")
    log.error("db_unavailable", error="a")  # another level
    log.warning("db_unavailable", error="b")  # the same warning with another error text
    assert [(e["event"], e.get("job_id")) for e in lines(limited)] == [
        ("db_unavailable", None),
        ("heartbeat_failed", None),
        ("job_lease_lost", "j1"),
        ("job_lease_lost", "j2"),
        ("db_unavailable", None),
    ]


def test_info_lines_are_never_held_back(limited: io.StringIO, clock: FakeClock) -> None:
    log = logs.get()
    for i in range(500):
        clock.now = i * 0.01
        log.info("job_harvested", job_id="same")
    assert len(lines(limited)) == 500


def test_held_back_repeats_are_still_redacted_when_written(limited: io.StringIO, clock: FakeClock) -> None:
    log = logs.get()
    for i in range(200):
        clock.now = float(i)
        log.warning("api_auth_failed", detail=f"Bearer {TOKEN}")
    assert len(lines(limited)) > 1
    for part in TOKEN.split(":"):
        assert part not in limited.getvalue()


def test_library_records_are_rate_limited_too(limited: io.StringIO, clock: FakeClock) -> None:
    for i in range(240):
        clock.now = i * 0.5
        logging.getLogger("asyncpg.pool").warning("connection lost to %s", "db")
    written = lines(limited)
    assert len(written) == 2 and written[1]["suppressed"] == 119


def test_at_exit_the_last_held_back_repeats_are_counted(limited: io.StringIO, clock: FakeClock) -> None:
    outage(clock, 10, 0.5, "db_unavailable")
    logs.flush_repeats()
    _, last = lines(limited)
    assert last["event"] == "db_unavailable" and last["suppressed"] == 19
    assert last["level"] == "warning"
    logs.flush_repeats()
    assert len(lines(limited)) == 2


def test_a_warning_repeating_once_a_window_is_held_back_too() -> None:
    """Housekeeping fails once a minute during an outage: that is a repeat, not a fresh warning."""
    clock = FakeClock()
    limiter = logs.RepeatLimiter(window_s=60, max_window_s=300, clock=clock)
    written = []
    for minute in range(60):
        clock.now = minute * 60.0
        if limiter.check("housekeeping_failed") is not None:
            written.append(minute)
    assert written[:4] == [0, 1, 3, 7] and len(written) <= 15
