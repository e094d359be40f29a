"""The change feed's reading side: ``harvester.changes`` after a number, and the NOTIFY nudge.

Writers never call this module: the triggers of migrations 011 and 014 number each finishing
change (and each re-store that changes a job's rows) at commit, from one counter row whose lock
orders the commits, and send ``NOTIFY harvester_changes`` in the same transaction. A consumer keeps
the last number it processed and asks for everything after it (``changes_after``); numbers become
visible in order and have no gap except a declared one, so that is the whole protocol. The one
gap: the first change after a failover jumps past every number the old primary may have handed out
in commits the promotion lost, and ``harvester.change_jumps`` records it (``jumps``,
``undeclared_gaps``). The nudge only says "read now".
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from harvester.db import guard
from harvester.db.queries import NamedQueries

CHANNEL = "harvester_changes"


class SQL(NamedQueries):
    select_changes_after: str
    select_last_change: str
    select_last_change_before: str
    select_change_jumps: str


@dataclass(frozen=True, slots=True)
class Jump:
    """A declared gap: from ``last_before`` the numbers go on at ``first_change`` (a new timeline)."""

    timeline: int
    first_change: int
    last_before: int
    jumped_at: datetime


@dataclass(frozen=True, slots=True)
class Change:
    change_id: int
    job_id: UUID
    state: str
    job_type: str | None
    account: str
    reason: str
    changed_at: datetime


@dataclass(frozen=True, slots=True)
class Nudge:
    """A NOTIFY payload; fields this version does not know are kept in ``extra``."""

    change: int
    job_id: UUID
    state: str
    job_type: str | None
    account: str
    extra: dict[str, Any]


def parse_nudge(payload: str) -> Nudge:
    doc = json.loads(payload)
    known = {"change", "job_id", "state", "job_type", "account"}
    return Nudge(
        change=int(doc["change"]),
        job_id=UUID(doc["job_id"]),
        state=str(doc["state"]),
        job_type=doc.get("job_type"),
        account=str(doc.get("account", "default")),
        extra={k: v for k, v in doc.items() if k not in known},
    )


async def changes_after(db: asyncpg.Pool | asyncpg.Connection, after: int, limit: int = 1000) -> list[Change]:
    with guard("feed"):
        rows = await db.fetch(SQL.select_changes_after, after, limit)
    return [Change(**dict(row)) for row in rows]


async def last_change(db: asyncpg.Pool | asyncpg.Connection, before: datetime | None = None) -> int:
    with guard("feed"):
        if before is None:
            return int(await db.fetchval(SQL.select_last_change))
        return int(await db.fetchval(SQL.select_last_change_before, before))


async def jumps(db: asyncpg.Pool | asyncpg.Connection) -> list[Jump]:
    """Every declared gap, oldest first."""
    with guard("feed"):
        rows = await db.fetch(SQL.select_change_jumps)
    return [Jump(**dict(row)) for row in rows]


def undeclared_gaps(
    numbers: Sequence[int], declared: Sequence[Jump], start: int = 0
) -> list[tuple[int, int]]:
    """The gaps in ascending ``numbers`` (after ``start``) that no jump declares, as (after, next)."""
    firsts = {jump.first_change for jump in declared}
    gaps = []
    previous = start
    for number in numbers:
        if number != previous + 1 and number not in firsts:
            gaps.append((previous, number))
        previous = number
    return gaps
