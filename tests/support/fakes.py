"""In-memory stand-ins for the seams the loops depend on: the job store, the limiter, the API.

``FakeStore`` implements ``ports.JobStore`` and ``ports.DiscoveryStore`` over a dict, with the same
rules as the SQL (due order, leases, fencing tokens, bounded expiry), so the worker and discovery
loops can be driven through every outcome without PostgreSQL; ``FakeStreamStore`` adds
``ports.StreamStore``. In PostgreSQL these are separate classes over the same tables
(``db.jobs.PgJobStore``, ``db.listings``); one fake holding the rows stands for all of them, so
what discovery writes is what the worker claims. The integration tests run the same loops against
the real database.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from uuid import UUID

from harvester.api.outcomes import (
    CANCELLED_UPSTREAM,
    TERMINAL_UPSTREAM,
    Completed,
    Gone,
    JobPage,
    Outcome,
    Pending,
    Unreadable,
)
from harvester.errors import DatabaseError
from harvester.ports import (
    ClaimedJob,
    DiscoveryLease,
    DiscoveryState,
    Finish,
    Listed,
    Reschedule,
    StoreOutcome,
    Usage,
)


@dataclass(slots=True)
class Row:
    job_id: UUID
    enqueued_at: float
    next_poll_at: float
    priority: int = 0
    state: str = "pending"
    job_type: str | None = None
    upstream_status: str | None = None
    polls: int = 0
    last_http_status: int | None = None
    last_error: str | None = None
    not_found_count: int = 0
    fault_count: int = 0
    lease_owner: str | None = None
    lease_expires_at: float | None = None
    lease_token: int = 0


@dataclass
class FakeStore:
    clock: Callable[[], float] = time.monotonic
    rows: dict[UUID, Row] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)  # method names that raise DatabaseError
    calls: list[str] = field(default_factory=list)
    discovery: dict[str, tuple[datetime | None, float | None, str | None]] = field(default_factory=dict)
    stream_up: bool = False
    reconcile_requested: bool = False
    reconcile_since: datetime | None = None
    stream_holder: str | None = None
    stream_reports: list[tuple[bool, int, int]] = field(default_factory=list)

    # ------------------------------------------------------------ set-up
    def add(self, job_id: UUID, *, age_s: float = 3600.0, due_in_s: float = 0.0, **values: object) -> Row:
        now = self.clock()
        row = Row(job_id, enqueued_at=now - age_s, next_poll_at=now + due_in_s)
        for name, value in values.items():
            setattr(row, name, value)
        self.rows[job_id] = row
        return row

    def _call(self, name: str) -> None:
        self.calls.append(name)
        if name in self.failing:
            raise DatabaseError(f"{name}: database unavailable: ConnectionRefusedError")

    def _holds(self, job: ClaimedJob) -> Row | None:
        row = self.rows.get(job.job_id)
        if row is None or row.lease_token != job.lease_token or row.state != "pending":
            return None
        return row

    def _leased(self, row: Row) -> bool:
        return row.lease_expires_at is not None and row.lease_expires_at > self.clock()

    @staticmethod
    def _drop_lease(row: Row) -> None:
        row.lease_owner = None
        row.lease_expires_at = None

    # ------------------------------------------------------------ JobStore
    async def claim(self, owner: str, limit: int, lease_s: float) -> list[ClaimedJob]:
        self._call("claim")
        now = self.clock()
        due = sorted(
            (r for r in self.rows.values() if r.state == "pending" and r.next_poll_at <= now),
            key=lambda r: (-r.priority, r.next_poll_at),
        )[: max(0, limit)]
        claimed = []
        for row in due:
            row.lease_owner, row.lease_expires_at = owner, now + lease_s
            row.next_poll_at = now + lease_s
            row.lease_token += 1
            claimed.append(
                ClaimedJob(
                    row.job_id,
                    row.lease_token,
                    row.job_type,
                    row.upstream_status,
                    row.polls,
                    row.not_found_count,
                    row.fault_count,
                    now - row.enqueued_at,
                )
            )
        return claimed

    async def extend_leases(self, owner: str, job_ids: Sequence[UUID], lease_s: float) -> None:
        self._call("extend_leases")
        for job_id in job_ids:
            row = self.rows.get(job_id)
            if row is not None and row.lease_owner == owner and row.state == "pending":
                row.lease_expires_at = self.clock() + lease_s
                row.next_poll_at = max(row.next_poll_at, row.lease_expires_at)

    async def reschedule(self, job: ClaimedJob, change: Reschedule) -> bool:
        self._call("reschedule")
        row = self._holds(job)
        if row is None:
            return False
        due = self.clock() + change.delay_s
        ended = (row.upstream_status or "") in TERMINAL_UPSTREAM
        ended_meanwhile = ended and (job.upstream_status or "").lower() not in TERMINAL_UPSTREAM
        if ended_meanwhile:  # an end seen while it was claimed: newer than a 202 in flight
            row.next_poll_at = self.clock()
        elif change.polls_spent > 0:
            row.next_poll_at = due
        elif row.upstream_status is None and (
            row.lease_expires_at is None or row.next_poll_at <= row.lease_expires_at
        ):
            row.next_poll_at = due  # a hold keeps what news of the job written meanwhile gave
        row.polls += change.polls_spent
        row.last_http_status = change.http_status or row.last_http_status
        if not ended_meanwhile:
            row.upstream_status = change.upstream_status or row.upstream_status
        row.job_type = change.job_type or row.job_type
        row.not_found_count, row.fault_count = change.not_found_count, change.fault_count
        row.last_error = change.error
        self._drop_lease(row)
        return True

    async def finish(self, job: ClaimedJob, change: Finish) -> bool:
        self._call("finish")
        row = self._holds(job)
        if row is None:
            return False
        row.state, row.polls = change.state, row.polls + change.polls_spent
        row.last_http_status = change.http_status or row.last_http_status
        row.not_found_count, row.fault_count = change.not_found_count, change.fault_count
        row.last_error = change.error
        self._drop_lease(row)
        return True

    async def release(self, owner: str, job_ids: Sequence[UUID], delay_s: float) -> None:
        self._call("release")
        for job_id in job_ids:
            row = self.rows.get(job_id)
            if row is not None and row.lease_owner == owner and row.state == "pending":
                row.next_poll_at = self.clock() + delay_s
                self._drop_lease(row)

    async def store_result(self, job: ClaimedJob, outcome: Completed) -> StoreOutcome:
        self._call("store_result")
        row = self._holds(job)
        if row is None:
            return StoreOutcome("fenced", job.job_id, "lease lost")
        doc = outcome.doc
        kind = "rejected" if isinstance(doc, Unreadable) else "harvested"
        row.state, row.polls = kind, row.polls + 1
        row.last_http_status = outcome.http_status
        row.last_error = doc.reason if isinstance(doc, Unreadable) else None
        self._drop_lease(row)
        if isinstance(doc, Unreadable):
            return StoreOutcome(kind, job.job_id, doc.reason)
        seconds = doc.get("processing_time_seconds")
        return StoreOutcome(
            kind,
            job.job_id,
            job_type=doc.get("type"),
            processing_s=seconds if isinstance(seconds, float | int) else None,
        )

    async def store_failure(self, job: ClaimedJob, outcome: Gone) -> StoreOutcome:
        self._call("store_failure")
        row = self._holds(job)
        if row is None:
            return StoreOutcome("fenced", job.job_id, "lease lost")
        state = "cancelled" if outcome.upstream_status in CANCELLED_UPSTREAM else "failed"
        row.state, row.polls = state, row.polls + 1
        row.last_http_status, row.last_error = outcome.http_status, outcome.error_message
        self._drop_lease(row)
        return StoreOutcome(state, job.job_id, outcome.error_message)

    async def expire(self, give_up_after_s: float, batch: int) -> int:
        self._call("expire")
        now = self.clock()
        stale = sorted(
            (
                r
                for r in self.rows.values()
                if r.state == "pending"
                and r.enqueued_at < now - give_up_after_s
                and (r.lease_expires_at is None or r.lease_expires_at < now)
            ),
            key=lambda r: r.enqueued_at,
        )[:batch]
        for row in stale:
            row.state, row.last_error = "expired", "gave up: pending longer than give_up_after"
        return len(stale)

    async def next_due_in(self) -> float | None:
        self._call("next_due_in")
        pending = [r.next_poll_at for r in self.rows.values() if r.state == "pending"]
        return min(pending) - self.clock() if pending else None

    async def any_pending(self) -> bool:
        self._call("any_pending")
        return any(r.state == "pending" for r in self.rows.values())

    # ------------------------------------------------------------ DiscoveryStore
    async def ensure_discovery(self, key: str) -> None:
        self._call("ensure_discovery")
        self.discovery.setdefault(key, (None, None, None))

    async def discovery_state(self, key: str) -> DiscoveryState:
        self._call("discovery_state")
        unfinished = sum(
            1
            for r in self.rows.values()
            if r.state == "pending" and (r.upstream_status or "") not in TERMINAL_UPSTREAM
        )
        waiting = sum(
            1
            for r in self.rows.values()
            if r.state == "pending" and (r.upstream_status == "queued" or r.polls >= 2)
        )
        _, last_pass, _ = self.discovery.get(key, (None, None, None))
        pending = self.reconcile_requested or last_pass is None
        enqueued = [
            r.enqueued_at
            for r in self.rows.values()
            if r.state == "pending" and (r.upstream_status or "") not in TERMINAL_UPSTREAM
        ]
        youngest = self.clock() - max(enqueued) if enqueued else None
        return DiscoveryState(min(unfinished, 100), self.stream_up, min(waiting, 100), pending, youngest)

    async def queued_expiring(self, key: str, within_s: float) -> int:
        self._call("queued_expiring")
        now = self.clock()
        return min(
            100,
            sum(
                1
                for r in self.rows.values()
                if r.state == "pending"
                and r.upstream_status == "queued"
                and now < r.next_poll_at <= now + within_s
            ),
        )

    async def spread_queued_defers(self, key: str, within_s: float) -> int:
        self._call("spread_queued_defers")
        now, moved = self.clock(), 0
        for r in self.rows.values():
            if r.state == "pending" and r.upstream_status == "queued" and r.next_poll_at > now + within_s:
                r.next_poll_at = now + within_s * ((hash(r.job_id) % 1000) / 1000)
                moved += 1
        return moved

    async def note_nothing_to_reconcile(self, key: str) -> None:
        self._call("note_nothing_to_reconcile")
        watermark, _, holder = self.discovery[key]
        if holder is None and not any(r.state == "pending" for r in self.rows.values()):
            self.reconcile_requested, self.reconcile_since = False, None
            self.discovery[key] = (watermark, self.clock(), None)

    async def claim_discovery(
        self, key: str, owner: str, min_age_s: float, reconcile_s: float, lease_s: float
    ) -> DiscoveryLease | None:
        self._call("claim_discovery")
        watermark, last_pass, holder = self.discovery[key]
        if holder not in (None, owner):
            return None
        wanted = reconcile_s if self.stream_up else min_age_s
        full_due = last_pass is None or self.clock() - last_pass >= wanted
        if not full_due and not self.reconcile_requested:
            return None
        since = None if full_due or self.reconcile_since is None else self.reconcile_since
        if since is not None and watermark is not None:
            since = max(since, watermark)
        self.reconcile_requested, self.reconcile_since = False, None
        self.discovery[key] = (watermark, last_pass, owner)
        return DiscoveryLease(watermark=watermark, oldest_pending=None, gap_since=since)

    async def renew_discovery(self, key: str, owner: str, lease_s: float) -> bool:
        self._call("renew_discovery")
        return self.discovery[key][2] == owner

    async def finish_discovery(
        self, key: str, owner: str, newest: datetime | None, pages: int, finished: int, *, full: bool = True
    ) -> None:
        self._call("finish_discovery")
        watermark, last_pass, holder = self.discovery[key]
        if holder != owner:  # taken over: the pass's lease is not its to finish
            return
        if not full:
            self.discovery[key] = (watermark, last_pass, None)
            return
        if newest is not None and (watermark is None or newest > watermark):
            watermark = newest
        self.discovery[key] = (watermark, self.clock(), None)

    async def mark_finished(self, jobs: Sequence[Listed]) -> list[UUID]:
        self._call("mark_finished")
        marked = []
        for job in jobs:
            row = self.rows.get(job.job_id)
            if row is not None and row.state == "pending":
                if not self._leased(row):  # a leased job keeps its lease's end: no second claim
                    row.next_poll_at = float("-inf")
                row.upstream_status = job.status
                marked.append(job.job_id)
        return marked

    async def defer_running(self, jobs: Sequence[Listed], *, keep_started: bool = False) -> list[UUID]:
        self._call("defer_running")
        deferred = []
        for job in jobs:
            row = self.rows.get(job.job_id)
            if row is None or row.state != "pending":
                continue
            deferred.append(job.job_id)
            if (row.upstream_status or "") in TERMINAL_UPSTREAM:
                continue  # an end is not undone by a late start
            first_news = row.upstream_status == "queued" or (row.upstream_status is None and row.polls == 0)
            started = row.upstream_status not in (None, "queued") and job.status != "queued"
            if first_news and job.status != "queued":
                row.next_poll_at = self.clock() + job.defer_s
            elif not (keep_started and started):
                row.next_poll_at = max(row.next_poll_at, self.clock() + job.defer_s)
            if self._leased(row):  # never due before its lease ends: no second claim
                row.next_poll_at = max(row.next_poll_at, row.lease_expires_at or row.next_poll_at)
            row.upstream_status = job.status
        return deferred

    async def pull_in_queued(self, jobs: Sequence[Listed]) -> list[UUID]:
        self._call("pull_in_queued")
        pulled = []
        for job in jobs:
            row = self.rows.get(job.job_id)
            due = self.clock() + job.defer_s
            if (
                row is not None
                and row.state == "pending"
                and not self._leased(row)
                and row.upstream_status == "queued"
                and row.next_poll_at > due
            ):
                row.next_poll_at = due
                pulled.append(job.job_id)
        return pulled


@dataclass
class FakeLimiter:
    """Grants at once (or never, with ``blocked``); a 429 pause is what the outcome asked for."""

    blocked: bool = False
    granted: int = 0
    pauses: list[float] = field(default_factory=list)
    in_window: int = 0

    async def acquire(self) -> None:
        if self.blocked:
            await asyncio.Event().wait()  # a slot hours away: only a cancel ends this
        self.granted += 1

    async def pause(self, *, retry_after_s: float | None, reset_at: float | None, reason: str) -> float:
        from harvester.scheduling.brakes import rate_pause_s

        length = rate_pause_s(retry_after_s, reset_at, time.time(), 60.0)
        self.pauses.append(length)
        return length

    async def available_slots(self, horizon_s: float) -> int:
        return 20

    async def usage(self) -> Usage:
        return Usage(in_window=self.in_window, limit=100, window_s=60.0)


@dataclass
class FakeApi:
    """Answers from a script per job (the last answer repeats), and list pages in order."""

    script: dict[UUID, list[Outcome]] = field(default_factory=dict)
    pages: list[JobPage | Outcome] = field(default_factory=list)
    queued_pages: list[JobPage | Outcome] = field(default_factory=list)
    filtered: list[str] = field(default_factory=list)
    fetched: list[UUID] = field(default_factory=list)
    listed: int = 0

    def answer(self, job_id: UUID, *outcomes: Outcome) -> None:
        self.script[job_id] = list(outcomes)

    async def fetch_result(self, job_id: UUID) -> Outcome:
        self.fetched.append(job_id)
        answers = self.script.get(job_id) or [Pending()]
        return answers.pop(0) if len(answers) > 1 else answers[0]

    async def list_jobs(
        self,
        *,
        page: int,
        page_size: int = 100,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        status_filter: str | None = None,
    ) -> JobPage | Outcome:
        self.listed += 1
        if status_filter is not None:
            self.filtered.append(status_filter)
            return self.queued_pages[min(page, len(self.queued_pages)) - 1]
        return self.pages[min(page, len(self.pages)) - 1]


def states(store: FakeStore, job_ids: Iterable[UUID] | None = None) -> dict[UUID, str]:
    wanted = store.rows if job_ids is None else job_ids
    return {job_id: store.rows[job_id].state for job_id in wanted}


class FakeStreamStore(FakeStore):
    """``FakeStore`` with the stream lease (``ports.StreamStore``)."""

    async def claim_stream(
        self, key: str, owner: str, lease_s: float, *, connected: bool, events: int, matched: int
    ) -> bool:
        self._call("claim_stream")
        if self.stream_holder not in (None, owner):
            return False
        self.stream_holder = owner
        self.stream_up = connected
        self.stream_reports.append((connected, events, matched))
        return True

    async def request_reconcile(self, key: str, since: datetime | None = None) -> None:
        self._call("request_reconcile")
        if since is None or (self.reconcile_requested and self.reconcile_since is None):
            self.reconcile_since = None  # a full pass stays full
        elif self.reconcile_requested and self.reconcile_since is not None:
            self.reconcile_since = min(self.reconcile_since, since)
        else:
            self.reconcile_since = since
        self.reconcile_requested = True

    async def release_stream(self, key: str, owner: str) -> None:
        self._call("release_stream")
        if self.stream_holder == owner:
            self.stream_holder, self.stream_up = None, False
