"""Log output: one JSON object per line, from our events and from libraries, secrets redacted."""

from __future__ import annotations

import io
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
