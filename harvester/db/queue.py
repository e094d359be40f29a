"""The jobs table and the discovery rows in PostgreSQL: the database side of ``ports``.

``PgQueue`` implements ``ports.JobStore`` and ``ports.DiscoveryStore`` for the loops; the module
functions below it are the commands' side (enqueue, status, requeue). Claiming is one
``FOR UPDATE SKIP LOCKED`` statement that moves the job's ``next_poll_at`` to the lease expiry and
bumps ``lease_token``; every later write names that token, so a process whose lease was taken over
changes nothing. Each call is one transaction with the statement timeout set inside it, and driver
errors leave only as ``DatabaseError`` (``db.guard``). Storing bodies is ``store``'s business.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from harvester.api.outcomes import TERMINAL_UPSTREAM, Completed, Gone
from harvester.config import DEFAULT_ACCOUNT
from harvester.db import connection, guard, store, transaction
from harvester.db.queries import NamedQueries
from harvester.ports import (
    ClaimedJob,
    DiscoveryLease,
    DiscoveryState,
    Finish,
    Listed,
    Reschedule,
    StoreOutcome,
)


class SQL(NamedQueries):
    enqueue_jobs: str
    adopt_jobs: str
    claim_due_jobs: str
    extend_leases: str
    reschedule_polled_job: str
    make_auth_held_jobs_due: str
    release_jobs: str
    finish_job: str
    expire_stale_jobs: str
    select_next_due_in: str
    exists_pending_job: str
    exists_pending_job_of: str
    count_jobs_by_state: str
    count_jobs_by_account: str
    select_pending_by_account: str
    select_oldest_pending_age: str
    select_recent_errors: str
    requeue_jobs_by_id: str
    requeue_jobs_by_state: str
    insert_discovery_row: str
    select_discovery_state: str
    claim_discovery_pass: str
    finish_discovery_pass: str
    note_nothing_to_reconcile: str
    make_listed_finished_jobs_due: str
    defer_listed_running_jobs: str
    renew_discovery_lease: str
    pull_in_passed_queued_jobs: str
    count_queued_defers_ending: str
    spread_queued_defers: str
    claim_event_stream: str
    request_reconcile_pass: str
    release_event_stream: str
    select_discovery_status: str


_TERMINAL = sorted(TERMINAL_UPSTREAM)


def _count(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


class PgQueue:
    """The seam's PostgreSQL side, over one pool, for one account's jobs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        statement_timeout_s: float | None = None,
        account: str = DEFAULT_ACCOUNT,
        region: str | None = None,
    ) -> None:
        self.pool = pool
        self.timeout_s = statement_timeout_s
        self.account = account
        self.region = region  # normalize.default_region, for phones written without +

    async def _execute(self, what: str, sql: str, *args: Any) -> str:
        with guard(what):
            async with transaction(self.pool, self.timeout_s) as conn:
                return await conn.execute(sql, *args)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        with guard(what):
            async with transaction(self.pool, self.timeout_s) as conn:
                return await conn.fetch(sql, *args)

    async def _fetchval(self, what: str, sql: str, *args: Any) -> Any:
        with guard(what):
            async with transaction(self.pool, self.timeout_s) as conn:
                return await conn.fetchval(sql, *args)

    # ------------------------------------------------------------ JobStore
    async def claim(self, owner: str, limit: int, lease_s: float) -> list[ClaimedJob]:
        if limit <= 0:
            return []
        rows = await self._fetch("claim", SQL.claim_due_jobs, owner, limit, lease_s, self.account)
        return [
            ClaimedJob(
                job_id=row["job_id"],
                lease_token=row["lease_token"],
                job_type=row["job_type"],
                upstream_status=row["upstream_status"],
                polls=row["polls"],
                not_found_count=row["not_found_count"],
                fault_count=row["fault_count"],
                age_s=row["age_s"],
            )
            for row in rows
        ]

    async def extend_leases(self, owner: str, job_ids: Sequence[UUID], lease_s: float) -> None:
        if job_ids:
            await self._execute("extend leases", SQL.extend_leases, owner, list(job_ids), lease_s)

    async def reschedule(self, job: ClaimedJob, change: Reschedule) -> bool:
        """Keep the job pending with a new due time. False when the lease was lost."""
        status = await self._execute(
            "reschedule",
            SQL.reschedule_polled_job,
            job.job_id,
            job.lease_token,
            change.delay_s,
            change.polls_spent,
            change.http_status,
            change.upstream_status,
            change.job_type,
            change.not_found_count,
            change.fault_count,
            change.error,
            (job.upstream_status or "").lower() in TERMINAL_UPSTREAM,
            _TERMINAL,
        )
        return _count(status) == 1

    async def finish(self, job: ClaimedJob, change: Finish) -> bool:
        status = await self._execute(
            "finish",
            SQL.finish_job,
            job.job_id,
            job.lease_token,
            change.state,
            None,
            None,
            change.http_status,
            change.polls_spent,
            change.error,
            change.not_found_count,
            change.fault_count,
        )
        return _count(status) == 1

    async def make_auth_held_due(self) -> int:
        """This account's jobs held back by a refused credential: due now (a new token)."""
        return _count(await self._execute("auth held", SQL.make_auth_held_jobs_due, self.account))

    async def release(self, owner: str, job_ids: Sequence[UUID], delay_s: float) -> None:
        if job_ids:
            await self._execute("release", SQL.release_jobs, owner, list(job_ids), delay_s)

    async def store_result(self, job: ClaimedJob, outcome: Completed) -> StoreOutcome:
        return await store.store_result(
            self.pool,
            outcome.body,
            outcome.doc,
            expected_job_id=job.job_id,
            fence=store.Fence(job.job_id, job.lease_token),
            http_status=outcome.http_status or 200,
            statement_timeout_s=self.timeout_s,
            region=self.region,
        )

    async def store_failure(self, job: ClaimedJob, outcome: Gone) -> StoreOutcome:
        return await store.store_failure(
            self.pool,
            outcome.body,
            outcome.doc,
            job_id=job.job_id,
            fence=store.Fence(job.job_id, job.lease_token),
            http_status=outcome.http_status or 410,
            statement_timeout_s=self.timeout_s,
        )

    async def expire(self, give_up_after_s: float, batch: int) -> int:
        """Expire at most ``batch`` stale jobs (one bounded statement); the caller repeats."""
        return _count(await self._execute("expire", SQL.expire_stale_jobs, give_up_after_s, batch))

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending job is due (negative: overdue), None if none."""
        value = await self._fetchval("next due", SQL.select_next_due_in, self.account)
        return None if value is None else float(value)

    async def any_pending(self) -> bool:
        return bool(await self._fetchval("any pending", SQL.exists_pending_job, self.account))

    # ------------------------------------------------------------ DiscoveryStore
    async def ensure_discovery(self, key: str) -> None:
        await self._execute("discovery row", SQL.insert_discovery_row, key)

    async def discovery_state(self, key: str) -> DiscoveryState:
        [row] = await self._fetch("discovery state", SQL.select_discovery_state, key, _TERMINAL, self.account)
        return DiscoveryState(
            unfinished=row["unfinished"],
            stream_up=row["stream_up"],
            waiting=row["waiting"],
            reconcile_pending=row["reconcile_pending"],
            youngest_s=row["youngest_s"],
        )

    async def queued_expiring(self, key: str, within_s: float) -> int:
        """Our pending jobs known queued whose queued defer ends within ``within_s`` (up to 100)."""
        [row] = await self._fetch("queued expiring", SQL.count_queued_defers_ending, within_s, self.account)
        return int(row["expiring"])

    async def spread_queued_defers(self, key: str, within_s: float) -> int:
        """Polls of our pending jobs known queued that come later than ``within_s`` from now are
        spread over the next ``within_s``; returns how many moved."""
        rows = await self._fetch("spread queued", SQL.spread_queued_defers, within_s, self.account)
        return len(rows)

    async def note_nothing_to_reconcile(self, key: str) -> None:
        await self._execute("discovery baseline", SQL.note_nothing_to_reconcile, key, self.account)

    async def claim_discovery(
        self, key: str, owner: str, min_age_s: float, reconcile_s: float, lease_s: float
    ) -> DiscoveryLease | None:
        rows = await self._fetch(
            "discovery lease",
            SQL.claim_discovery_pass,
            key,
            owner,
            min_age_s,
            lease_s,
            reconcile_s,
            self.account,
        )
        if not rows:
            return None
        row = rows[0]
        return DiscoveryLease(row["watermark"], row["oldest_pending"], row["gap_since"])

    async def renew_discovery(self, key: str, owner: str, lease_s: float) -> bool:
        return bool(await self._fetch("discovery lease", SQL.renew_discovery_lease, key, owner, lease_s))

    async def finish_discovery(
        self, key: str, owner: str, newest: datetime | None, pages: int, finished: int, *, full: bool = True
    ) -> None:
        await self._execute(
            "discovery pass", SQL.finish_discovery_pass, key, owner, newest, pages, finished, full
        )

    async def mark_finished(self, jobs: Sequence[Listed]) -> list[UUID]:
        """Make our pending jobs among ``jobs`` due at once; returns the ones that were ours."""
        if not jobs:
            return []
        rows = await self._fetch(
            "listed finished",
            SQL.make_listed_finished_jobs_due,
            [j.job_id for j in jobs],
            [j.status for j in jobs],
            [j.job_type for j in jobs],
            self.account,
        )
        return [row["job_id"] for row in rows]

    async def adopt(self, jobs: Sequence[Listed], priority: int = 0) -> list[UUID]:
        """Queue the jobs among ``jobs`` that the queue does not have, for this account, tagged
        ``{"adopted": true}``; returns the ones that were new."""
        if not jobs:
            return []
        rows = await self._fetch(
            "adopt",
            SQL.adopt_jobs,
            [j.job_id for j in jobs],
            self.account,
            [j.job_type for j in jobs],
            [j.status for j in jobs],
            priority,
            _TERMINAL,
        )
        return [row["job_id"] for row in rows]

    async def defer_running(self, jobs: Sequence[Listed], *, keep_started: bool = False) -> list[UUID]:
        """Put off direct polls of our pending jobs among ``jobs``; returns the ones that were ours.
        ``keep_started``: a job already known started keeps its due time."""
        if not jobs:
            return []
        rows = await self._fetch(
            "listed running",
            SQL.defer_listed_running_jobs,
            [j.job_id for j in jobs],
            [j.status for j in jobs],
            [j.job_type for j in jobs],
            [j.defer_s for j in jobs],
            self.account,
            keep_started,
            _TERMINAL,
        )
        return [row["job_id"] for row in rows]

    async def pull_in_queued(self, jobs: Sequence[Listed]) -> list[UUID]:
        """Bring forward the next poll of our pending jobs among ``jobs`` still known queued, to
        ``defer_s`` from now (never later than it was); returns the ones whose poll moved."""
        if not jobs:
            return []
        rows = await self._fetch(
            "queue passed",
            SQL.pull_in_passed_queued_jobs,
            [j.job_id for j in jobs],
            [j.defer_s for j in jobs],
            self.account,
        )
        return [row["job_id"] for row in rows]

    # ------------------------------------------------------------ StreamStore
    async def claim_stream(
        self, key: str, owner: str, lease_s: float, *, connected: bool, events: int, matched: int
    ) -> bool:
        rows = await self._fetch(
            "stream lease", SQL.claim_event_stream, key, owner, lease_s, connected, events, matched
        )
        return bool(rows)

    async def request_reconcile(self, key: str, since: datetime | None = None) -> None:
        await self._execute("reconcile request", SQL.request_reconcile_pass, key, since)

    async def release_stream(self, key: str, owner: str) -> None:
        await self._execute("stream release", SQL.release_event_stream, key, owner)


# ---------------------------------------------------------------- the commands' side


@dataclass(frozen=True, slots=True)
class QueueStatus:
    counts: dict[str, int]
    polls: dict[str, int]
    oldest_pending_age_s: float | None
    recent_errors: list[dict[str, Any]]


async def enqueue(
    pool: asyncpg.Pool,
    job_ids: Sequence[UUID],
    *,
    priority: int = 0,
    tags: Mapping[str, str] | None = None,
    account: str = DEFAULT_ACCOUNT,
) -> int:
    """Insert new job IDs; existing ones are left alone. Returns how many were new."""
    with guard("enqueue"):
        async with connection(pool) as conn:
            status = await conn.execute(
                SQL.enqueue_jobs, list(job_ids), priority, json.dumps(dict(tags or {})), account
            )
    return _count(status)


async def jobs_by_account(pool: asyncpg.Pool) -> dict[str, dict[str, int]]:
    """{account: {state: jobs}} over the whole queue, for ``harvester status``."""
    with guard("status"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.count_jobs_by_account)
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row["account"], {})[row["state"]] = int(row["jobs"])
    return out


async def any_pending_for(pool: asyncpg.Pool, accounts: Sequence[str]) -> bool:
    """Whether any job of these accounts is pending (``run --drain`` with several accounts)."""
    with guard("any pending"):
        async with connection(pool) as conn:
            return bool(await conn.fetchval(SQL.exists_pending_job_of, list(accounts)))


async def pending_by_account(pool: asyncpg.Pool) -> dict[str, int]:
    """{account: pending jobs}: what waits for which account (configured or not)."""
    with guard("status"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.select_pending_by_account)
    return {row["account"]: int(row["pending"]) for row in rows}


def unknown_accounts(pending: Mapping[str, int], configured: Sequence[str]) -> dict[str, int]:
    """The pending jobs whose account no configuration here names: they wait, never polled."""
    return {name: count for name, count in sorted(pending.items()) if name not in configured and count}


async def status(pool: asyncpg.Pool, recent: int = 5) -> QueueStatus:
    with guard("status"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.count_jobs_by_state)
            oldest = await conn.fetchval(SQL.select_oldest_pending_age)
            errors = await conn.fetch(SQL.select_recent_errors, recent) if recent else []
    return QueueStatus(
        counts={row["state"]: int(row["jobs"]) for row in rows},
        polls={row["state"]: int(row["polls"]) for row in rows},
        oldest_pending_age_s=None if oldest is None else float(oldest),
        recent_errors=[
            {
                "job_id": str(row["job_id"]),
                "state": row["state"],
                "http_status": row["last_http_status"],
                "error": row["last_error"],
                "at": row["updated_at"].isoformat(),
            }
            for row in errors
        ],
    )


async def discovery_status(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Each credential's list discovery and event stream, for ``harvester status``."""
    with guard("status"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.select_discovery_status)
    return [dict(row) for row in rows]


async def requeue(pool: asyncpg.Pool, job_ids: Sequence[UUID], state: str | None) -> int:
    with guard("requeue"):
        async with connection(pool) as conn:
            if job_ids:
                return _count(await conn.execute(SQL.requeue_jobs_by_id, list(job_ids), state))
            if state is not None:
                return _count(await conn.execute(SQL.requeue_jobs_by_state, state))
    return 0
