"""The SpiderIQ client: one aiohttp session, HTTP responses mapped to typed outcomes.

This module owns the wire: URLs, the Bearer header, explicit timeouts, reading every body in full,
and turning each status code, header and transport failure into one of a few frozen outcome values
(``Completed``, ``Pending``, ``Gone``, ``NotFound``, ``AuthFailed``, ``RateLimited``, ``Transient``)
or a parsed ``JobStatus`` / ``JobPage``. The mapping itself is a set of pure functions over
(status, headers, body) so it is tested with tables of cases; ``SpiderIQ`` only does the I/O. It
never touches the database and never lets the token into a reason, detail or repr.
"""

from __future__ import annotations

import dataclasses
import email.utils
import ipaddress
import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit
from uuid import UUID

import aiohttp

from harvester import logs
from harvester.config import ApiConfig
from harvester.errors import ConfigError

PENDING_STATUSES = frozenset({"queued", "processing", "running", "pending"})
GONE_STATUSES = frozenset({"failed", "cancelled", "canceled"})
DETAIL_MAX = 300


@dataclass(frozen=True, slots=True)
class RateInfo:
    """The ``X-RateLimit-*`` headers of one response; junk or absent values are ``None``."""

    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None  # unix timestamp


NO_RATE = RateInfo()


@dataclass(frozen=True, slots=True)
class Completed:
    body: bytes = field(repr=False)
    http_status: int | None = 200
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class Pending:
    upstream_status: str | None = None
    job_type: str | None = None
    http_status: int | None = 202
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class Gone:
    body: bytes = field(repr=False)
    upstream_status: str = "failed"
    error_message: str | None = None
    http_status: int | None = 410
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class NotFound:
    http_status: int | None = 404
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class AuthFailed:
    detail: str = ""
    http_status: int | None = 401
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class RateLimited:
    retry_after_s: float | None = None
    reset_at: float | None = None
    detail: str = ""
    http_status: int | None = 429
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class Transient:
    reason: str = ""
    http_status: int | None = None
    rate: RateInfo = NO_RATE


Outcome = Completed | Pending | Gone | NotFound | AuthFailed | RateLimited | Transient


@dataclass(frozen=True, slots=True)
class JobStatus:
    job_id: UUID
    job_type: str | None
    status: str | None
    updated_at: datetime | None
    http_status: int | None = 200
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class ListedJob:
    job_id: UUID
    job_type: str | None
    status: str | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True)
class JobPage:
    total: int
    page: int
    page_size: int
    total_pages: int
    jobs: tuple[ListedJob, ...]
    skipped: int = 0  # malformed entries left out of ``jobs``
    http_status: int | None = 200
    rate: RateInfo = NO_RATE


@dataclass(frozen=True, slots=True)
class Health:
    status: str | None
    http_status: int | None = 200
    rate: RateInfo = NO_RATE


# ---------------------------------------------------------------- pure parsing


