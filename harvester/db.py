"""Opening the asyncpg pool, and the driver errors that mean "the database is not there".

The pool works through a connection pooler as well as directly: PgBouncer in transaction mode hands
each transaction to any server connection, so the pool keeps no named prepared statements (asyncpg's
statement cache) and sends no startup parameter a stock PgBouncer refuses (only
``application_name``, which it tracks). The server-side statement timeout is therefore not a
startup parameter but set per transaction. What needs a session of its own (the migrations'
advisory lock, LISTEN) connects to ``database.direct_dsn`` instead.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import asyncpg

from harvester.config import DatabaseConfig
from harvester.errors import DatabaseError

DB_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.AdminShutdownError,
    # A connection the server dropped mid-statement can fail the next statement with "cannot
    # switch to state N; another operation is in progress" instead of a connection error; during
    # a PostgreSQL restart this ended the whole daemon (an error nobody caught in discovery).
    asyncpg.exceptions._base.InternalClientError,
    OSError,
    TimeoutError,
)
# Anything a statement can raise short of a bug: the database away or refusing the statement.
DB_OR_SQL_ERRORS: tuple[type[BaseException], ...] = (*DB_ERRORS, asyncpg.PostgresError)
CONNECT_ERRORS: tuple[type[BaseException], ...] = (
    *DB_ERRORS,
    asyncpg.InvalidCatalogNameError,
    asyncpg.InvalidAuthorizationSpecificationError,
)


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" not in dsn:
        return dsn
    scheme, _, rest = dsn.partition("://")
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{location}"


async def open_pool(cfg: DatabaseConfig, *, max_size: int | None = None) -> asyncpg.Pool:
    try:
        pool = await asyncpg.create_pool(
            cfg.dsn,
            min_size=min(cfg.pool_min, max_size or cfg.pool_min),
            max_size=max_size or cfg.pool_max,
            timeout=cfg.connect_timeout_s,
            command_timeout=cfg.statement_timeout_s,
            # Measured on a direct connection: a claim takes ~0.15 ms longer without the cache and
            # storing one result ~1.4 ms longer, at most a hundred of each a minute under the rate
            # limit. A cache that breaks every statement behind a transaction pooler is not worth
            # a setting one has to know about.
            statement_cache_size=0,
            server_settings={"application_name": "harvester"},
        )
    except CONNECT_ERRORS as exc:
        raise DatabaseError(
            f"cannot connect to {describe_dsn(cfg.dsn)}: {type(exc).__name__}: {exc}"
        ) from exc
    assert pool is not None
    return pool


# PostgreSQL refusing the data itself (bad value, limit, constraint): a body becomes a reject.
REFUSED: tuple[type[BaseException], ...] = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)
_NOT_MIGRATED: tuple[type[BaseException], ...] = (
    asyncpg.UndefinedTableError,
    asyncpg.InvalidSchemaNameError,
    asyncpg.UndefinedFunctionError,
)


@contextmanager
def guard(what: str, *, refusals: bool = False) -> Iterator[None]:
    """The one place driver errors become ``DatabaseError``: around every statement of the seam.

    With ``refusals`` a refusal of the data itself (``REFUSED``) passes through unchanged, for the
    caller that turns it into a reject; everything else the driver raises means the database is
    away or unwell, and the caller retries later. A missing schema names the fix.
    """
    try:
        yield
    except DB_ERRORS as exc:
        raise DatabaseError(f"{what}: database unavailable: {type(exc).__name__}: {exc}") from exc
    except asyncpg.PostgresError as exc:
        if refusals and isinstance(exc, REFUSED):
            raise
        hint = " (run `harvester migrate` first)" if isinstance(exc, _NOT_MIGRATED) else ""
        raise DatabaseError(f"{what}: database error: {type(exc).__name__}: {exc}{hint}") from exc


@asynccontextmanager
async def transaction(
    target: asyncpg.Pool | asyncpg.Connection, timeout_s: float | None
) -> AsyncIterator[asyncpg.Connection]:
    """A connection in a transaction whose statements time out after ``timeout_s``.

    The timeout is set per transaction (``SET LOCAL``), not per session: a pooler in transaction
    mode (PgBouncer) hands each transaction to any server connection and refuses it as a startup
    parameter, so this is the one form that holds everywhere. Errors are the caller's to
    ``guard``.
    """
    if isinstance(target, asyncpg.Pool):
        async with target.acquire() as proxy:
            conn: asyncpg.Connection = proxy  # type: ignore[assignment]
            async with conn.transaction():
                await _set_timeout(conn, timeout_s)
                yield conn
        return
    async with target.transaction():
        await _set_timeout(target, timeout_s)
        yield target


async def _set_timeout(conn: asyncpg.Connection, timeout_s: float | None) -> None:
    if timeout_s is not None:
        await conn.execute(f"SET LOCAL statement_timeout = {int(timeout_s * 1000)}")
