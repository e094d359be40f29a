"""A connection lost while migrating at start-up is retried, not a crash.

Found by the chaos run: a daemon started while PostgreSQL was shutting down got its connection
(the connect succeeded) and then lost it in ``migrate.apply``; ``migrate_with_retry`` retried only
failed connects, so the process died with a traceback and status 1.
"""

from __future__ import annotations

import asyncio

import asyncpg

from harvester.daemon.startup import migrate_with_retry

WAITING = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND query LIKE '%pg_advisory_lock%'"
)


async def waiting_pid(admin: asyncpg.Connection) -> int:
    for _ in range(200):
        pid = await admin.fetchval(WAITING)
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.05)
    raise AssertionError("migrate never waited for the lock")


async def test_connection_killed_during_migration_is_retried(db_dsn: str) -> None:
    holder = await asyncpg.connect(db_dsn)
    admin = await asyncpg.connect(db_dsn)
    try:
        await holder.execute("SELECT pg_advisory_lock(hashtext('harvester.migrate'))")
        task = asyncio.create_task(migrate_with_retry(db_dsn, wait_s=20.0))
        victim = await waiting_pid(admin)
        assert await admin.fetchval("SELECT pg_terminate_backend($1)", victim)
        await waiting_pid(admin)  # a second attempt is queued behind the lock
        await holder.execute("SELECT pg_advisory_unlock(hashtext('harvester.migrate'))")
        await asyncio.wait_for(task, timeout=30)
    finally:
        await holder.close()
        await admin.close()
