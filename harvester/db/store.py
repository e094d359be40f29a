"""Storing one result body: the job's final state, its results row and normalized rows, in one go.

``store_result`` (HTTP 200) normalizes a parsed body, then in one transaction moves the job to
``harvested`` and writes ``results`` plus the child rows (``rows.write_rows``). With a ``Fence``
(the daemon's path, ``jobs.PgJobStore``) the state change names the claimer's lease token, and a
lost lease rolls everything back ("fenced"); without one (import) a job the queue lacks is created.
A body that cannot be parsed, belongs to another job, or that PostgreSQL refuses is kept byte for
byte in ``rejects`` and the job becomes ``rejected``, in a transaction of its own. ``store_failure``
(HTTP 410) records ``failed`` or ``cancelled``. Batches without a lease (import, reprocess) are
``bulk``'s. ``region`` is ``normalize.default_region``, handed on to ``normalize``. A database
that cannot be reached raises ``DatabaseError``; it is never a reject.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from uuid import UUID

import asyncpg

from harvester.api.outcomes import CANCELLED_UPSTREAM, Document, Unreadable
from harvester.config import DEFAULT_ACCOUNT
from harvester.db import REFUSED, guard, transaction
from harvester.db.queries import NamedQueries
from harvester.db.rows import write_rows
from harvester.errors import BodyError
from harvester.normalize import Normalized, clean_text, document, failure_hint, normalize
from harvester.ports import StoreOutcome

MAX_REASON = 2000


@dataclass(frozen=True, slots=True)
class Fence:
    """The claimer's proof of ownership of a jobs row."""

    job_id: UUID
    lease_token: int


class Fenced(Exception):
    """Internal: the lease was lost, roll the transaction back."""


Target = asyncpg.Pool | asyncpg.Connection


class SQL(NamedQueries):
    finish_job: str
    enqueue_jobs: str
    insert_reject: str


@asynccontextmanager
async def writing(target: Target, timeout_s: float | None = None) -> AsyncIterator[asyncpg.Connection]:
    """One transaction on ``target`` (a pool or a connection), driver errors guarded.

    A refusal of the data itself (``REFUSED``) passes through for the caller to turn into a
    reject; anything else is a ``DatabaseError``.
    """
    with guard("store", refusals=True):
        async with transaction(target, timeout_s) as conn:
            yield conn


def short(reason: str) -> str:
    reason = clean_text(reason)
    return reason if len(reason) <= MAX_REASON else reason[:MAX_REASON] + "…"


async def finish_job(
    conn: asyncpg.Connection,
    job_id: UUID,
    fence: Fence | None,
    *,
    state: str,
    job_type: str | None,
    upstream_status: str | None,
    http_status: int | None,
    polls_spent: int,
    error: str | None,
) -> None:
    """The job's final state; raises Fenced when the fence no longer holds.

    Without a fence (import) a job the queue does not know yet is created first.
    """
    if fence is None:
        await conn.execute(SQL.enqueue_jobs, [job_id], 0, "{}", DEFAULT_ACCOUNT)
    status = await conn.execute(
        SQL.finish_job,
        job_id,
        None if fence is None else fence.lease_token,
        state,
        job_type,
        upstream_status,
        http_status,
        polls_spent,
        error,
        None,
        None,
    )
    if fence is not None and status.endswith(" 0"):
        raise Fenced


async def reject(
    target: Target,
    raw: bytes,
    *,
    job_id: UUID | None,
    reason: str,
    fence: Fence | None,
    http_status: int | None,
    polls_spent: int,
    state: str = "rejected",
    timeout_s: float | None = None,
) -> StoreOutcome:
    """Keep the exact bytes in ``rejects`` and mark the job; one transaction of its own."""
    reason = short(reason)
    try:
        async with writing(target, timeout_s) as conn:
            if job_id is not None:
                await finish_job(
                    conn,
                    job_id,
                    fence,
                    state=state,
                    job_type=None,
                    upstream_status=None,
                    http_status=http_status,
                    polls_spent=polls_spent,
                    error=reason,
                )
            await conn.execute(SQL.insert_reject, job_id, reason, raw)
    except Fenced:
        return StoreOutcome("fenced", job_id, "lease lost")
    return StoreOutcome(state, job_id, reason)


def stored(kind: str, item: Normalized, reason: str | None = None) -> StoreOutcome:
    """The outcome of a body that was written, with what the worker learns from it."""
    r = item.result
    return StoreOutcome(
        kind,
        item.job_id,
        reason,
        job_type=r.job_type,
        processing_s=r.processing_time_seconds,
        completed_at=r.completed_at,
    )


