"""A change-feed consumer as docs/downstream.md describes it, run as its own process by the feed tests.

    python -m tests.support.feed_consumer DSN

It keeps its cursor in its own table (``sink.cursor``) and writes what it read (``sink.seen``, one
row per change, no unique key so a duplicate would show) in the same transaction as the cursor: a
kill at any moment loses nothing and repeats nothing. It wakes on ``NOTIFY harvester_changes`` and
polls every ``POLL_S`` as the fallback for a nudge it missed (while it was down, say).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys

import asyncpg

PAGE = 25
POLL_S = 0.25

SINK = """
CREATE SCHEMA IF NOT EXISTS sink;
CREATE TABLE IF NOT EXISTS sink.cursor (only_row boolean PRIMARY KEY, last_change bigint NOT NULL);
INSERT INTO sink.cursor VALUES (true, 0) ON CONFLICT DO NOTHING;
CREATE TABLE IF NOT EXISTS sink.seen (change_id bigint NOT NULL, job_id uuid NOT NULL,
                                      state text NOT NULL, pid integer NOT NULL);
"""

# The consumer pattern of docs/downstream.md: lock my cursor, read what follows it, record, move the cursor.
READ = """
SELECT change_id, job_id, state FROM harvester.changes
 WHERE change_id > $1 ORDER BY change_id LIMIT $2
"""


async def consume(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    await conn.execute(SINK)
    listener = await asyncpg.connect(dsn)
    nudged = asyncio.Event()
    await listener.add_listener("harvester_changes", lambda *_: nudged.set())
    pid = conn.get_server_pid()
    while True:
        async with conn.transaction():
            last = await conn.fetchval("SELECT last_change FROM sink.cursor FOR UPDATE")
            rows = await conn.fetch(READ, last, PAGE)
            if rows:
                await conn.executemany(
                    "INSERT INTO sink.seen VALUES ($1, $2, $3, $4)",
                    [(r["change_id"], r["job_id"], r["state"], pid) for r in rows],
                )
                await conn.execute("UPDATE sink.cursor SET last_change = $1", rows[-1]["change_id"])
        if len(rows) == PAGE:
            continue
        nudged.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(nudged.wait(), POLL_S)


if __name__ == "__main__":
    asyncio.run(consume(sys.argv[1]))
