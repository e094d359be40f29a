"""What every PostgreSQL side of a ``ports`` Protocol shares: one account's scope, one transaction a call.

``Seam`` holds the pool, the statement timeout and the account a store acts for; ``jobs``,
``listings`` build on it. Each call runs its statement in a transaction of its own with the
statement timeout set inside it (``db.transaction``, so it holds behind a pooler that refuses
startup settings), and driver errors leave only as ``DatabaseError`` (``db.guard``).
"""

from __future__ import annotations

from typing import Any

import asyncpg

from harvester.api.outcomes import TERMINAL_UPSTREAM
from harvester.config import DEFAULT_ACCOUNT
from harvester.db import guard, transaction

# The upstream ends as the statements take them (a text[] parameter).
TERMINAL = sorted(TERMINAL_UPSTREAM)


def row_count(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3``."""
    return int(status.rsplit(" ", 1)[-1])


class Seam:
    """One account's statements over one pool, each in its own transaction."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        statement_timeout_s: float | None = None,
        account: str = DEFAULT_ACCOUNT,
    ) -> None:
        self.pool = pool
        self.timeout_s = statement_timeout_s
        self.account = account

    async def _execute(self, what: str, sql: str, *args: Any) -> str:
        with guard(what):
            async with transaction(self.pool, self.timeout_s) as conn:
                return await conn.execute(sql, *args)

    async def _fetch(self, what: str, sql: str, *args: Any) -> list[asyncpg.Record]:
        with guard(what):
            async with transaction(self.pool, self.timeout_s) as conn:
                return await conn.fetch(sql, *args)

    async def _fetchval(self, what: str, sql: str, *args: Any) -> Any:
        with guard(what):
            async with transaction(self.pool, self.timeout_s) as conn:
                return await conn.fetchval(sql, *args)
