"""The wake-up: LISTEN for inserts into the queue on a session of its own (``database.direct_dsn``),
so that a new job wakes the worker within a second instead of at its next idle poll.

The connection only receives, so a peer that vanished (a black-holed network, a node powered off)
would never be noticed by reading; a node in recovery refuses LISTEN (a standby, or a demoted
primary); and one made read-only behind a moved address would never see another insert. Every
``database.listen_check_s`` the listener asks its node again, which must answer within that long
(a dead connection is left within twice it, with TCP keepalives behind that), and leaves a node
that reports itself read-only; then it connects again, to whichever host the DSN now leads to.
The session itself is ``harvester.db.listen``'s; this loop decides when to check and reconnect.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from harvester import lifetime, logs
from harvester.config import DatabaseConfig
from harvester.db import listen

log = logs.get("harvester.daemon.wakeup")


async def listen_for_jobs(database: DatabaseConfig, nudge: Callable[[], None], stop: asyncio.Event) -> None:
    """Nudge the worker on every insert, and once on every (re)connect for what came meanwhile;
    leave a connection that stops answering or reaches a read-only node, and connect again with
    backoff."""
    check_s = database.listen_check_s
    backoff = lifetime.Backoff(0.5, 30.0)
    while not stop.is_set():
        try:
            async with listen.listening(database, listen.JOBS_CHANNEL, nudge) as listener:
                nudge()  # catch anything inserted while we were not listening
                while not listener.closed:
                    await listener.check(check_s)
                    backoff.reset()
                    if await lifetime.wait(stop, check_s):
                        break
        except listen.LISTEN_ERRORS as exc:
            delay = backoff.next()
            (log.warning if isinstance(exc, listen.ReadOnlyNode) else log.info)(
                "listener_reconnect", error=logs.scrub(str(exc)), retry_in_s=round(delay, 2)
            )
            await lifetime.wait(stop, delay)
