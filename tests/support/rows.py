"""Reading single rows in tests: a query that must return one row, or the test fails saying so."""

from __future__ import annotations

from typing import Protocol

import asyncpg
import pytest


class FetchesRows(Protocol):
    """A connection, a pool, or a pooled connection."""

    async def fetchrow(self, query: str, *args: object) -> asyncpg.Record | None: ...


async def one(db: FetchesRows, sql: str, *args: object) -> asyncpg.Record:
    """The first row ``sql`` returns; the test fails, naming the query, when it returns none."""
    row = await db.fetchrow(sql, *args)
    if row is None:
        pytest.fail(f"expected a row, got none from: {sql} {args!r}")
    return row
