"""The wake-up on a real PostgreSQL: an insert nudges the worker, and a listening session that the
server ends is replaced (``daemon.wakeup`` over ``db.listen``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from structlog.testing import capture_logs

from harvester.daemon import wakeup
from harvester.db import listen
from tests.support import configs

LISTENERS = "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND query LIKE 'LISTEN %'"


async def until(condition: Callable[[], bool], within_s: float = 5.0) -> None:
    for _ in range(int(within_s / 0.02)):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition never met")


async def listener_pid(pool: asyncpg.Pool) -> int:
    for _ in range(250):
        pid = await pool.fetchval(LISTENERS)
        if pid is not None:
            return int(pid)
        await asyncio.sleep(0.02)
    raise AssertionError("nobody listens")


async def test_an_insert_wakes_the_worker_and_a_lost_session_is_replaced(
    db_dsn: str, pool: asyncpg.Pool
) -> None:
    cfg = configs.loaded({"database.dsn": db_dsn, "database.listen_check_s": 0.2})
    nudges: list[int] = []
    stop = asyncio.Event()
    task = asyncio.create_task(wakeup.listen_for_jobs(cfg.database, lambda: nudges.append(1), stop))
    try:
        await until(lambda: len(nudges) == 1)  # once on connecting, for what came meanwhile
        first = await listener_pid(pool)
        await pool.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", uuid.uuid4())
        await until(lambda: len(nudges) == 2)
        assert await pool.fetchval("SELECT pg_terminate_backend($1)", first)
        await until(lambda: len(nudges) == 3, within_s=10.0)  # connected again
        assert await listener_pid(pool) != first
        await pool.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", uuid.uuid4())
        await until(lambda: len(nudges) == 4)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
    for _ in range(100):  # the session ended with the loop (the server notices the close)
        if await pool.fetchval(LISTENERS) is None:
            break
        await asyncio.sleep(0.02)
    assert await pool.fetchval(LISTENERS) is None


async def test_a_session_checks_its_node_and_leaves_when_it_ends(db_dsn: str, pool: asyncpg.Pool) -> None:
    cfg = configs.loaded({"database.dsn": db_dsn})
    async with listen.listening(cfg.database, listen.JOBS_CHANNEL, lambda: None) as session:
        await session.check(2.0)  # a primary that answers: nothing to leave
        assert not session.closed
        assert await pool.fetchval(LISTENERS) is not None
    assert session.closed


async def test_a_node_that_takes_no_writes_is_left(db_dsn: str, pool: asyncpg.Pool) -> None:
    """A node made read-only (a demoted primary behind a moved address) would never see another
    insert: the check says so, and the loop leaves it and says so as a warning."""
    name = await pool.fetchval("SELECT current_database()")
    await pool.execute(f'ALTER DATABASE "{name}" SET default_transaction_read_only = on')
    cfg = configs.loaded({"database.dsn": db_dsn, "database.listen_check_s": 0.2})
    async with listen.listening(cfg.database, listen.JOBS_CHANNEL, lambda: None) as session:
        with pytest.raises(listen.ReadOnlyNode, match="no longer takes writes"):
            await session.check(2.0)
    stop = asyncio.Event()
    with capture_logs() as logged:
        task = asyncio.create_task(wakeup.listen_for_jobs(cfg.database, lambda: None, stop))
        for _ in range(250):
            if any(e["event"] == "listener_reconnect" for e in logged):
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 5)
    reconnects = [e for e in logged if e["event"] == "listener_reconnect"]
    assert reconnects and reconnects[0]["log_level"] == "warning"
    assert "no longer takes writes" in reconnects[0]["error"]
