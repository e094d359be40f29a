"""A session of its own on ``database.direct_dsn``, for ``harvester migrate``: the migrations'
advisory lock belongs to one server session, which a transaction pooler would not keep."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from harvester.config import DatabaseConfig
from harvester.db import migrate
from harvester.db.pool import DB_OR_SQL_ERRORS, describe_dsn
from harvester.errors import DatabaseError


@asynccontextmanager
async def direct_session(cfg: DatabaseConfig) -> AsyncIterator[asyncpg.Connection]:
    """A connection to ``database.direct_dsn``, closed on the way out; a failed connect is a
    ``DatabaseError`` naming the DSN without its password."""
    try:
        conn = await asyncpg.connect(cfg.direct_dsn, timeout=cfg.connect_timeout_s)
    except DB_OR_SQL_ERRORS as exc:
        raise DatabaseError(f"cannot connect to {describe_dsn(cfg.direct_dsn)}: {exc}") from exc
    try:
        yield conn
    finally:
        await conn.close()


async def apply_migrations(cfg: DatabaseConfig) -> list[str]:
    """Apply the pending migrations on a direct session; the versions applied now."""
    async with direct_session(cfg) as conn:
        return await migrate.apply(conn)
