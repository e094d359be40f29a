"""Connections of their own, beside the stores: a direct session, the health check, the pool's end.

``direct`` opens one connection to a DSN (``database.direct_dsn``: the migrations' advisory lock
needs a session a pooler would not keep) and closes it on the way out, quietly when the server is
already gone; ``direct_session`` does the same for a command and turns a failed connect into a
``DatabaseError`` naming the server without its password. ``answers`` is the health check's
``SELECT 1`` through the pool. ``close_pool`` closes the pool at exit within a bound, and
terminates it when a database that went away would hold the exit up.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from harvester.config import DatabaseConfig
from harvester.db import migrate
from harvester.db.pool import DB_ERRORS, DB_OR_SQL_ERRORS, connection, describe_dsn
from harvester.errors import DatabaseError

CLOSE_TIMEOUT_S = 5.0


@asynccontextmanager
async def direct(dsn: str, *, timeout_s: float) -> AsyncIterator[asyncpg.Connection]:
    """One connection to ``dsn``, opened within ``timeout_s``; a failure to connect is one of
    ``DB_ERRORS``, as a failure to close is not (it is swallowed)."""
    conn: asyncpg.Connection = await asyncpg.connect(dsn, timeout=timeout_s)
    try:
        yield conn
    finally:
        with contextlib.suppress(*DB_ERRORS):
            await conn.close(timeout=CLOSE_TIMEOUT_S)


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


async def answers(pool: asyncpg.Pool) -> bool:
    """Whether the database answers ``SELECT 1`` through the pool (the caller bounds the wait)."""
    async with connection(pool) as conn:
        return bool(await conn.fetchval("SELECT 1") == 1)


async def close_pool(pool: asyncpg.Pool, timeout_s: float) -> None:
    """Close the pool; a database that went away cannot hold up the exit."""
    try:
        await asyncio.wait_for(pool.close(), timeout_s)
    except DB_ERRORS:  # TimeoutError is one of them
        pool.terminate()
