"""Storing many bodies without a lease: ``harvester import``'s batches and ``harvester reprocess``.

``store_results`` stores a batch of completed bodies (import) in one transaction: the jobs are
created if the queue lacks them and finished as ``harvested``, their rows written in one set-based
go (``rows.write_rows``); a batch PostgreSQL refuses is stored body by body (``store.store_result``)
so that only the offending ones become rejects. ``reprocess`` rebuilds the normalized rows of
harvested jobs from the stored raw bodies, in keyset pages, one transaction per page, with no API
request. ``region`` is ``normalize.default_region``, handed on to ``normalize``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from harvester.api.outcomes import Document
from harvester.config import DEFAULT_ACCOUNT
from harvester.db import REFUSED
from harvester.db.queries import NamedQueries
from harvester.db.rows import write_rows
from harvester.db.store import Target, prepare, reject, store_result, stored, writing
from harvester.errors import BodyError
from harvester.normalize import Normalized, normalize
from harvester.ports import StoreOutcome

REPROCESS_BATCH = 200


class SQL(NamedQueries):
    enqueue_jobs: str
    finish_job: str
    select_raw_results: str


@dataclass(frozen=True, slots=True)
class ReprocessReport:
    processed: int = 0
    rejected: int = 0
    missing: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "processed": self.processed,
            "rejected": self.rejected,
            "missing": self.missing,
            "problems": self.problems,
        }


async def store_results(
    pool: Target, bodies: Sequence[tuple[bytes, Document]], region: str | None = None
) -> list[StoreOutcome]:
    """Store many completed bodies ``(raw, doc)`` without a lease (import): one transaction for
    the whole batch.

    Bodies that do not parse are rejected one by one; if the database refuses the batch, each body
    is stored on its own so that only the offending ones end up rejected.
    """
    outcomes: list[StoreOutcome | None] = [None] * len(bodies)
    good: list[tuple[int, Normalized]] = []
    for index, (raw, doc) in enumerate(bodies):
        try:
            good.append((index, prepare(doc, None, region)))
        except BodyError as exc:
            outcomes[index] = await reject(
                pool, raw, job_id=None, reason=str(exc), fence=None, http_status=None, polls_spent=0
            )
    items = [item for _, item in good]
    try:
        async with writing(pool) as conn:
            await conn.execute(SQL.enqueue_jobs, [i.job_id for i in items], 0, "{}", DEFAULT_ACCOUNT)
            await conn.executemany(
                SQL.finish_job,
                [
                    (
                        i.job_id,
                        None,
                        "harvested",
                        i.result.job_type,
                        i.result.status,
                        None,
                        0,
                        None,
                        None,
                        None,
                    )
                    for i in items
                ],
            )
            await write_rows(conn, items, fetched=True)
    except REFUSED:
        for index, _ in good:
            raw, doc = bodies[index]
            outcomes[index] = await store_result(
                pool, raw, doc, http_status=None, polls_spent=0, region=region
            )
    else:
        for index, item in good:
            outcomes[index] = stored("harvested", item)
    return [outcome for outcome in outcomes if outcome is not None]


async def reprocess(
    pool: Target, job_ids: Sequence[UUID] | None, region: str | None = None
) -> ReprocessReport:
    """Rebuild normalized rows of harvested jobs from ``results.raw`` (None = all), no API calls.

    Bodies are re-normalized and written in batches, one transaction per batch; a batch the
    database refuses is retried body by body so one bad row cannot block the rest.
    """
    wanted = None if job_ids is None else sorted(set(job_ids))
    processed = rejected = 0
    seen: set[UUID] = set()
    problems: list[str] = []
    after: UUID | None = None
    while True:
        async with writing(pool) as conn:
            rows = await conn.fetch(SQL.select_raw_results, wanted, after, REPROCESS_BATCH)
        if not rows:
            break
        after = rows[-1]["job_id"]
        items: list[Normalized] = []
        for row in rows:
            seen.add(row["job_id"])
            try:
                items.append(normalize(json.loads(row["raw"]), region))
            except (BodyError, ValueError) as exc:
                rejected += 1
                problems.append(f"{row['job_id']}: {exc}")
        done, failed = await rewrite(pool, items)
        processed += done
        rejected += len(failed)
        problems.extend(failed)
    missing = [str(j) for j in (wanted or []) if j not in seen]
    return ReprocessReport(processed, rejected, missing, problems)


async def rewrite(pool: Target, items: Sequence[Normalized]) -> tuple[int, list[str]]:
    if not items:
        return 0, []
    try:
        async with writing(pool) as conn:
            await write_rows(conn, items, fetched=False)
        return len(items), []
    except REFUSED as exc:
        if len(items) == 1:
            return 0, [f"{items[0].job_id}: database refused: {type(exc).__name__}: {exc}"]
    done, failed = 0, []
    for item in items:  # the slow path only after a refusal, to find the culprit
        try:
            async with writing(pool) as conn:
                await write_rows(conn, [item], fetched=False)
            done += 1
        except REFUSED as exc:
            failed.append(f"{item.job_id}: database refused: {type(exc).__name__}: {exc}")
    return done, failed
