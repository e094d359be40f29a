"""What an answer of the SpiderIQ API means, as frozen values.

A ``/results`` answer becomes one of ``Completed``, ``Pending``, ``Gone``, ``NotFound``,
``AuthFailed``, ``RateLimited`` or ``Transient`` (the ``Outcome`` union); a ``/jobs/list`` answer
becomes a ``JobPage`` of ``ListedJob`` entries, or one of the same failure outcomes. A body the
store will keep travels with its JSON already parsed (``doc``): a ``dict``, or ``Unreadable`` with
the reason it could not be read, so nothing downstream decodes the bytes again. The raw bytes stay
beside it because an unusable body is kept byte for byte as a reject. No value here ever holds the
API token in a reason or detail, and no repr shows a body.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

# The upstream statuses, in every spelling the docs use: the one list of each.
PENDING_UPSTREAM = frozenset({"queued", "processing", "running", "pending"})
CANCELLED_UPSTREAM = frozenset({"cancelled", "canceled"})
GONE_UPSTREAM = frozenset({"failed"}) | CANCELLED_UPSTREAM
TERMINAL_UPSTREAM = frozenset({"completed"}) | GONE_UPSTREAM


@dataclass(frozen=True, slots=True)
class Unreadable:
    """A body that is not a JSON object the store can hold; ``reason`` becomes the reject's."""

    reason: str


# A body's JSON: the parsed object, or why there is none.
Document = dict[str, Any] | Unreadable


@dataclass(frozen=True, slots=True)
class Completed:
    body: bytes = field(repr=False)
    # Parsed from ``body``; equal bodies give equal documents, so only the bytes are compared.
    doc: Document = field(repr=False, compare=False)
    http_status: int | None = 200


@dataclass(frozen=True, slots=True)
class Pending:
    upstream_status: str | None = None
    job_type: str | None = None
    http_status: int | None = 202


@dataclass(frozen=True, slots=True)
class Gone:
    body: bytes = field(repr=False)
    doc: Document = field(repr=False, compare=False)
    upstream_status: str = "failed"
    error_message: str | None = None
    http_status: int | None = 410


@dataclass(frozen=True, slots=True)
class NotFound:
    http_status: int | None = 404


@dataclass(frozen=True, slots=True)
class AuthFailed:
    detail: str = ""
    http_status: int | None = 401


@dataclass(frozen=True, slots=True)
class RateLimited:
    retry_after_s: float | None = None
    reset_at: float | None = None  # unix time, from X-RateLimit-Reset
    detail: str = ""
    http_status: int | None = 429


@dataclass(frozen=True, slots=True)
class Transient:
    reason: str = ""
    http_status: int | None = None


Outcome = Completed | Pending | Gone | NotFound | AuthFailed | RateLimited | Transient


@dataclass(frozen=True, slots=True)
class ListedJob:
    job_id: UUID
    job_type: str | None
    status: str | None
    updated_at: datetime | None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    total: int
    page: int
    page_size: int
    total_pages: int
    jobs: tuple[ListedJob, ...]
    skipped: int = 0  # malformed entries left out of ``jobs``
    http_status: int | None = 200
