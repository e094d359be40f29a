"""Opening the asyncpg pool, and the driver errors that mean "the database is not there"."""

from __future__ import annotations

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
    *DB_ERRORS, asyncpg.InvalidCatalogNameError, asyncpg.InvalidAuthorizationSpecificationError,
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
            server_settings={
                "application_name": "harvester",
                "statement_timeout": str(int(cfg.statement_timeout_s * 1000)),
            },
        )
    except CONNECT_ERRORS as exc:
        raise DatabaseError(
            f"cannot connect to {describe_dsn(cfg.dsn)}: {type(exc).__name__}: {exc}"
        ) from exc
    assert pool is not None
    return pool
