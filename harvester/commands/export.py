"""``harvester export VIEW``: an output view or table as CSV or JSON Lines, streamed with COPY.

The rows never pass through Python objects: PostgreSQL writes them (``COPY (query) TO STDOUT``,
asyncpg's ``copy_from_query``) and the bytes go straight to the file or stdout, so memory stays
flat however many rows there are. The export runs in one read-only REPEATABLE READ transaction:
the rows and the ``last_change`` it reports come from the same snapshot, so the next
``--since LAST_CHANGE`` starts exactly where this one ended. Times are written in UTC. An export
is bounded by ``timeout_s`` (a day by default), not by ``database.statement_timeout_s``, which
is sized for the daemon's short statements.

CSV is RFC 4180 as PostgreSQL writes it (a header row, fields quoted when needed, UTF-8); arrays
appear in PostgreSQL's ``{a,b}`` form and jsonb as JSON text. JSON Lines has one object per row
with real arrays and objects. ``bom`` puts a UTF-8 byte order mark first, for Excel, which
otherwise reads a UTF-8 CSV as the local legacy code page.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

import asyncpg

from harvester.db import feed, guard
from harvester.db.queries import NamedQueries
from harvester.errors import HarvesterError, UsageError

BOM = "\ufeff".encode()
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


@dataclass(frozen=True, slots=True)
class Since:
    """``--since``: a change number, or a time (converted to the last change number before it)."""

    change: int | None = None
    time: datetime | None = None


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


def parse_since(text: str | None) -> Since:
    """``--since``: a change number (digits) or an ISO 8601 time (no offset: UTC)."""
    if text is None:
        return Since()
    value = text.strip()
    if value.isdigit():
        return Since(change=int(value))
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise UsageError(
            f"--since: expected a change number or an ISO 8601 time, got {text[:80]!r}"
        ) from None
    return Since(time=when if when.tzinfo else when.replace(tzinfo=UTC))


def statement(view: str, fmt: str) -> str:
    query = VIEWS[view]
    if fmt == "jsonl":
        return SQL.export_as_json_lines.replace("{query}", query)
    return query


Sink = Callable[[bytes], Coroutine[Any, Any, None]]


async def export(
    pool: asyncpg.Pool,
    view: str,
    *,
    fmt: str,
    sink: Sink,
    tags: Mapping[str, str] | None = None,
    since: Since | None = None,
    timeout_s: float = 86_400.0,
) -> Exported:
    """Stream ``view`` into ``sink``; returns the row count and the snapshot's last change."""
    if view not in VIEWS:
        raise HarvesterError(f"unknown export view {view!r}")
    options = CSV_COPY if fmt == "csv" else JSONL_COPY
    since = since or Since()
    with guard("export"):
        async with pool.acquire() as proxy:
            conn: asyncpg.Connection = proxy  # type: ignore[assignment]
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                await conn.execute(SQL.set_export_time_zone)
                last = await feed.last_change(conn)
                after = since.change
                if since.time is not None:
                    after = await feed.last_change(conn, since.time)
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


class StreamSink:
    """Writes COPY's chunks to a binary stream; remembers when the reader went away (``export … |
    head``), so that the COPY this aborts is not mistaken for a database problem."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.closed = False

    async def __call__(self, chunk: bytes) -> None:
        try:
            self.stream.write(chunk)
        except BrokenPipeError:
            self.closed = True
            raise


class FileTarget:
    """``--out FILE``: written to a temporary file beside it and renamed over it on success, so a
    failed export never leaves a half-written file where a complete one was."""

    def __init__(self, path: Path) -> None:
        self.path = path
        directory = path.parent if str(path.parent) else Path(".")
        try:
            fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=directory)
        except OSError as exc:
            raise HarvesterError(f"--out: cannot write in {directory}: {exc.strerror or exc}") from None
        self.tmp = Path(name)
        self.stream = os.fdopen(fd, "wb")

    def commit(self) -> None:
        self.stream.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        self.stream.close()
        self.tmp.unlink(missing_ok=True)
