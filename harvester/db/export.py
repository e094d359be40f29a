"""The COPY behind ``harvester export``: an output view or table streamed out as CSV or JSON Lines.

The rows never pass through Python objects: PostgreSQL writes them (``COPY (query) TO STDOUT``)
and each chunk of bytes goes to the caller's sink, so memory stays flat however many rows there
are. The export runs in one read-only REPEATABLE READ transaction: the rows and the
``last_change`` it reports come from the same snapshot, so the next ``--since LAST_CHANGE``
starts exactly where this one ended. Times are written in UTC. An export is bounded by
``timeout_s`` (a day by default), not by ``database.statement_timeout_s``, which is sized for the
daemon's short statements.

CSV is RFC 4180 as PostgreSQL writes it (a header row, fields quoted when needed, UTF-8); arrays
appear in PostgreSQL's ``{a,b}`` form and jsonb as JSON text. JSON Lines has one object per row
with real arrays and objects.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from harvester.db import feed, guard
from harvester.db.queries import NamedQueries
from harvester.errors import HarvesterError

# The JSON Lines COPY: no delimiter or quote character that JSON text can contain unescaped, so
# PostgreSQL's CSV writer passes every line through untouched (its text format would double
# every backslash).
JSONL_COPY: dict[str, Any] = {"format": "csv", "delimiter": "\x02", "quote": "\x01"}
CSV_COPY: dict[str, Any] = {"format": "csv", "header": True}


class SQL(NamedQueries):
    export_leads: str
    export_site_contacts: str
    export_latest_sites: str
    export_team_members: str
    export_businesses: str
    export_jobs: str
    export_changes: str
    export_as_json_lines: str
    set_export_time_zone: str


VIEWS: Mapping[str, str] = {
    "leads": SQL.export_leads,
    "site_contacts": SQL.export_site_contacts,
    "latest_sites": SQL.export_latest_sites,
    "businesses": SQL.export_businesses,
    "team_members": SQL.export_team_members,
    "jobs": SQL.export_jobs,
    "changes": SQL.export_changes,
}
FORMATS = ("csv", "jsonl")

Sink = Callable[[bytes], Coroutine[Any, Any, None]]


@dataclass(frozen=True, slots=True)
class Exported:
    view: str
    rows: int
    last_change: int
    since_change: int | None

    def as_dict(self) -> dict[str, object]:
        return {
            "view": self.view,
            "rows": self.rows,
            "last_change": self.last_change,
            "since_change": self.since_change,
        }


def statement(view: str, fmt: str) -> str:
    query = VIEWS[view]
    if fmt == "jsonl":
        return SQL.export_as_json_lines.replace("{query}", query)
    return query


async def copy_view(
    pool: asyncpg.Pool,
    view: str,
    *,
    fmt: str,
    sink: Sink,
    tags: Mapping[str, str] | None = None,
    since_change: int | None = None,
    since_time: datetime | None = None,
    timeout_s: float = 86_400.0,
) -> Exported:
    """Stream ``view`` into ``sink``: only jobs changed after change ``since_change``, or after the
    last change before ``since_time``; returns the row count and the snapshot's last change."""
    if view not in VIEWS:
        raise HarvesterError(f"unknown export view {view!r}")
    options = CSV_COPY if fmt == "csv" else JSONL_COPY
    with guard("export"):
        async with pool.acquire() as proxy:
            conn: asyncpg.Connection = proxy  # type: ignore[assignment]
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(SQL.set_export_time_zone)
                last = await feed.last_change(conn)
                after = since_change
                if since_time is not None:
                    after = await feed.last_change(conn, since_time)
                status = await conn.copy_from_query(
                    statement(view, fmt),
                    json.dumps(dict(tags or {})),
                    after,
                    output=sink,
                    timeout=timeout_s,
                    format=options["format"],
                    header=options.get("header"),
                    delimiter=options.get("delimiter"),
                    quote=options.get("quote"),
                )
    return Exported(view, int(status.rsplit(" ", 1)[-1]), last, after)
