"""What ``harvester status`` (also ``--watch`` and ``--by-tag``) and ``harvester show`` read
beyond ``db.admin``'s counts: one job in detail, jobs per tag value, recent finishing rates and
the oldest pending job.

Plain SELECTs the reader role may run (``sql/queries/report.sql``), answered as plain values; what
they look like on screen is ``commands.report``'s.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from harvester.db import connection, guard
from harvester.db.queries import NamedQueries


class SQL(NamedQueries):
    select_job_detail: str
    select_finished_since: str
    select_oldest_pending_job: str
    count_jobs_by_tag: str


@dataclass(frozen=True, slots=True)
class Finished:
    """Jobs that finished in the last ``window_s`` seconds, and how much of it the feed covers
    (None: the feed is empty)."""

    window_s: float
    harvested: int
    finished: int
    span_s: float | None


async def job_detail(pool: asyncpg.Pool, job_id: UUID) -> dict[str, Any] | None:
    """One job's row with its result's timings and how many rows of each kind it stored."""
    with guard("show"):
        async with connection(pool) as conn:
            row = await conn.fetchrow(SQL.select_job_detail, job_id)
    return None if row is None else dict(row)


async def tag_groups(pool: asyncpg.Pool, key: str) -> dict[str | None, dict[str, int]]:
    """Jobs per state for each value of the tag ``key`` (None: jobs without it)."""
    with guard("status"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.count_jobs_by_tag, key)
    groups: dict[str | None, dict[str, int]] = {}
    for row in rows:
        groups.setdefault(row["value"], {})[row["state"]] = int(row["jobs"])
    return groups


async def recent(
    pool: asyncpg.Pool, windows_s: Sequence[float]
) -> tuple[list[Finished], tuple[UUID, float] | None]:
    """Jobs finished in each of the last ``windows_s``, and the oldest pending job with its age in
    seconds (None when nothing is pending)."""
    with guard("status"):
        async with connection(pool) as conn:
            rows = [(w, await conn.fetchrow(SQL.select_finished_since, w)) for w in windows_s]
            oldest = await conn.fetchrow(SQL.select_oldest_pending_job)
    finished = [
        Finished(
            window_s=w,
            harvested=int(r["harvested"]),
            finished=int(r["finished"]),
            span_s=None if r["span_s"] is None else float(r["span_s"]),
        )
        for w, r in rows
        if r is not None
    ]
    return finished, None if oldest is None else (oldest["job_id"], float(oldest["age_s"]))
