"""Reading a stream event's data: what is unreadable reads as absent, never as an error."""

from __future__ import annotations

from datetime import UTC, datetime
from uuid import uuid4

import pytest

from harvester.api.event_bodies import event_time, job_fields, parse_body


def test_a_job_event_names_its_job_and_its_type() -> None:
    job_id = uuid4()
    body = parse_body(f'{{"job_id": "{job_id}", "type": "spiderMaps", "created_at": "2026-12-01T12:00:00Z"}}')
    assert job_fields(body) == (job_id, "spiderMaps")
    assert event_time(body) == datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


def test_campaign_events_spell_the_job_jobid() -> None:
    job_id = uuid4()
    assert job_fields(parse_body(f'{{"jobId": "{job_id}", "job_type": "spiderSite"}}')) == (
        job_id,
        "spiderSite",
    )


@pytest.mark.parametrize(
    "data",
    ["", "not json", "[1, 2]", '"a string"', "null", '{"job_id": "not-a-uuid"}', '{"job_id": 42, "type": 7}'],
)
def test_unreadable_data_reads_as_no_job(data: str) -> None:
    assert job_fields(parse_body(data)) == (None, None)


def test_the_time_is_the_first_readable_of_timestamp_started_at_created_at() -> None:
    body = parse_body('{"timestamp": "garbage", "started_at": "2026-12-01T12:00:05Z", "created_at": "x"}')
    assert event_time(body) == datetime(2026, 12, 1, 12, 0, 5, tzinfo=UTC)
    assert event_time(parse_body('{"message": "hello"}')) is None
