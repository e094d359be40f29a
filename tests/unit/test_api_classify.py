"""The pure HTTP → outcome mapping of ``harvester.api``: tables of (status, headers, body) cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from uuid import UUID

import pytest

from harvester import api, logs
from harvester.errors import ConfigError

NOW = 1_760_000_000.0
JOB = "550e8400-e29b-41d4-a716-446655440000"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


@pytest.mark.parametrize(
    ("status", "raw", "kind", "upstream"),
    [
        (200, body(status="completed", job_id=JOB, data={}), api.Completed, None),
        (200, body(job_id=JOB, data={}), api.Completed, None),
        (200, b"{not json", api.Completed, None),
        (200, b"[1, 2]", api.Completed, None),
        (200, body(status="processing", type="spiderSite"), api.Pending, "processing"),
        (200, body(status="queued"), api.Pending, "queued"),
        (200, body(status="running"), api.Pending, "running"),
        (200, body(status="Thinking"), api.Pending, "thinking"),
        (200, body(status="Thinking", data=None), api.Pending, "thinking"),
        (200, body(status="done", job_id=JOB, data={"url": "x"}), api.Completed, None),
        (200, body(status="processing", data={"partial": True}), api.Pending, "processing"),
        (200, body(status="queued", data={}), api.Pending, "queued"),
        (200, body(status="failed", error_message="boom"), api.Gone, "failed"),
        (200, body(status="canceled"), api.Gone, "canceled"),
        (202, body(status="processing", type="spiderMaps"), api.Pending, "processing"),
        (202, body(status="running", progress=40, eta_seconds=12, extra={"a": 1}), api.Pending,
         "running"),
        (202, b"", api.Pending, None),
        (202, b"<html>oops", api.Pending, None),
        (202, b"Accepted", api.Pending, None),
        (202, b"[]", api.Pending, None),
        (410, body(status="cancelled"), api.Gone, "cancelled"),
        (410, body(status="failed", error_message="x"), api.Gone, "failed"),
        (410, body(error="x"), api.Gone, "failed"),
        (410, body(status="weird"), api.Gone, "failed"),
        (410, body(detail="Job was cancelled"), api.Gone, "failed"),
        (410, b"truncated {", api.Gone, "failed"),
        (410, b"", api.Gone, "failed"),
        (410, b"<html><body>410 Gone</body></html>", api.Gone, "failed"),
        (404, body(detail="Job not found"), api.NotFound, None),
        (401, body(detail="bad token"), api.AuthFailed, None),
        (402, body(detail="monthly cap"), api.AuthFailed, None),
        (403, b"", api.AuthFailed, None),
        (429, body(detail="slow down"), api.RateLimited, None),
        (500, b"", api.Transient, None),
        (500, body(detail="Internal Server Error"), api.Transient, None),
        (504, b"<html><body>Gateway Time-out</body></html>", api.Transient, None),
        (502, b"<html>bad gateway", api.Transient, None),
        (503, body(detail="x"), api.Transient, None),
        (301, b"", api.Transient, None),
        (204, b"", api.Transient, None),
        (400, body(detail="bad"), api.Transient, None),
        (405, b"", api.Transient, None),
        (409, b"", api.Transient, None),
        (422, body(detail=[{"loc": ["x"]}]), api.Transient, None),
    ],
)
def test_result_status_mapping(status: int, raw: bytes, kind: type, upstream: str | None) -> None:
    outcome = api.classify_result(status, {}, raw, NOW)
    assert type(outcome) is kind
    assert outcome.http_status == status
    if isinstance(outcome, api.Pending | api.Gone):
        assert outcome.upstream_status == upstream
    if isinstance(outcome, api.Completed):
        assert outcome.body == raw


@pytest.mark.parametrize("key", ["type", "job_type"])
def test_pending_keeps_job_type(key: str) -> None:
    outcome = api.classify_result(202, {}, body(status="queued", **{key: "spiderSite"}), NOW)
    assert outcome == api.Pending(upstream_status="queued", job_type="spiderSite")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (body(status="failed", error_message="Connection timeout after 30s"),
         "Connection timeout after 30s"),
        (body(status="failed", error="legacy key"), "legacy key"),
        (body(status="failed", error={"message": "nested"}), "nested"),
        (body(status="cancelled", error_message=None), None),
        (body(detail="Job failed: target unreachable"), "Job failed: target unreachable"),
        (body(status="failed", error_message=None, error="fallback"), "fallback"),
    ],
)
def test_gone_reads_error_message(raw: bytes, message: str | None) -> None:
    outcome = api.classify_result(410, {}, raw, NOW)
    assert isinstance(outcome, api.Gone)
    assert outcome.error_message == message
    assert outcome.body == raw


@pytest.mark.parametrize(
    ("headers", "raw", "retry_after", "reset_at"),
    [
        ({"Retry-After": "30"}, b"", 30.0, None),
        ({"Retry-After": "7200"}, b"", 7200.0, None),
        ({"Retry-After": "1.5"}, b"", 1.5, None),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)},
         b"", 90.0, None),
        ({"Retry-After": format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)},
         b"", 0.0, None),
        ({"Retry-After": "soon"}, b"", None, None),
        ({"Retry-After": "-5"}, b"", None, None),
        ({"X-RateLimit-Reset": str(int(NOW + 40))}, b"", None, NOW + 40),
        ({"X-RateLimit-Reset": "40"}, b"", None, NOW + 40),
        ({"X-RateLimit-Reset": str(int(NOW + 40) * 1000)}, b"", None, NOW + 40),
        ({"X-RateLimit-Reset": "junk"}, b"", None, None),
        ({}, body(retry_after_seconds=12, reason_code="bulk_estimated_spend_exceeded"), 12.0, None),
        ({"Retry-After": "5"}, body(retry_after_seconds=12), 5.0, None),
        ({}, body(retry_after_seconds="x"), None, None),
        ({}, b"", None, None),
    ],
)
def test_rate_limited_headers(headers: dict[str, str], raw: bytes, retry_after: float | None,
                              reset_at: float | None) -> None:
    outcome = api.classify_result(429, headers, raw, NOW)
    assert isinstance(outcome, api.RateLimited)
    if retry_after is None:
        assert outcome.retry_after_s is None
    else:
        assert outcome.retry_after_s == pytest.approx(retry_after, abs=1.0)
    assert outcome.reset_at == reset_at


def test_rate_limited_detail_comes_from_body() -> None:
    outcome = api.classify_result(429, {}, body(detail="Rate limit exceeded"), NOW)
    assert isinstance(outcome, api.RateLimited)
    assert outcome.detail == "Rate limit exceeded"


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-RateLimit-Limit": "100", "X-RateLimit-Remaining": "7",
          "X-RateLimit-Reset": "1760000060"}, api.RateInfo(100, 7, 1760000060.0)),
        ({"X-RateLimit-Limit": "lots", "X-RateLimit-Remaining": "-1",
          "X-RateLimit-Reset": "nan"}, api.RateInfo(None, None, None)),
        ({}, api.RateInfo(None, None, None)),
    ],
)
def test_rate_info_tolerates_junk(headers: dict[str, str], expected: api.RateInfo) -> None:
    assert api.parse_rate(headers, NOW) == expected
    assert api.classify_result(202, headers, b"", NOW).rate == expected


def test_status_endpoint() -> None:
    raw = body(success=True, job_id=JOB, type="spiderSite", status="Processing",
               updated_at="2025-10-27T10:02:45")
    outcome = api.classify_status(200, {}, raw, NOW)
    assert outcome == api.JobStatus(UUID(JOB), "spiderSite", "processing",
                                    datetime(2025, 10, 27, 10, 2, 45, tzinfo=UTC))
    assert isinstance(api.classify_status(200, {}, b"nope", NOW), api.Transient)
    assert isinstance(api.classify_status(404, {}, b"", NOW), api.NotFound)


def test_list_page_skips_malformed_entries() -> None:
    raw = body(total=4, page=1, page_size=100, total_pages=1, jobs=[
        {"job_id": JOB, "type": "spiderSite", "status": "completed",
         "updated_at": "2025-10-27T10:02:45Z"},
        {"job_id": "not-a-uuid", "status": "completed"},
        "garbage",
        {"job_id": "660e8400-e29b-41d4-a716-446655440001", "status": None, "updated_at": "bad"},
    ])
    page = api.classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(page, api.JobPage)
    assert [str(j.job_id) for j in page.jobs] == [JOB, "660e8400-e29b-41d4-a716-446655440001"]
    assert page.jobs[0].updated_at == datetime(2025, 10, 27, 10, 2, 45, tzinfo=UTC)
    assert page.jobs[1] == api.ListedJob(UUID("660e8400-e29b-41d4-a716-446655440001"),
                                         None, None, None)
    assert page.skipped == 2
    assert (page.total, page.page, page.page_size, page.total_pages) == (4, 1, 100, 1)


def test_list_page_derives_total_pages() -> None:
    raw = body(total=1234, page=2, page_size=50, jobs=[])
    page = api.classify_list(200, {}, raw, NOW, page=2, page_size=50)
    assert isinstance(page, api.JobPage)
    assert page.total_pages == 25


def listed(n: int, **fields: object) -> list[dict[str, object]]:
    return [{"job_id": str(UUID(int=i + 1)), "status": "completed", **fields} for i in range(n)]


@pytest.mark.parametrize(
    ("fields", "page_no", "expected"),
    [
        ({"total": "120", "page_size": "50", "total_pages": "3"}, 1, (120, 3)),
        ({"total": 120, "page_size": 50}, 1, (120, 3)),
        ({"page_size": 50}, 1, (50, 2)),  # a full page and no counts: look at one more
        ({}, 2, (100, 3)),
        ({"page": 3}, 3, (150, 4)),
    ],
)
def test_list_page_counts_when_some_are_missing(fields: dict[str, object], page_no: int,
                                                expected: tuple[int, int]) -> None:
    raw = body(**fields, jobs=listed(50))
    page = api.classify_list(200, {}, raw, NOW, page=page_no, page_size=50)
    assert isinstance(page, api.JobPage)
    assert (page.total, page.total_pages) == expected


def test_list_page_short_page_without_counts_is_the_last() -> None:
    page = api.classify_list(200, {}, body(jobs=listed(7)), NOW, page=2, page_size=50)
    assert isinstance(page, api.JobPage)
    assert (page.total, page.total_pages) == (57, 2)


@pytest.mark.parametrize("key", ["jobs", "items", "data", "results"])
def test_list_page_reads_the_array_under_its_usual_names(key: str) -> None:
    raw = body(total=1, page=1, page_size=100, total_pages=1, **{key: listed(1)})
    page = api.classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(page, api.JobPage)
    assert [j.job_id for j in page.jobs] == [UUID(int=1)]


def test_list_entry_field_name_variants() -> None:
    raw = body(jobs=[
        {"id": JOB, "job_type": "spiderMaps", "status": "Completed",
         "completed_at": "2025-10-27T10:02:45.5+00:00"},
        {"job_id": str(UUID(int=2)), "id": "ignored", "type": "spiderSite", "status": "running",
         "updated_at": "2025-10-27T10:03:00", "completed_at": "2020-01-01T00:00:00Z"},
    ])
    page = api.classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(page, api.JobPage)
    assert page.jobs == (
        api.ListedJob(UUID(JOB), "spiderMaps", "completed",
                      datetime(2025, 10, 27, 10, 2, 45, 500000, tzinfo=UTC)),
        api.ListedJob(UUID(int=2), "spiderSite", "running",
                      datetime(2025, 10, 27, 10, 3, tzinfo=UTC)),
    )


@pytest.mark.parametrize("raw", [b"{", b"[]", body(total=1), body(jobs="x")])
def test_malformed_list_is_transient(raw: bytes) -> None:
    outcome = api.classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(outcome, api.Transient)


def test_details_are_scrubbed() -> None:
    logs.register_secret("cli_abcdef:sk_supersecret:secret_hushhush")
    raw = body(detail="token sk_supersecret refused")
    outcome = api.classify_result(401, {}, raw, NOW)
    assert isinstance(outcome, api.AuthFailed)
    assert "sk_supersecret" not in outcome.detail


@pytest.mark.parametrize("url", ["http://spideriq.ai", "ftp://localhost", "localhost:8080"])
def test_refuses_insecure_or_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        api.SpiderIQ(url, "a:b:c", connect_timeout_s=1, read_timeout_s=1, total_timeout_s=1)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9",
                                 "https://spideriq.ai"])
def test_accepts_loopback_http_and_https(url: str) -> None:
    client = api.SpiderIQ(url, "a:b:c", connect_timeout_s=1, read_timeout_s=1, total_timeout_s=1)
    assert "a:b:c" not in repr(client)


def test_insecure_allowed_when_asked() -> None:
    api.SpiderIQ("http://spideriq.ai", "t", connect_timeout_s=1, read_timeout_s=1,
                 total_timeout_s=1, allow_insecure=True)
