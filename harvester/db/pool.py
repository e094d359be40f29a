"""Opening the asyncpg pool, the driver errors that mean "the database is not there", and leaving
a node that can no longer take writes.

The pool works through a connection pooler as well as directly: PgBouncer in transaction mode hands
each transaction to any server connection, so the pool keeps no named prepared statements (asyncpg's
statement cache) and sends no startup parameter a stock PgBouncer refuses (only
``application_name``, which it tracks). The server-side statement timeout is therefore not a
startup parameter but set per transaction. What needs a session of its own (the migrations'
advisory lock, LISTEN) connects to ``database.direct_dsn`` instead.

In a cluster the DSN names every host with ``target_session_attrs=read-write``; asyncpg checks that
only when it opens a connection. A node that was primary and is not any more (promoted away, behind
a virtual IP or a proxy) answers writes with SQLSTATE 25006 for as long as the connection lives, and
a node going away says 57P01-57P03. Any of them expires every pool of the process (``node_lost``):
each connection is closed when next released and the next one is opened afresh, on whichever host
is now the primary. TCP keepalives and a user timeout on every connection (``tune_socket``,
``database.keepalive_s``) notice a peer that vanished without a reset.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import socket
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any, TypeAlias

import asyncpg

from harvester import logs
from harvester.config import DatabaseConfig
from harvester.errors import DatabaseError

log = logs.get("harvester.db")

# The driver's handles, named here so that the rest of harvester can annotate what it passes along
# without importing the driver: only this package speaks to PostgreSQL.
Pool: TypeAlias = asyncpg.Pool
Connection: TypeAlias = asyncpg.Connection

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


# SQLSTATEs that say "this node cannot serve us now": read-only (a standby, or a demoted primary),
# shutting down, crashed, not accepting connections yet, or the connection itself is gone.
NODE_LOST_STATES = frozenset({"25006", "57P01", "57P02", "57P03", "08000", "08003", "08006"})
KEEPALIVE_PROBES = 3
_pools: set[asyncpg.Pool] = set()  # every open pool of the process (a Pool takes no weak reference)
_expiring: set[asyncio.Task[None]] = set()
_reported: dict[str, float] = {}  # node or error kind -> when last logged (monotonic)
REPORT_EVERY_S = 30.0


def tune_socket(sock: Any, keepalive_s: float) -> None:
    """TCP keepalives and a user timeout on one socket: an idle connection whose peer vanished is
    noticed within 2.5 x ``keepalive_s``, one with unacknowledged data within 3 x. A no-op where
    the options do not exist (a unix socket has no peer to lose)."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    idle = max(1, round(keepalive_s))
    options = [(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)]
    for name, value in (
        ("TCP_KEEPIDLE", idle),
        ("TCP_KEEPINTVL", max(1, round(keepalive_s / 2))),
        ("TCP_KEEPCNT", KEEPALIVE_PROBES),
        ("TCP_USER_TIMEOUT", int(keepalive_s * KEEPALIVE_PROBES * 1000)),
    ):
        if hasattr(socket, name):
            options.append((socket.IPPROTO_TCP, getattr(socket, name), value))
    for level, option, value in options:
        with contextlib.suppress(OSError):
            sock.setsockopt(level, option, value)


def tune_connection(conn: asyncpg.Connection, keepalive_s: float) -> None:
    """``tune_socket`` on a connection's socket (asyncpg exposes it only on its transport)."""
    transport = getattr(conn, "_transport", None)
    tune_socket(transport.get_extra_info("socket") if transport is not None else None, keepalive_s)


def node_lost(exc: BaseException) -> bool:
    """Whether ``exc`` says the node cannot serve us any more (see ``NODE_LOST_STATES``)."""
    return getattr(exc, "sqlstate", None) in NODE_LOST_STATES or isinstance(
        exc, asyncpg.ConnectionDoesNotExistError
    )


def leave_node(exc: BaseException, node: str | None = None) -> None:
    """Expire every pool so that the next connection goes to whichever host is primary now, and
    say so (once per ``REPORT_EVERY_S`` per node)."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return
    for pool in list(_pools):
        if pool.is_closing():
            _pools.discard(pool)
            continue
        task = loop.create_task(pool.expire_connections())
        _expiring.add(task)
        task.add_done_callback(_expiring.discard)
    sqlstate = getattr(exc, "sqlstate", None)
    key = str(sqlstate)
    now = time.monotonic()
    if now - _reported.get(key, -REPORT_EVERY_S) < REPORT_EVERY_S:
        return
    _reported[key] = now
    if sqlstate == "25006":
        log.warning(
            "database_read_only",
            node=node or "unknown",
            error=str(exc),
            action="reconnecting to the primary (the DSN needs target_session_attrs=read-write "
            "and every host of the cluster)",
        )
    else:
        log.warning("database_node_lost", node=node, sqlstate=sqlstate, error=str(exc), action="reconnecting")


def read_only(conn: asyncpg.Connection) -> bool:
    """Whether the server says it takes no writes: in recovery, or read-only by default (both are
    reported to the client as they change, PostgreSQL 14 on; asyncpg's own read-write test)."""
    settings = conn.get_settings()
    return (
        getattr(settings, "in_hot_standby", "off") == "on"
        or getattr(settings, "default_transaction_read_only", "off") == "on"
    )


async def describe_node(conn: asyncpg.Connection) -> str:
    """Which server ``conn`` reaches, as it says itself (through a pooler too), else its address."""
    address = getattr(conn, "_addr", None)
    fallback = f"{address[0]}:{address[1]}" if isinstance(address, tuple) else str(address or "unknown")
    try:
        row = await conn.fetchrow(
            "SELECT inet_server_addr()::text AS host, inet_server_port() AS port, "
            "current_setting('cluster_name') AS cluster, pg_is_in_recovery() AS standby",
            timeout=2,
        )
    except DB_OR_SQL_ERRORS:
        return fallback
    if row is None or row["host"] is None:
        return fallback
    name = f"{row['host'].split('/')[0]}:{row['port']}"
    if row["cluster"]:
        name += f" ({row['cluster']})"
    return name + (" standby" if row["standby"] else "")


async def _tuned(conn: asyncpg.Connection, *, keepalive_s: float) -> None:
    tune_connection(conn, keepalive_s)


def describe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if "@" not in dsn:
        return dsn
    scheme, _, rest = dsn.partition("://")
    credentials, _, location = rest.rpartition("@")
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}@{location}"


