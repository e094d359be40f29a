"""The wake-up: ``LISTEN harvester_jobs`` on a session of its own (``database.direct_dsn``), so that an
insert into the queue wakes the worker within a second instead of at its next idle poll.

The connection only receives, so a peer that vanished (a black-holed network, a node powered off)
would never be noticed by reading; a node in recovery refuses LISTEN (a standby, or a demoted
primary); and one made read-only behind a moved address would never see another insert. Every
``database.listen_check_s`` the listener asks its node again, which must answer within that long
(a dead connection is left within twice it, with TCP keepalives behind that), and leaves a node
that reports itself read-only; then it connects again, to whichever host the DSN now leads to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg

from harvester import db, lifetime, logs
from harvester.config import DatabaseConfig
from harvester.errors import HarvesterError

log = logs.get("harvester.daemon.wakeup")

CHANNEL = "harvester_jobs"
# The check asks again for what the connection already has: a round trip that fails on a node in
# recovery, and leaves the session showing what it is for (pg_stat_activity's query).
LISTEN_AGAIN = f'LISTEN "{CHANNEL}"'


class ReadOnlyNode(HarvesterError):
    """The LISTEN connection reaches a node that can no longer take writes."""


LISTEN_ERRORS: tuple[type[BaseException], ...] = (*db.DB_OR_SQL_ERRORS, ReadOnlyNode)


async def listen_for_jobs(database: DatabaseConfig, nudge: Callable[[], None], stop: asyncio.Event) -> None:
    """Nudge the worker on every insert, and once on every (re)connect for what came meanwhile;
    leave a connection that stops answering or reaches a read-only node, and connect again with
    backoff."""
    dsn, check_s = database.direct_dsn, database.listen_check_s
    backoff = lifetime.Backoff(0.5, 30.0)
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn, timeout=database.connect_timeout_s)
            db.tune_connection(conn, database.keepalive_s)
            await conn.add_listener(CHANNEL, lambda *_: nudge())
            nudge()  # catch anything inserted while we were not listening
            while not conn.is_closed():
                await conn.execute(LISTEN_AGAIN, timeout=check_s)
                if db.read_only(conn):
                    raise ReadOnlyNode(f"{await db.describe_node(conn)} no longer takes writes")
                backoff.reset()
                if await lifetime.wait(stop, check_s):
                    break
        except LISTEN_ERRORS as exc:
            delay = backoff.next()
            (log.warning if isinstance(exc, ReadOnlyNode) else log.info)(
                "listener_reconnect", error=logs.scrub(str(exc)), retry_in_s=round(delay, 2)
            )
            await lifetime.wait(stop, delay)
        finally:
            if conn is not None and not conn.is_closed():
                conn.terminate()  # closing politely waits on a peer that may be gone
