"""The queue as the commands and the health server see it: enqueue, requeue, and the counts they read.

``enqueue`` is the producer's write (``harvester enqueue``, the demo), ``requeue`` puts finished
jobs back; the reads (``status``, ``jobs_by_account``, ``pending_by_account``,
``discovery_status``) feed ``harvester status`` and the job gauges the health server exports.
None of them holds a lease; each takes a connection of its own, and driver errors leave only as
``DatabaseError``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from harvester.config import DEFAULT_ACCOUNT
from harvester.db import connection, guard
from harvester.db.queries import NamedQueries
from harvester.db.seam import row_count


class SQL(NamedQueries):
    enqueue_jobs: str
    count_jobs_by_state: str
    count_jobs_by_account: str
    select_pending_by_account: str
    select_oldest_pending_age: str
    select_recent_errors: str
    requeue_jobs_by_id: str
    requeue_jobs_by_state: str
    select_discovery_status: str


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
    return row_count(status)


async def jobs_by_account(pool: asyncpg.Pool) -> dict[str, dict[str, int]]:
    """{account: {state: jobs}} over the whole queue, for ``harvester status``."""
    with guard("status"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.count_jobs_by_account)
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        out.setdefault(row["account"], {})[row["state"]] = int(row["jobs"])
    return out


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
                return row_count(await conn.execute(SQL.requeue_jobs_by_id, list(job_ids), state))
            if state is not None:
                return row_count(await conn.execute(SQL.requeue_jobs_by_state, state))
    return 0
