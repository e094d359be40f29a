"""The persistence seam: what the worker, discovery and the gate need from the database, as Protocols.

The loops depend only on these. The PostgreSQL sides are ``db.jobs.PgJobStore`` (``JobStore``),
``db.listings`` (``PgDiscoveryStore``, ``PgStreamStore``, ``PgAdopter``) and
``db.limiter.SharedLimiter`` (``Limiter``); the tests have in-memory fakes of the same shapes, so
the loops can be driven through every outcome without a database. The values that cross the seam
are defined here too. Every method raises ``DatabaseError`` (never a driver exception) when the
database is away or refuses a statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from uuid import UUID

from harvester.api.outcomes import Completed, Gone


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    job_id: UUID
    lease_token: int
    job_type: str | None
    upstream_status: str | None
    polls: int
    not_found_count: int
    fault_count: int
    age_s: float


@dataclass(frozen=True, slots=True)
class StoreOutcome:
    kind: str  # "harvested" | "rejected" | "failed" | "cancelled" | "fenced"
    job_id: UUID | None
    reason: str | None = None
    job_type: str | None = None
    processing_s: float | None = None  # the API's processing_time_seconds
    completed_at: datetime | None = None  # when the API says the job finished


@dataclass(frozen=True, slots=True)
class Reschedule:
    """A poll that left the job pending: what it cost, what it taught, when to ask next."""

    delay_s: float
    polls_spent: int
    http_status: int | None
    not_found_count: int
    fault_count: int
    error: str | None
    upstream_status: str | None = None
    job_type: str | None = None


@dataclass(frozen=True, slots=True)
class Finish:
    """A terminal state decided without a stored body (not_found, expired)."""

    state: str
    polls_spent: int
    http_status: int | None
    not_found_count: int
    fault_count: int
    error: str | None


@dataclass(frozen=True, slots=True)
class DiscoveryLease:
    """A list pass this process may run: where the last one stopped, the oldest pending job."""

    watermark: datetime | None
    oldest_pending: datetime | None
    gap_since: datetime | None = None  # a gap pass back to here (the stream asked); None: a full pass


@dataclass(frozen=True, slots=True)
class Listed:
    """One job a list page showed: finished (due at once) or running (``defer_s`` before a poll)."""

    job_id: UUID
    status: str | None
    job_type: str | None
    defer_s: float = 0.0


class JobStore(Protocol):
    """The jobs table as the worker sees it."""

    async def claim(self, owner: str, limit: int, lease_s: float) -> list[ClaimedJob]: ...
    async def extend_leases(self, owner: str, job_ids: Sequence[UUID], lease_s: float) -> None: ...
    async def reschedule(self, job: ClaimedJob, change: Reschedule) -> bool: ...
    async def finish(self, job: ClaimedJob, change: Finish) -> bool: ...
    async def release(self, owner: str, job_ids: Sequence[UUID], delay_s: float) -> None: ...
    async def store_result(self, job: ClaimedJob, outcome: Completed) -> StoreOutcome: ...
    async def store_failure(self, job: ClaimedJob, outcome: Gone) -> StoreOutcome: ...
    async def expire(self, give_up_after_s: float, batch: int) -> int: ...
    async def next_due_in(self) -> float | None: ...
    async def any_pending(self) -> bool: ...


@dataclass(frozen=True, slots=True)
class DiscoveryState:
    unfinished: int  # pending jobs whose end nobody has seen yet (counted up to 100)
    stream_up: bool  # the credential's event stream is connected (in any process)
    waiting: int = 0  # pending jobs a poll found still queued or that took two polls (capped)
    reconcile_pending: bool = False  # the stream asked for a pass, or none has run yet
    youngest_s: float | None = None  # how long the newest job whose end nobody has seen has waited

    @property
    def needed(self) -> bool:
        """Only a pending job whose end nobody has seen makes a list page worth its request."""
        return self.unfinished > 0


class Listings(Protocol):
    """What a discovery source (a list page, an event) tells about our pending jobs."""

    async def mark_finished(self, jobs: Sequence[Listed]) -> list[UUID]: ...
    async def defer_running(self, jobs: Sequence[Listed], *, keep_started: bool = False) -> list[UUID]: ...
    async def pull_in_queued(self, jobs: Sequence[Listed]) -> list[UUID]: ...


class Adopter(Protocol):
    """Adopt mode: queue an account's jobs that no producer enqueued."""

    async def adopt(self, jobs: Sequence[Listed], priority: int = 0) -> list[UUID]: ...


class DiscoveryStore(Listings, Protocol):
    """The discovery row (watermark and lease, one per credential) and what a page tells."""

    async def ensure_discovery(self, key: str) -> None: ...
    async def discovery_state(self, key: str) -> DiscoveryState: ...
    async def claim_discovery(
        self, key: str, owner: str, min_age_s: float, reconcile_s: float, lease_s: float
    ) -> DiscoveryLease | None: ...
    async def renew_discovery(self, key: str, owner: str, lease_s: float) -> bool: ...
    async def finish_discovery(
        self, key: str, owner: str, newest: datetime | None, pages: int, finished: int, *, full: bool = True
    ) -> None: ...
    async def note_nothing_to_reconcile(self, key: str) -> None: ...
    async def queued_expiring(self, key: str, within_s: float) -> int: ...
    async def spread_queued_defers(self, key: str, within_s: float) -> int: ...


class StreamStore(Listings, Protocol):
    """The event stream's lease (one holder per credential) and its reports."""

    async def ensure_discovery(self, key: str) -> None: ...
    async def claim_stream(
        self, key: str, owner: str, lease_s: float, *, connected: bool, events: int, matched: int
    ) -> bool: ...
    async def request_reconcile(self, key: str, since: datetime | None = None) -> None: ...
    async def release_stream(self, key: str, owner: str) -> None: ...


@dataclass(frozen=True, slots=True)
class Usage:
    """How much of the rolling window is spent: ``in_window`` of ``limit`` per ``window_s``."""

    in_window: int
    limit: int
    window_s: float


class Limiter(Protocol):
    """The shared request budget of one credential (``db.limiter.SharedLimiter``), as the gate holds it."""

    async def acquire(self) -> None: ...
    async def pause(self, *, retry_after_s: float | None, reset_at: float | None, reason: str) -> float: ...
    async def available_slots(self, horizon_s: float) -> int: ...
    async def usage(self) -> Usage: ...
