"""Start-up: the daemon waits a little for its database, and finds the schema current.

``migrate_with_retry`` applies the pending migrations (``run --migrate``,
``database.migrate_on_start``) or only checks that none is pending: the daemon's role may have no
right to create anything. It rides out a database that is still starting or restarting for
``database.startup_wait_s``; longer outages are for the supervisor (systemd, Docker) to ride out by
restarting the daemon.
"""

from __future__ import annotations

import asyncio
import time

from harvester import db, logs
from harvester.db import migrate, session
from harvester.errors import DatabaseError

log = logs.get("harvester.daemon.startup")
CONNECT_TIMEOUT_S = 5.0


async def migrate_with_retry(dsn: str, wait_s: float = 10.0, *, apply: bool = True) -> None:
    """Apply migrations (or, with ``apply=False``, only check that none is pending: a
    ``SchemaError`` otherwise), waiting up to ``wait_s`` for the database to come up; a connection
    lost while migrating (a server restart) is retried like a failed connect, not a crash at
    start-up."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            async with session.direct(dsn, timeout_s=CONNECT_TIMEOUT_S) as conn:
                if apply:
                    await migrate.apply(conn)
                else:
                    await migrate.require_current(conn)
                return
        except db.DB_ERRORS as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseError(f"cannot migrate {db.describe_dsn(dsn)}: {exc}") from exc
            log.warning(
                "db_unavailable",
                error=str(exc),
                retry_in_s=round(min(1.0, remaining), 2),
                gives_up_in_s=round(remaining, 1),
            )
            await asyncio.sleep(min(1.0, remaining))
