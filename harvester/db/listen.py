"""LISTEN on a session of its own: the driver side of the daemon's wake-up.

A pooled connection cannot LISTEN (a pooler hands each transaction to any server connection), so
``listening`` connects to ``database.direct_dsn``, tunes the socket (TCP keepalives), subscribes
to a channel and calls back on every notification; leaving it terminates the session without the
polite goodbye a vanished peer would never answer. ``Listener.check`` asks the node again (a round
trip that fails on a node in recovery) and raises ``ReadOnlyNode`` for a node that reports itself
read-only. How often to check and when to reconnect is ``harvester.daemon.wakeup``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import asyncpg

from harvester.config import DatabaseConfig
from harvester.db.pool import DB_OR_SQL_ERRORS, describe_node, read_only, tune_connection
from harvester.errors import HarvesterError

JOBS_CHANNEL = "harvester_jobs"  # notified by the jobs table's insert trigger


class ReadOnlyNode(HarvesterError):
    """The LISTEN connection reaches a node that can no longer take writes."""


# What a listening session may fail with, short of a bug: leave it and connect again.
LISTEN_ERRORS: tuple[type[BaseException], ...] = (*DB_OR_SQL_ERRORS, ReadOnlyNode)


class Listener:
    """A connection that LISTENs on ``channel``."""

    def __init__(self, conn: asyncpg.Connection, channel: str) -> None:
        self._conn = conn
        # The check asks again for what the connection already has: a round trip that fails on a
        # node in recovery, and leaves the session showing what it is for (pg_stat_activity's query).
        self._listen_again = f'LISTEN "{channel}"'

    @property
    def closed(self) -> bool:
        return self._conn.is_closed()

    async def check(self, timeout_s: float) -> None:
        """The node must answer within ``timeout_s`` and still take writes (``ReadOnlyNode``)."""
        await self._conn.execute(self._listen_again, timeout=timeout_s)
        if read_only(self._conn):
            raise ReadOnlyNode(f"{await describe_node(self._conn)} no longer takes writes")


@asynccontextmanager
async def listening(
    database: DatabaseConfig, channel: str, on_notify: Callable[[], None]
) -> AsyncIterator[Listener]:
    """A session on ``database.direct_dsn`` that calls ``on_notify`` on every NOTIFY of ``channel``."""
    conn: asyncpg.Connection = await asyncpg.connect(database.direct_dsn, timeout=database.connect_timeout_s)
    try:
        tune_connection(conn, database.keepalive_s)
        await conn.add_listener(channel, lambda *_: on_notify())
        yield Listener(conn, channel)
    finally:
        if not conn.is_closed():
            conn.terminate()  # closing politely waits on a peer that may be gone
