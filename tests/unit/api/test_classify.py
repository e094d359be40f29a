"""The pure HTTP → outcome mapping of ``harvester.classify``: tables of (status, headers, body) cases."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from email.utils import format_datetime
from uuid import UUID

import pytest

from harvester import logs
from harvester.api import classify
from harvester.api.outcomes import (
    AuthFailed,
    Completed,
    Gone,
    JobPage,
    ListedJob,
    NotFound,
    Outcome,
    Pending,
    RateLimited,
    Transient,
    Unreadable,
)

NOW = 1_760_000_000.0
JOB = "550e8400-e29b-41d4-a716-446655440000"


def body(**fields: object) -> bytes:
    return json.dumps(fields).encode()


def keep(text: str) -> str:
    return text


def classify_result(status: int, headers: dict[str, str], raw: bytes, now: float) -> Outcome:
    return classify.classify_result(status, headers, raw, now, scrub=keep)


def classify_list(
    status: int, headers: dict[str, str], raw: bytes, now: float, *, page: int, page_size: int
) -> JobPage | Outcome:
    return classify.classify_list(status, headers, raw, now, page=page, page_size=page_size, scrub=keep)


@pytest.mark.parametrize(
    ("status", "raw", "kind", "upstream"),
    [
        (200, body(status="completed", job_id=JOB, data={}), Completed, None),
        (200, body(job_id=JOB, data={}), Completed, None),
        (200, b"{not json", Completed, None),
        (200, b"[1, 2]", Completed, None),
        (200, body(status="processing", type="spiderSite"), Pending, "processing"),
        (200, body(status="queued"), Pending, "queued"),
        (200, body(status="running"), Pending, "running"),
        (200, body(status="Thinking"), Pending, "thinking"),
        (200, body(status="Thinking", data=None), Pending, "thinking"),
        (200, body(status="done", job_id=JOB, data={"url": "x"}), Completed, None),
        (200, body(status="processing", data={"partial": True}), Pending, "processing"),
        (200, body(status="queued", data={}), Pending, "queued"),
        (200, body(status="failed", error_message="boom"), Gone, "failed"),
        (200, body(status="canceled"), Gone, "canceled"),
        (202, body(status="processing", type="spiderMaps"), Pending, "processing"),
        (202, body(status="running", progress=40, eta_seconds=12, extra={"a": 1}), Pending, "running"),
        (202, b"", Pending, None),
        (202, b"<html>oops", Pending, None),
        (202, b"Accepted", Pending, None),
        (202, b"[]", Pending, None),
        (410, body(status="cancelled"), Gone, "cancelled"),
        (410, body(status="failed", error_message="x"), Gone, "failed"),
        (410, body(error="x"), Gone, "failed"),
        (410, body(status="weird"), Gone, "failed"),
        (410, body(detail="Job was cancelled"), Gone, "failed"),
        (410, b"truncated {", Gone, "failed"),
        (410, b"", Gone, "failed"),
        (410, b"<html><body>410 Gone</body></html>", Gone, "failed"),
        (404, body(detail="Job not found"), NotFound, None),
        (401, body(detail="bad token"), AuthFailed, None),
        (402, body(detail="monthly cap"), AuthFailed, None),
        (403, b"", AuthFailed, None),
        (429, body(detail="slow down"), RateLimited, None),
        (500, b"", Transient, None),
        (500, body(detail="Internal Server Error"), Transient, None),
        (504, b"<html><body>Gateway Time-out</body></html>", Transient, None),
        (502, b"<html>bad gateway", Transient, None),
        (503, body(detail="x"), Transient, None),
        (301, b"", Transient, None),
        (204, b"", Transient, None),
        (400, body(detail="bad"), Transient, None),
        (405, b"", Transient, None),
        (409, b"", Transient, None),
        (422, body(detail=[{"loc": ["x"]}]), Transient, None),
    ],
)
def test_result_status_mapping(status: int, raw: bytes, kind: type, upstream: str | None) -> None:
    outcome = classify_result(status, {}, raw, NOW)
    assert type(outcome) is kind
    assert outcome.http_status == status
    if isinstance(outcome, Pending | Gone):
        assert outcome.upstream_status == upstream
    if isinstance(outcome, Completed):
        assert outcome.body == raw


@pytest.mark.parametrize("key", ["type", "job_type"])
def test_pending_keeps_job_type(key: str) -> None:
    outcome = classify_result(202, {}, body(status="queued", **{key: "spiderSite"}), NOW)
    assert outcome == Pending(upstream_status="queued", job_type="spiderSite")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (body(status="failed", error_message="Connection timeout after 30s"), "Connection timeout after 30s"),
        (body(status="failed", error="legacy key"), "legacy key"),
        (body(status="failed", error={"message": "nested"}), "nested"),
        (body(status="cancelled", error_message=None), None),
        (body(detail="Job failed: target unreachable"), "Job failed: target unreachable"),
        (body(status="failed", error_message=None, error="fallback"), "fallback"),
    ],
)
def test_gone_reads_error_message(raw: bytes, message: str | None) -> None:
    outcome = classify_result(410, {}, raw, NOW)
    assert isinstance(outcome, Gone)
    assert outcome.error_message == message
    assert outcome.body == raw


@pytest.mark.parametrize(("status", "kind"), [(200, Completed), (410, Gone)])
def test_a_body_for_the_store_travels_parsed(status: int, kind: type) -> None:
    raw = body(status="failed" if status == 410 else "completed", job_id=JOB, data={"n": 1.5})
    outcome = classify_result(status, {}, raw, NOW)
    assert isinstance(outcome, Completed | Gone) and isinstance(outcome, kind)
    assert outcome.body == raw
    assert outcome.doc == json.loads(raw)


@pytest.mark.parametrize(
    ("status", "raw", "reason"),
    [
        (200, b"{not json", "body is not JSON: Expecting property name enclosed in double quotes"),
        (200, b"[1, 2]", "body is a JSON list, not an object"),
        (200, b"\xff{}", "body is not UTF-8 (byte 0)"),
        (200, b"[" * 100_000 + b"]" * 100_000, "body is nested too deeply to parse"),
        (410, b"", "body is not JSON: Expecting value"),
        (410, b"<html>", "body is not JSON: Expecting value"),
    ],
)
def test_an_unreadable_body_travels_with_its_reason(status: int, raw: bytes, reason: str) -> None:
    outcome = classify_result(status, {}, raw, NOW)
    assert isinstance(outcome, Completed | Gone)
    assert outcome.body == raw
    assert isinstance(outcome.doc, Unreadable)
    assert outcome.doc.reason.startswith(reason)


@pytest.mark.parametrize(
    ("doc", "kind", "upstream"),
    [
        ({"status": "completed", "job_id": JOB}, Completed, None),
        ({"job_id": JOB}, Completed, None),
        ({"status": "failed", "error_message": "boom"}, Gone, "failed"),
        ({"status": "Cancelled"}, Gone, "cancelled"),
        ({"status": "canceled"}, Gone, "canceled"),
        ({"status": "processing", "data": {"partial": 1}}, Pending, "processing"),
        ({"status": "queued"}, Pending, "queued"),
        ({"status": "thinking"}, Pending, "thinking"),
        ({"status": "done", "data": {"url": "x"}}, Completed, None),
        (Unreadable("body is not JSON"), Completed, None),
    ],
)
def test_a_body_is_read_by_its_own_status(
    doc: dict[str, object] | Unreadable, kind: type, upstream: str | None
) -> None:
    """What the 200 path and ``harvester import`` share; the HTTP status is only carried."""
    outcome = classify.classify_body(b"raw", doc, http_status=None)
    assert type(outcome) is kind
    assert outcome.http_status is None
    if isinstance(outcome, Pending | Gone):
        assert outcome.upstream_status == upstream
    if isinstance(outcome, Completed | Gone):
        assert (outcome.body, outcome.doc) == (b"raw", doc)


@pytest.mark.parametrize(
    ("headers", "raw", "retry_after", "reset_at"),
    [
        ({"Retry-After": "30"}, b"", 30.0, None),
        ({"Retry-After": "7200"}, b"", 7200.0, None),
        ({"Retry-After": "1.5"}, b"", 1.5, None),
        (
            {"Retry-After": format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)},
            b"",
            90.0,
            None,
        ),
        (
            {"Retry-After": format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)},
            b"",
            0.0,
            None,
        ),
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
def test_rate_limited_headers(
    headers: dict[str, str], raw: bytes, retry_after: float | None, reset_at: float | None
) -> None:
    outcome = classify_result(429, headers, raw, NOW)
    assert isinstance(outcome, RateLimited)
    if retry_after is None:
        assert outcome.retry_after_s is None
    else:
        assert outcome.retry_after_s == pytest.approx(retry_after, abs=1.0)
    assert outcome.reset_at == reset_at


def test_rate_limited_detail_comes_from_body() -> None:
    outcome = classify_result(429, {}, body(detail="Rate limit exceeded"), NOW)
    assert isinstance(outcome, RateLimited)
    assert outcome.detail == "Rate limit exceeded"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1760000060", 1760000060.0),
        (" 1760000060 ", 1760000060.0),
        ("nan", None),
        ("inf", None),
        ("-1", None),
        ("lots", None),
        (None, None),
    ],
)
def test_reset_header_tolerates_junk(value: str | None, expected: float | None) -> None:
    assert classify.parse_reset(value, NOW) == expected


def test_list_page_skips_malformed_entries() -> None:
    raw = body(
        total=4,
        page=1,
        page_size=100,
        total_pages=1,
        jobs=[
            {
                "job_id": JOB,
                "type": "spiderSite",
                "status": "completed",
                "updated_at": "2025-10-27T10:02:45Z",
            },
            {"job_id": "not-a-uuid", "status": "completed"},
            "garbage",
            {"job_id": "660e8400-e29b-41d4-a716-446655440001", "status": None, "updated_at": "bad"},
        ],
    )
    page = classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(page, JobPage)
    assert [str(j.job_id) for j in page.jobs] == [JOB, "660e8400-e29b-41d4-a716-446655440001"]
    assert page.jobs[0].updated_at == datetime(2025, 10, 27, 10, 2, 45, tzinfo=UTC)
    assert page.jobs[1] == ListedJob(UUID("660e8400-e29b-41d4-a716-446655440001"), None, None, None)
    assert page.skipped == 2
    assert (page.total, page.page, page.page_size, page.total_pages) == (4, 1, 100, 1)


def test_list_page_derives_total_pages() -> None:
    raw = body(total=1234, page=2, page_size=50, jobs=[])
    page = classify_list(200, {}, raw, NOW, page=2, page_size=50)
    assert isinstance(page, JobPage)
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
def test_list_page_counts_when_some_are_missing(
    fields: dict[str, object], page_no: int, expected: tuple[int, int]
) -> None:
    raw = body(**fields, jobs=listed(50))
    page = classify_list(200, {}, raw, NOW, page=page_no, page_size=50)
    assert isinstance(page, JobPage)
    assert (page.total, page.total_pages) == expected


def test_list_page_short_page_without_counts_is_the_last() -> None:
    page = classify_list(200, {}, body(jobs=listed(7)), NOW, page=2, page_size=50)
    assert isinstance(page, JobPage)
    assert (page.total, page.total_pages) == (57, 2)


@pytest.mark.parametrize("key", ["jobs", "items", "data", "results"])
def test_list_page_reads_the_array_under_its_usual_names(key: str) -> None:
    raw = body(total=1, page=1, page_size=100, total_pages=1, **{key: listed(1)})
    page = classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(page, JobPage)
    assert [j.job_id for j in page.jobs] == [UUID(int=1)]


def test_list_entry_field_name_variants() -> None:
    raw = body(
        jobs=[
            {
                "id": JOB,
                "job_type": "spiderMaps",
                "status": "Completed",
                "completed_at": "2025-10-27T10:02:45.5+00:00",
            },
            {
                "job_id": str(UUID(int=2)),
                "id": "ignored",
                "type": "spiderSite",
                "status": "running",
                "updated_at": "2025-10-27T10:03:00",
                "completed_at": "2020-01-01T00:00:00Z",
            },
        ]
    )
    page = classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(page, JobPage)
    assert page.jobs == (
        ListedJob(
            UUID(JOB), "spiderMaps", "completed", datetime(2025, 10, 27, 10, 2, 45, 500000, tzinfo=UTC)
        ),
        ListedJob(UUID(int=2), "spiderSite", "running", datetime(2025, 10, 27, 10, 3, tzinfo=UTC)),
    )


@pytest.mark.parametrize("raw", [b"{", b"[]", body(total=1), body(jobs="x")])
def test_malformed_list_is_transient(raw: bytes) -> None:
    outcome = classify_list(200, {}, raw, NOW, page=1, page_size=100)
    assert isinstance(outcome, Transient)


@pytest.mark.parametrize(("status", "kind"), [(401, AuthFailed), (429, RateLimited)])
def test_details_pass_through_the_given_scrubber(status: int, kind: type) -> None:
    raw = body(detail="token sk_supersecret refused")
    outcome = classify.classify_result(
        status, {}, raw, NOW, scrub=lambda text: text.replace("sk_supersecret", "***")
    )
    assert isinstance(outcome, AuthFailed | RateLimited) and isinstance(outcome, kind)
    assert outcome.detail == "token *** refused"


def test_a_text_detail_passes_through_the_scrubber_too() -> None:
    outcome = classify.classify_result(
        403, {}, b"no sk_supersecret here", NOW, scrub=lambda text: text.replace("sk_supersecret", "***")
    )
    assert isinstance(outcome, AuthFailed)
    assert outcome.detail == "no *** here"


def test_classification_reads_no_global_secret_set() -> None:
    """Only the scrubber passed in cleans a detail: the registered secrets are the client's job."""
    logs.register_secret("cli_abcdef:sk_globalsecret:secret_hushhush")
    raw = body(detail="token sk_globalsecret refused")
    outcome = classify_result(401, {}, raw, NOW)
    assert isinstance(outcome, AuthFailed)
    assert outcome.detail == "token sk_globalsecret refused"
