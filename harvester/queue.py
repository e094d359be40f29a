"""The jobs table: enqueue, claim under a lease, reschedule, finish, report.

Claiming is one ``FOR UPDATE SKIP LOCKED`` statement. A claim moves the job's ``next_poll_at`` to the
lease expiry and bumps ``lease_token``; every later write names that token, so a process whose lease
was taken over (it stalled, the lease ran out, another process claimed the job) changes nothing.
Storing a result and the job's final state is ``store``'s business; this module moves everything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from harvester.db import DB_ERRORS
from harvester.errors import DatabaseError
from harvester.queries import query


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
class QueueStatus:
    counts: dict[str, int]
    polls: dict[str, int]
    oldest_pending_age_s: float | None
    recent_errors: list[dict[str, Any]]


def _db_error(exc: BaseException) -> DatabaseError:
    return DatabaseError(f"database unavailable: {type(exc).__name__}: {exc}")


async def enqueue(
    pool: asyncpg.Pool, job_ids: Sequence[UUID], *, priority: int = 0,
    tags: Mapping[str, str] | None = None,
) -> int:
    """Insert new job IDs; existing ones are left alone. Returns how many were new."""
    try:
        status = await pool.execute(
            query("enqueue_jobs"), list(job_ids), priority, json.dumps(dict(tags or {}))
        )
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return int(status.rsplit(" ", 1)[-1])


async def claim(pool: asyncpg.Pool, owner: str, limit: int, lease_s: float) -> list[ClaimedJob]:
    if limit <= 0:
        return []
    try:
        rows = await pool.fetch(query("claim_jobs"), owner, limit, lease_s)
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return [
        ClaimedJob(
            job_id=row["job_id"], lease_token=row["lease_token"], job_type=row["job_type"],
            upstream_status=row["upstream_status"], polls=row["polls"],
            not_found_count=row["not_found_count"], fault_count=row["fault_count"],
            age_s=row["age_s"],
        )
        for row in rows
    ]


async def extend_leases(pool: asyncpg.Pool, owner: str, job_ids: Sequence[UUID], lease_s: float) -> None:
    if not job_ids:
        return
    try:
        await pool.execute(query("extend_leases"), owner, list(job_ids), lease_s)
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc


async def reschedule(
    pool: asyncpg.Pool, job: ClaimedJob, *, delay_s: float, polls_spent: int,
    http_status: int | None, upstream_status: str | None, job_type: str | None,
    not_found_count: int, fault_count: int, error: str | None,
) -> bool:
    """Keep the job pending with a new due time. False when the lease was lost."""
    try:
        status = await pool.execute(
            query("reschedule_job"), job.job_id, job.lease_token, delay_s, polls_spent,
            http_status, upstream_status, job_type, not_found_count, fault_count, error,
        )
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return status.endswith(" 1")


async def finish(
    pool: asyncpg.Pool, job: ClaimedJob, *, state: str, polls_spent: int,
    http_status: int | None, not_found_count: int, fault_count: int, error: str | None,
) -> bool:
    try:
        status = await pool.execute(
            query("finish_job"), job.job_id, job.lease_token, state, polls_spent, http_status,
            not_found_count, fault_count, error,
        )
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return status.endswith(" 1")


async def release(pool: asyncpg.Pool, owner: str, job_ids: Sequence[UUID], delay_s: float = 0.0) -> None:
    if not job_ids:
        return
    try:
        await pool.execute(query("release_jobs"), owner, list(job_ids), delay_s)
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc


async def expire(pool: asyncpg.Pool, give_up_after_s: float) -> int:
    try:
        status = await pool.execute(query("expire_jobs"), give_up_after_s)
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return int(status.rsplit(" ", 1)[-1])


async def next_due_in(pool: asyncpg.Pool) -> float | None:
    """Seconds until the earliest pending job is due (negative: overdue), None if none pending."""
    try:
        value = await pool.fetchval(query("next_due_in"))
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return None if value is None else float(value)


async def any_pending(pool: asyncpg.Pool) -> bool:
    try:
        return bool(await pool.fetchval(query("any_pending")))
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc


async def status(pool: asyncpg.Pool, recent: int = 5) -> QueueStatus:
    try:
        rows = await pool.fetch(query("count_jobs_by_state"))
        oldest = await pool.fetchval(query("oldest_pending_age"))
        errors = await pool.fetch(query("recent_errors"), recent)
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return QueueStatus(
        counts={row["state"]: int(row["jobs"]) for row in rows},
        polls={row["state"]: int(row["polls"]) for row in rows},
        oldest_pending_age_s=None if oldest is None else float(oldest),
        recent_errors=[
            {
                "job_id": str(row["job_id"]), "state": row["state"],
                "http_status": row["last_http_status"], "error": row["last_error"],
                "at": row["updated_at"].isoformat(),
            }
            for row in errors
        ],
    )


async def requeue(pool: asyncpg.Pool, job_ids: Sequence[UUID], state: str | None) -> int:
    try:
        if job_ids:
            result = await pool.execute(query("requeue_by_ids"), list(job_ids), state)
        elif state is not None:
            result = await pool.execute(query("requeue_by_state"), state)
        else:
            return 0
    except DB_ERRORS as exc:
        raise _db_error(exc) from exc
    return int(result.rsplit(" ", 1)[-1])