def _int_or_none(value: str | None) -> int | None:
    try:
        number = int(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


def _float_or_none(value: str | None) -> float | None:
    try:
        number = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number >= 0 else None


# A unix time in seconds passes 1e11 only in the year 5138: such a reset is in milliseconds, and
# read as seconds it would pause polling for millennia.
MILLIS_EPOCH = 100_000_000_000


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


def parse_rate(headers: Mapping[str, str], now_unix: float) -> RateInfo:
    return RateInfo(
        limit=_int_or_none(headers.get("X-RateLimit-Limit")),
        remaining=_int_or_none(headers.get("X-RateLimit-Remaining")),
        reset_at=parse_reset(headers.get("X-RateLimit-Reset"), now_unix),
    )


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


def _json_object(body: bytes) -> dict[str, Any] | None:
    """The body as a JSON object, or None for anything else.

    A body nested thousands deep makes ``json`` raise RecursionError; it is simply not an object
    this client can read (the store keeps it as a reject), never an error of the request.
    """
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _status(obj: dict[str, Any]) -> str | None:
    value = obj.get("status")
    return value.strip().lower() or None if isinstance(value, str) else None


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _job_type(obj: dict[str, Any]) -> str | None:
    """The documented ``type``, or ``job_type`` (the name the submit and error docs use)."""
    return _str_or_none(obj.get("type")) or _str_or_none(obj.get("job_type"))


def _has_data(obj: dict[str, Any]) -> bool:
    return obj.get("data") is not None


def _detail(body: bytes) -> str:
    """A short human message from an error body: ``detail``/``message``/``reason_*`` or the text."""
    obj = _json_object(body)
    if obj is not None:
        for key in ("detail", "message", "reason_human", "reason_code", "error"):
            value = obj.get(key)
            if isinstance(value, str) and value:
                return logs.scrub(value[:DETAIL_MAX])
            if value is not None and not isinstance(value, str | bool | int | float):
                return logs.scrub(json.dumps(value)[:DETAIL_MAX])
    return logs.scrub(body[:DETAIL_MAX].decode("utf-8", "replace").strip())


def classify_error(status: int, headers: Mapping[str, str], body: bytes,
                   now_unix: float) -> Outcome:
    """Statuses that mean the same on every endpoint: 404, 401/402/403, 429, 5xx and the rest."""
    rate = parse_rate(headers, now_unix)
    if status == 404:
        return NotFound(http_status=status, rate=rate)
    if status in (401, 402, 403):
        return AuthFailed(detail=_detail(body) or f"http {status}", http_status=status, rate=rate)
    if status == 429:
        retry_after = parse_retry_after(headers.get("Retry-After"), now_unix)
        if retry_after is None:
            obj = _json_object(body) or {}
            value = obj.get("retry_after_seconds", obj.get("retry_after"))
            if isinstance(value, int | float) and not isinstance(value, bool):
                retry_after = _float_or_none(str(value))
        return RateLimited(retry_after_s=retry_after, reset_at=rate.reset_at,
                           detail=_detail(body) or "rate limited", http_status=status, rate=rate)
    if status >= 500:
        return Transient(reason=f"server error http {status}", http_status=status, rate=rate)
    return Transient(reason=f"unexpected http {status}", http_status=status, rate=rate)


def classify_result(status: int, headers: Mapping[str, str], body: bytes,
                    now_unix: float) -> Outcome:
    """``GET /jobs/{id}/results``: SPEC section 4 as a function.

    The HTTP code leads and the body's ``status`` refines it (API.md section 9.15): a 202 is
    pending and a 410 is gone whatever their bodies hold, since neither body is documented in
    full; a 200 is pending or gone only when its status says so.
    """
    rate = parse_rate(headers, now_unix)
    if status == 200:
        return _classify_ok(body, rate)
    if status == 202:
        obj = _json_object(body) or {}
        return Pending(upstream_status=_status(obj), job_type=_job_type(obj),
                       http_status=status, rate=rate)
    if status == 410:
        obj = _json_object(body) or {}
        upstream = _status(obj)
        return Gone(body=body, upstream_status=upstream if upstream in GONE_STATUSES else "failed",
                    error_message=_error_message(obj), http_status=status, rate=rate)
    return classify_error(status, headers, body, now_unix)


def _classify_ok(body: bytes, rate: RateInfo) -> Outcome:
    """A 200 from /results: completed, unless the body's status says pending or gone.

    A status nobody documented is read by the body: with ``data`` it is a finished job (HTTP
    200 is documented as "completed; data present"), without it the job is still running.
    Polling a finished job forever would lose it; harvesting an empty one would lose its data.
    """
    obj = _json_object(body)
    if obj is None:  # not JSON (or not an object): the store keeps it as a reject
        return Completed(body=body, rate=rate)
    upstream = _status(obj)
    if upstream is None or upstream == "completed":
        return Completed(body=body, rate=rate)
    if upstream in GONE_STATUSES:
        return Gone(body=body, upstream_status=upstream, error_message=_error_message(obj),
                    http_status=200, rate=rate)
    if upstream not in PENDING_STATUSES and _has_data(obj):
        return Completed(body=body, rate=rate)
    return Pending(upstream_status=upstream, job_type=_job_type(obj), http_status=200, rate=rate)


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


def classify_status(status: int, headers: Mapping[str, str], body: bytes,
                    now_unix: float) -> JobStatus | Outcome:
    """``GET /jobs/{id}/status``: a 200 is a ``JobStatus`` (it never carries data)."""
    if status != 200:
        return classify_error(status, headers, body, now_unix)
    rate = parse_rate(headers, now_unix)
    obj = _json_object(body)
    job_id = _uuid(obj.get("job_id")) if obj is not None else None
    if obj is None or job_id is None:
        return Transient(reason="malformed json on status", http_status=status, rate=rate)
    return JobStatus(
        job_id=job_id, job_type=_job_type(obj), status=_status(obj),
        updated_at=parse_time(obj.get("updated_at")), http_status=status, rate=rate,
    )


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


# The documented key is ``jobs``; the others are the usual names of a page's array, read only
# when ``jobs`` is absent.
LIST_KEYS = ("jobs", "items", "data", "results")


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
    return ListedJob(job_id=job_id, job_type=_job_type(entry), status=_status(entry),
                     updated_at=updated)


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


def classify_list(status: int, headers: Mapping[str, str], body: bytes, now_unix: float, *,
                  page: int, page_size: int) -> JobPage | Outcome:
    """``GET /jobs/list``: a page of jobs; malformed entries are skipped, not fatal."""
    if status != 200:
        return classify_error(status, headers, body, now_unix)
    rate = parse_rate(headers, now_unix)
    obj = _json_object(body)
    entries = _entries(obj) if obj is not None else None
    if obj is None or entries is None:
        return Transient(reason="malformed json on list", http_status=status, rate=rate)
    jobs = [job for job in map(_listed, entries) if job is not None]
    size = _count(obj.get("page_size")) or page_size
    total, pages = _total_pages(obj, page, size, len(entries))
    return JobPage(total=total, page=_count(obj.get("page")) or page, page_size=size,
                   total_pages=pages, jobs=tuple(jobs), skipped=len(entries) - len(jobs),
                   http_status=status, rate=rate)


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost" or host.lower().endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ---------------------------------------------------------------- the client


_O = TypeVar("_O")


class SpiderIQ:
    """One aiohttp session against one base URL and credential. Use as an async context manager."""

    def __init__(
        self, base_url: str, token: str, *, connect_timeout_s: float, read_timeout_s: float,
        total_timeout_s: float, verify_tls: bool = True, user_agent: str = "harvester/0.1",
        allow_insecure: bool = False, session: aiohttp.ClientSession | None = None,
        time_scale: float = 1.0,
    ) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError("api.base_url: must be an http(s) URL")
        if parts.scheme == "http" and not allow_insecure and not is_loopback(parts.hostname):
            raise ConfigError("api.base_url: plain http is refused for non-loopback hosts")
        if not token or any(c in token for c in "\r\n"):
            raise ConfigError("api.token: empty or not a single line")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self._clean = logs.scrubber(token)
        self._headers = {"Authorization": f"Bearer {token}", "User-Agent": user_agent,
                         "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(
            total=total_timeout_s, connect=connect_timeout_s, sock_connect=connect_timeout_s,
            sock_read=read_timeout_s,
        )
        self._verify_tls = verify_tls
        self._time_scale = time_scale
        self._session = session
        self._owns_session = session is None

    @classmethod
    def from_config(cls, cfg: ApiConfig, token: str, *, time_scale: float = 1.0) -> SpiderIQ:
        return cls(cfg.base_url, token, connect_timeout_s=cfg.connect_timeout_s,
                   read_timeout_s=cfg.read_timeout_s, total_timeout_s=cfg.total_timeout_s,
                   verify_tls=cfg.verify_tls, user_agent=cfg.user_agent,
                   allow_insecure=cfg.allow_insecure, time_scale=time_scale)

    def __repr__(self) -> str:
        return f"SpiderIQ(base_url={self.base_url!r})"

    async def __aenter__(self) -> SpiderIQ:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None and self._owns_session:
            await self._session.close()
        self._session = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:  # created lazily so it belongs to the running loop
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._verify_tls),
                timeout=self._timeout,
            )
            # aiohttp silently resends a GET once when the connection drops; that request would
            # bypass the rate limiter, so a drop is a Transient outcome and the worker decides.
            if hasattr(self._session, "_retry_connection"):
                self._session._retry_connection = False
            self._owns_session = True
        return self._session

    async def _get(self, path: str, params: Mapping[str, str] | None = None, *,
                   auth: bool = True) -> tuple[int, Mapping[str, str], bytes] | Transient:
        headers = self._headers if auth else {k: v for k, v in self._headers.items()
                                              if k != "Authorization"}
        try:
            async with self._get_session().get(
                self.base_url + path, params=params, headers=headers, timeout=self._timeout,
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return response.status, response.headers, body
        except TimeoutError:
            return Transient(reason="timeout")
        except aiohttp.ClientPayloadError as exc:
            return Transient(reason=self._clean(f"truncated body: {type(exc).__name__}: {exc}"))
        except aiohttp.ServerDisconnectedError:
            return Transient(reason="server disconnected")
        except (aiohttp.ClientError, OSError) as exc:
            return Transient(reason=self._clean(f"connection error: {type(exc).__name__}: {exc}"))

    def _real_time(self, outcome: _O) -> _O:
        """A Retry-After in real seconds: a time-scaled API (the simulator at ``--speed``) counts
        its seconds ``time_scale`` times faster. ``X-RateLimit-Reset`` is wall time already."""
        if (isinstance(outcome, RateLimited) and outcome.retry_after_s is not None
                and self._time_scale != 1.0):
            return dataclasses.replace(outcome,
                                       retry_after_s=outcome.retry_after_s / self._time_scale)
        return outcome

    async def fetch_result(self, job_id: UUID) -> Outcome:
        got = await self._get(f"/api/v1/jobs/{job_id}/results")
        if isinstance(got, Transient):
            return got
        return self._real_time(classify_result(*got, time.time()))

    async def fetch_status(self, job_id: UUID) -> JobStatus | Outcome:
        got = await self._get(f"/api/v1/jobs/{job_id}/status")
        if isinstance(got, Transient):
            return got
        return self._real_time(classify_status(*got, time.time()))

    async def list_jobs(self, *, page: int, page_size: int = 100, sort_by: str = "updated_at",
                        sort_order: str = "desc", status_filter: str | None = None
                        ) -> JobPage | Outcome:
        params = {"page": str(page), "page_size": str(page_size), "sort_by": sort_by,
                  "sort_order": sort_order}
        if status_filter:
            params["status_filter"] = status_filter
        got = await self._get("/api/v1/jobs/list", params)
        if isinstance(got, Transient):
            return got
        return self._real_time(classify_list(*got, time.time(), page=page, page_size=page_size))

    async def health(self) -> Health | Outcome:
        """``GET /system/health`` (no auth): 200 when healthy or degraded, 503 when critical."""
        got = await self._get("/api/v1/system/health", auth=False)
        if isinstance(got, Transient):
            return got
        status, headers, body = got
        if status != 200:
            return classify_error(status, headers, body, time.time())
        obj = _json_object(body) or {}
        return Health(status=_str_or_none(obj.get("status")), http_status=status,
                      rate=parse_rate(headers, time.time()))