def failure_state(status: str | None) -> str:
    """A 410 body's ``status`` decides between cancelled and failed (failed when unclear)."""
    return "cancelled" if (status or "").casefold() in CANCELLED_UPSTREAM else "failed"


def prepare(doc: Document, expected: UUID | None, region: str | None = None) -> Normalized:
    """Rows from a body's parsed JSON (``classify.read_body``); ``BodyError`` when unusable."""
    if isinstance(doc, Unreadable):
        raise BodyError(doc.reason)
    item = normalize(document(doc), region)
    if expected is not None and item.job_id != expected:
        raise BodyError(f"body is for job {item.job_id}, not {expected}")
    return item


async def store_result(
    pool_or_conn: Target,
    raw: bytes,
    doc: Document,
    *,
    expected_job_id: UUID | None = None,
    fence: Fence | None = None,
    http_status: int | None = 200,
    polls_spent: int = 1,
    statement_timeout_s: float | None = None,
    region: str | None = None,
) -> StoreOutcome:
    """Store a completed job's body (HTTP 200): harvested, rejected or fenced.

    ``doc`` is ``raw`` already parsed; ``raw`` is what a reject keeps. ``http_status=None``
    (import) leaves the job's last HTTP status as it was.
    """
    expected = expected_job_id or (fence.job_id if fence is not None else None)
    try:
        item = prepare(doc, expected, region)
    except BodyError as exc:
        return await reject(
            pool_or_conn,
            raw,
            job_id=expected,
            reason=str(exc),
            fence=fence,
            http_status=http_status,
            polls_spent=polls_spent,
            timeout_s=statement_timeout_s,
        )
    r = item.result
    try:
        async with writing(pool_or_conn, statement_timeout_s) as conn:
            await finish_job(
                conn,
                item.job_id,
                fence,
                state="harvested",
                job_type=r.job_type,
                upstream_status=r.status,
                http_status=http_status,
                polls_spent=polls_spent,
                error=None,
            )
            await write_rows(conn, [item], fetched=True)
    except Fenced:
        return StoreOutcome("fenced", item.job_id, "lease lost")
    except REFUSED as exc:
        reason = f"database refused the body: {type(exc).__name__}: {exc}"
        return await reject(
            pool_or_conn,
            raw,
            job_id=item.job_id,
            reason=reason,
            fence=fence,
            http_status=http_status,
            polls_spent=polls_spent,
            timeout_s=statement_timeout_s,
        )
    return stored("harvested", item)


async def store_failure(
    pool_or_conn: Target,
    raw: bytes,
    doc: Document,
    *,
    job_id: UUID,
    fence: Fence | None = None,
    http_status: int | None = 410,
    polls_spent: int = 1,
    statement_timeout_s: float | None = None,
) -> StoreOutcome:
    """Record a failed or cancelled job (HTTP 410), keeping its body when it parses.

    ``doc`` is ``raw`` already parsed; ``raw`` is what a reject keeps. ``http_status=None``
    (import) leaves the job's last HTTP status as it was.
    """
    source = "imported body" if http_status is None else f"HTTP {http_status}"
    try:
        item = prepare(doc, job_id)
    except BodyError as exc:
        status, message = failure_hint(doc)
        state = failure_state(status)
        reason = f"{source}; body not usable: {exc}"
        if message:
            reason = f"{message} ({reason})"
        return await reject(
            pool_or_conn,
            raw,
            job_id=job_id,
            reason=reason,
            fence=fence,
            http_status=http_status,
            polls_spent=polls_spent,
            state=state,
            timeout_s=statement_timeout_s,
        )
    r = item.result
    state = failure_state(r.status)
    error = r.error_message or r.message
    # The failure body is kept whole; a failed job has no normalized rows.
    bare = Normalized(result=r)
    try:
        async with writing(pool_or_conn, statement_timeout_s) as conn:
            await finish_job(
                conn,
                job_id,
                fence,
                state=state,
                job_type=r.job_type,
                upstream_status=r.status,
                http_status=http_status,
                polls_spent=polls_spent,
                error=error,
            )
            await write_rows(conn, [bare], fetched=True)
    except Fenced:
        return StoreOutcome("fenced", job_id, "lease lost")
    except REFUSED as exc:
        reason = f"{source}; database refused the body: {type(exc).__name__}: {exc}"
        return await reject(
            pool_or_conn,
            raw,
            job_id=job_id,
            reason=reason,
            fence=fence,
            http_status=http_status,
            polls_spent=polls_spent,
            state="failed",
            timeout_s=statement_timeout_s,
        )
    return stored(state, bare, error)
