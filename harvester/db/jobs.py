"""The jobs' leases in PostgreSQL: ``ports.JobStore``, the worker's side of ``harvester.jobs``.

``PgJobStore`` claims due jobs, renews and gives back their leases, reschedules a job a poll left
pending, finishes one that ended without a body and expires the stale ones; a body is handed to
``store`` under the claim's fence. Claiming is one ``FOR UPDATE SKIP LOCKED`` statement that moves
the job's ``next_poll_at`` to the lease expiry and bumps ``lease_token``; every later write names
that token, so a process whose lease was taken over changes nothing. Each call is one transaction
(``seam.Seam``).
"""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from harvester.api.outcomes import TERMINAL_UPSTREAM, Completed, Gone
from harvester.config import DEFAULT_ACCOUNT
from harvester.db import connection, guard, store
from harvester.db.queries import NamedQueries
from harvester.db.seam import TERMINAL, Seam, row_count
from harvester.ports import ClaimedJob, Finish, Reschedule, StoreOutcome


class SQL(NamedQueries):
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


class PgJobStore(Seam):
    """``ports.JobStore`` for one account's jobs."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        statement_timeout_s: float | None = None,
        account: str = DEFAULT_ACCOUNT,
        region: str | None = None,
    ) -> None:
        super().__init__(pool, statement_timeout_s=statement_timeout_s, account=account)
        self.region = region  # normalize.default_region, for phones written without +

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
            TERMINAL,
        )
        return row_count(status) == 1

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
        return row_count(status) == 1

    async def make_auth_held_due(self) -> int:
        """This account's jobs held back by a refused credential: due now (a new token)."""
        return row_count(await self._execute("auth held", SQL.make_auth_held_jobs_due, self.account))

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
        return row_count(await self._execute("expire", SQL.expire_stale_jobs, give_up_after_s, batch))

    async def next_due_in(self) -> float | None:
        """Seconds until the earliest pending job is due (negative: overdue), None if none."""
        value = await self._fetchval("next due", SQL.select_next_due_in, self.account)
        return None if value is None else float(value)

    async def any_pending(self) -> bool:
        return bool(await self._fetchval("any pending", SQL.exists_pending_job, self.account))


async def any_pending_for(pool: asyncpg.Pool, accounts: Sequence[str]) -> bool:
    """Whether any job of these accounts is pending (``run --drain`` with several accounts)."""
    with guard("any pending"):
        async with connection(pool) as conn:
            return bool(await conn.fetchval(SQL.exists_pending_job_of, list(accounts)))
