"""What ``harvester demo`` reads for its summary: rows per table, a few sample leads and
businesses, and how many raw phone texts got an E.164 form (``sql/queries/demo.sql``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg

from harvester.db import connection, guard
from harvester.db.queries import NamedQueries
from harvester.db.rows import ROW_TABLES

TABLES = ("jobs", *ROW_TABLES, "rejects")


class SQL(NamedQueries):
    count_rows_per_table: str
    select_sample_leads: str
    select_sample_businesses: str
    count_raw_phones: str


async def rows_per_table(pool: asyncpg.Pool, tables: Sequence[str] = TABLES) -> dict[str, int]:
    with guard("demo"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.count_rows_per_table, list(tables))
    return {row["table_name"]: int(row["rows"]) for row in rows}


async def sample_leads(pool: asyncpg.Pool, limit: int = 3) -> list[dict[str, Any]]:
    """The leads with the best ICP fit."""
    with guard("demo"):
        async with connection(pool) as conn:
            return [dict(row) for row in await conn.fetch(SQL.select_sample_leads, limit)]


async def sample_businesses(pool: asyncpg.Pool, limit: int = 3) -> list[dict[str, Any]]:
    """The businesses with the most reviews."""
    with guard("demo"):
        async with connection(pool) as conn:
            return [dict(row) for row in await conn.fetch(SQL.select_sample_businesses, limit)]


async def raw_phones(pool: asyncpg.Pool) -> tuple[int, int]:
    """Phones given as raw text by the API, and how many of them have an E.164 form."""
    with guard("demo"):
        async with connection(pool) as conn:
            rows = await conn.fetch(SQL.count_raw_phones)
    return sum(int(r[0]) for r in rows), sum(int(r[1]) for r in rows)
