"""HTTP answers → outcomes: SPEC section 4 as pure functions over (status, headers, body, now).

This module owns what a status code, a header and a body mean: ``classify_result`` for
``/jobs/{id}/results``, ``classify_list`` for ``/jobs/list``, ``classify_body`` for a finished
body read by its own ``status`` (the 200 path and ``harvester import`` share it), and the parsing
of ``Retry-After`` and ``X-RateLimit-Reset``. A body is decoded once, here (``read_body``), and the
parsed object travels on in the outcome to the store. Details taken from error bodies pass through
the ``scrub`` the caller gives, so no token reaches a reason. No I/O, no globals, no clock.
"""

from __future__ import annotations

import email.utils
import json
import math
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from harvester import normalize
from harvester.api.outcomes import (
    GONE_UPSTREAM,
    PENDING_UPSTREAM,
    AuthFailed,
    Completed,
    Document,
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
from harvester.errors import BodyError

Scrub = Callable[[str], str]

DETAIL_MAX = 300
# A unix time in seconds passes 1e11 only in the year 5138: such a reset is in milliseconds, and
# read as seconds it would pause polling for millennia.
MILLIS_EPOCH = 100_000_000_000
# The documented key is ``jobs``; the others are the usual names of a page's array, read only
# when ``jobs`` is absent.
LIST_KEYS = ("jobs", "items", "data", "results")


# ---------------------------------------------------------------- headers and values


def _float_or_none(value: str | None) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


def remaining(headers: Mapping[str, str]) -> int | None:
    """``X-RateLimit-Remaining``: how many requests the server will still take now; None if absent
    or not a count."""
    value = (headers.get("X-RateLimit-Remaining") or "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


def parse_reset(value: str | None, now_unix: float) -> float | None:
    """``X-RateLimit-Reset`` as a unix time.

    The docs say a unix timestamp; small values are read as seconds from now (delta style) and
    huge ones as milliseconds, so no reading of the header can stall the limiter for years.
    """
    number = _float_or_none(value)
    if number is None:
        return None
    if number >= MILLIS_EPOCH:
        return number / 1000.0
    return now_unix + number if number < 1_000_000_000 else number


def parse_retry_after(value: str | None, now_unix: float) -> float | None:
    """``Retry-After`` as seconds to wait: delta-seconds or an HTTP-date; junk is ``None``."""
    if value is None or not value.strip():
        return None
    seconds = _float_or_none(value)
    if seconds is not None:
        return seconds
    try:
        when = email.utils.parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now_unix)


def parse_time(value: Any) -> datetime | None:
    """An ISO-8601 timestamp; one without an offset is UTC (a documented variant)."""
    if not isinstance(value, str) or not value:
        return None
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def read_body(body: bytes) -> Document:
    """The body's JSON object as the store reads it, or ``Unreadable`` with the reason.

    A body nested thousands deep is simply unreadable (``normalize.decode`` turns the
    RecursionError into the reason), never an error of the request: the store keeps it as a reject.
    """
    try:
        return normalize.decode(body)
    except BodyError as exc:
        return Unreadable(str(exc))


def _object(doc: Document) -> dict[str, Any]:
    return doc if isinstance(doc, dict) else {}


def _status(obj: dict[str, Any]) -> str | None:
    value = obj.get("status")
    return value.strip().lower() or None if isinstance(value, str) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _job_type(obj: dict[str, Any]) -> str | None:
    """The documented ``type``, or ``job_type`` (the name the submit and error docs use)."""
    return _str_or_none(obj.get("type")) or _str_or_none(obj.get("job_type"))


def _detail(body: bytes, doc: Document, scrub: Scrub) -> str:
    """A short human message from an error body: ``detail``/``message``/``reason_*`` or the text."""
    if isinstance(doc, dict):
        for key in ("detail", "message", "reason_human", "reason_code", "error"):
            value = doc.get(key)
            if isinstance(value, str) and value:
                return scrub(value[:DETAIL_MAX])
            if value is not None and not isinstance(value, str | bool | int | float):
                return scrub(json.dumps(value)[:DETAIL_MAX])
    return scrub(body[:DETAIL_MAX].decode("utf-8", "replace").strip())


def _error_message(obj: dict[str, Any]) -> str | None:
    """``error_message`` as documented, else ``error`` (what the seed doc's own example code
    reads on a 410), else the FastAPI ``detail``."""
    for key in ("error_message", "error", "detail"):
        value = obj.get(key)
        if isinstance(value, str) and value:
            return value
        if isinstance(value, dict):
            inner = value.get("message")
            if isinstance(inner, str) and inner:
                return inner
    return None


# ---------------------------------------------------------------- outcomes


def classify_error(
    status: int, headers: Mapping[str, str], body: bytes, now_unix: float, *, scrub: Scrub
) -> Outcome:
    """Statuses that mean the same on every endpoint: 404, 401/402/403, 429, 5xx and the rest."""
    if status == 404:
        return NotFound(http_status=status)
    if status in (401, 402, 403):
        detail = _detail(body, read_body(body), scrub)
        return AuthFailed(detail=detail or f"http {status}", http_status=status)
    if status == 429:
        doc = read_body(body)
        retry_after = parse_retry_after(headers.get("Retry-After"), now_unix)
        if retry_after is None:
            obj = _object(doc)
            value = obj.get("retry_after_seconds", obj.get("retry_after"))
            if isinstance(value, int | float) and not isinstance(value, bool):
                retry_after = _float_or_none(str(value))
        return RateLimited(
            retry_after_s=retry_after,
            reset_at=parse_reset(headers.get("X-RateLimit-Reset"), now_unix),
            detail=_detail(body, doc, scrub) or "rate limited",
            http_status=status,
        )
    if status >= 500:
        return Transient(reason=f"server error http {status}", http_status=status)
    return Transient(reason=f"unexpected http {status}", http_status=status)


def classify_body(body: bytes, doc: Document, http_status: int | None = 200) -> Completed | Pending | Gone:
    """A result body read by its own ``status``: completed, failed/cancelled, or unfinished.

    A body that is not a readable object is completed: the store keeps it as a reject. A status
    nobody documented is read by the body: with ``data`` it is a finished job (HTTP 200 is
    documented as "completed; data present"), without it the job is still running. Polling a
    finished job forever would lose it; harvesting an empty one would lose its data.
    """
    if isinstance(doc, Unreadable):
        return Completed(body=body, doc=doc, http_status=http_status)
    upstream = _status(doc)
    if upstream is None or upstream == "completed":
        return Completed(body=body, doc=doc, http_status=http_status)
    if upstream in GONE_UPSTREAM:
        return Gone(
            body=body,
            doc=doc,
            upstream_status=upstream,
            error_message=_error_message(doc),
            http_status=http_status,
        )
    if upstream not in PENDING_UPSTREAM and doc.get("data") is not None:
        return Completed(body=body, doc=doc, http_status=http_status)
    return Pending(upstream_status=upstream, job_type=_job_type(doc), http_status=http_status)


def classify_result(
    status: int, headers: Mapping[str, str], body: bytes, now_unix: float, *, scrub: Scrub
) -> Outcome:
    """``GET /jobs/{id}/results``: SPEC section 4 as a function.

    The HTTP code leads and the body's ``status`` refines it (API.md section 9.15): a 202 is
    pending and a 410 is gone whatever their bodies hold, since neither body is documented in
    full; a 200 is pending or gone only when its status says so.
    """
    if status == 200:
        return classify_body(body, read_body(body), status)
    if status == 202:
        obj = _object(read_body(body))
        return Pending(upstream_status=_status(obj), job_type=_job_type(obj), http_status=status)
    if status == 410:
        doc = read_body(body)
        obj = _object(doc)
        upstream = _status(obj)
        return Gone(
            body=body,
            doc=doc,
            upstream_status=upstream if upstream in GONE_UPSTREAM else "failed",
            error_message=_error_message(obj),
            http_status=status,
        )
    return classify_error(status, headers, body, now_unix, scrub=scrub)


# ---------------------------------------------------------------- job lists


def _uuid(value: Any) -> UUID | None:
    if not isinstance(value, str):
        return None
    try:
        return UUID(value)
    except ValueError:
        return None


def _count(value: Any) -> int | None:
    """A non-negative count: a JSON integer, or the same written as a string."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def _entries(obj: dict[str, Any]) -> list[Any] | None:
    for key in LIST_KEYS:
        value = obj.get(key)
        if isinstance(value, list):
            return value
    return None


def _listed(entry: Any) -> ListedJob | None:
    """One list entry, or None when it names no job id."""
    if not isinstance(entry, dict):
        return None
    job_id = _uuid(entry.get("job_id")) or _uuid(entry.get("id"))
    if job_id is None:
        return None
    updated = parse_time(entry.get("updated_at")) or parse_time(entry.get("completed_at"))
    return ListedJob(
        job_id=job_id,
        job_type=_job_type(entry),
        status=_status(entry),
        updated_at=updated,
        created_at=parse_time(entry.get("created_at")),
    )


def _total_pages(obj: dict[str, Any], page: int, size: int, entries: int) -> tuple[int, int]:
    """``(total, total_pages)``; the intro docs' pagination leaves ``total_pages`` out.

    Without ``total`` either, a full page means there may be more: one further page is assumed,
    so a list pass never stops early just because the counts were not sent.
    """
    total = _count(obj.get("total"))
    pages = _count(obj.get("total_pages"))
    if total is None:
        total = (page - 1) * size + entries
        if pages is None:
            pages = page + 1 if size and entries >= size else page
    if pages is None:
        pages = math.ceil(total / size) if size else 0
    return total, pages


def classify_list(
    status: int,
    headers: Mapping[str, str],
    body: bytes,
    now_unix: float,
    *,
    page: int,
    page_size: int,
    scrub: Scrub,
) -> JobPage | Outcome:
    """``GET /jobs/list``: a page of jobs; malformed entries are skipped, not fatal."""
    if status != 200:
        return classify_error(status, headers, body, now_unix, scrub=scrub)
    doc = read_body(body)
    entries = _entries(doc) if isinstance(doc, dict) else None
    if not isinstance(doc, dict) or entries is None:
        return Transient(reason="malformed json on list", http_status=status)
    jobs = [job for job in map(_listed, entries) if job is not None]
    size = _count(doc.get("page_size")) or page_size
    total, pages = _total_pages(doc, page, size, len(entries))
    return JobPage(
        total=total,
        page=_count(doc.get("page")) or page,
        page_size=size,
        total_pages=pages,
        jobs=tuple(jobs),
        skipped=len(entries) - len(jobs),
        http_status=status,
    )