async def open_pool(
    cfg: DatabaseConfig, *, max_size: int | None = None, read_only: bool = False
) -> asyncpg.Pool:
    """The pool of ``database.dsn``; with ``read_only``, of ``database.read_dsn`` (the commands
    that only read, which a hot standby can serve)."""
    dsn = cfg.read_dsn if read_only else cfg.dsn
    try:
        pool = await asyncpg.create_pool(
            dsn,
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
            init=functools.partial(_tuned, keepalive_s=cfg.keepalive_s),
        )
    except CONNECT_ERRORS as exc:
        raise DatabaseError(f"cannot connect to {describe_dsn(dsn)}: {type(exc).__name__}: {exc}") from exc
    assert pool is not None
    _pools.add(pool)
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


RECOVERY_CONFLICT_HINT = (
    " (the standby of database.read_dsn cancelled the query to apply changes from the primary: "
    "set hot_standby_feedback = on or raise max_standby_streaming_delay on the standby, "
    "or read from the primary)"
)


def recovery_conflict(exc: BaseException) -> bool:
    """A hot standby cancelled the statement to replay WAL (``max_standby_streaming_delay``), or
    ended the whole session for it when the client was not reading (the connection then closes
    with the server's message)."""
    if "conflict with recovery" not in str(exc):
        return False
    return getattr(exc, "sqlstate", None) in ("40001", "40P01") or isinstance(exc, DB_ERRORS)


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
        if node_lost(exc):
            leave_node(exc)
        hint = RECOVERY_CONFLICT_HINT if recovery_conflict(exc) else ""
        raise DatabaseError(f"{what}: database unavailable: {type(exc).__name__}: {exc}{hint}") from exc
    except asyncpg.PostgresError as exc:
        if node_lost(exc):
            leave_node(exc)
        if refusals and isinstance(exc, REFUSED):
            raise
        hint = " (run `harvester migrate` first)" if isinstance(exc, _NOT_MIGRATED) else ""
        if recovery_conflict(exc):
            hint = RECOVERY_CONFLICT_HINT
        raise DatabaseError(f"{what}: database error: {type(exc).__name__}: {exc}{hint}") from exc


@asynccontextmanager
async def connection(pool: asyncpg.Pool) -> AsyncIterator[asyncpg.Connection]:
    """A connection of ``pool``, for every statement of the seam.

    A statement whose answer did not come in time (the client-side ``command_timeout``) leaves a
    connection that may be dead without a reset (a black-holed network): asyncpg would wait for its
    cancellation before handing it back, for ever, and the pool would run dry. It is cut instead,
    and the next acquire opens a fresh one. A write refused as read-only leaves the node, named.
    """
    async with pool.acquire() as proxy:
        conn: asyncpg.Connection = proxy  # type: ignore[assignment]
        try:
            yield conn
        except TimeoutError:
            with contextlib.suppress(asyncpg.InterfaceError):  # asyncpg may have cut it already
                conn.terminate()
            raise
        except asyncpg.ReadOnlySQLTransactionError as exc:
            leave_node(exc, await describe_node(conn))  # named while the connection lives
            raise


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
        async with connection(target) as conn, conn.transaction():
            await _set_timeout(conn, timeout_s)
            yield conn
        return
    async with target.transaction():
        await _set_timeout(target, timeout_s)
        yield target


async def _set_timeout(conn: asyncpg.Connection, timeout_s: float | None) -> None:
    """Bound each statement, and the transaction's idle time too: a transaction whose client went
    silent (a half-open connection) would otherwise hold its row locks for ever, since the server
    waits for the client's next word; with the timeout the server ends it."""
    if timeout_s is not None:
        ms = int(timeout_s * 1000)
        await conn.execute(
            f"SET LOCAL statement_timeout = {ms}; SET LOCAL idle_in_transaction_session_timeout = {ms}"
        )


def schema_missing(exc: BaseException) -> bool:
    """The statement named a table or schema that is not there: a database nobody migrated."""
    return isinstance(exc, asyncpg.UndefinedTableError | asyncpg.InvalidSchemaNameError)


def privilege_refused(exc: BaseException | None) -> bool:
    """The role may not read or write what the statement touches (SQLSTATE 42501)."""
    return isinstance(exc, asyncpg.InsufficientPrivilegeError)
