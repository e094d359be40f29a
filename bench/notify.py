"""NOTIFY latency: from a finishing transaction's COMMIT to a listener holding the payload.

Jobs are finished one per transaction (the UPDATE that ``finish_job`` makes, so the feed's trigger
numbers it at commit and sends ``NOTIFY harvester_changes``), by ``--notify-writers`` connections
at once; a separate connection LISTENs. The latency of a change is the time from just before its
writer sends COMMIT to the listener's callback with that change's number: it includes the commit
itself (the counter row's lock, the WAL flush) and the delivery.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path
from typing import Any
from uuid import uuid4

import asyncpg

from bench.common import databases, percentile, table, write_json
from harvester.db import feed


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--notify-changes", type=int, default=2000, help="changes to time (notify)")
    parser.add_argument("--notify-writers", type=int, default=4, help="concurrent writers (notify)")


async def measure(dsn: str, changes: int, writers: int) -> dict[str, Any]:
    listener = await asyncpg.connect(dsn)
    conns = [await asyncpg.connect(dsn) for _ in range(writers)]
    received: dict[str, float] = {}
    sent: dict[str, float] = {}
    done = asyncio.Event()

    def heard(_conn: Any, _pid: int, _channel: str, payload: object) -> None:
        received[str(feed.parse_nudge(str(payload)).job_id)] = time.perf_counter()
        if len(received) >= changes:
            done.set()

    await listener.add_listener(feed.CHANNEL, heard)
    ids = [uuid4() for _ in range(changes)]
    await conns[0].execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", ids)

    async def write(conn: asyncpg.Connection, mine: list[Any]) -> None:
        for job_id in mine:
            tx = conn.transaction()
            await tx.start()
            await conn.execute(
                "UPDATE harvester.jobs SET state = 'harvested', finished_at = now() WHERE job_id = $1",
                job_id,
            )
            sent[str(job_id)] = time.perf_counter()
            await tx.commit()

    began = time.perf_counter()
    await asyncio.gather(*(write(c, ids[i::writers]) for i, c in enumerate(conns)))
    await asyncio.wait_for(done.wait(), 60)
    elapsed = time.perf_counter() - began
    for c in [listener, *conns]:
        await c.close()
    ms = [(received[k] - sent[k]) * 1000 for k in sent]
    return {
        "changes": changes,
        "writers": writers,
        "changes_per_s": round(changes / elapsed, 1),
        "p50_ms": percentile(ms, 50),
        "p95_ms": percentile(ms, 95),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms),
    }


async def run(args: argparse.Namespace) -> None:
    changes = 200 if args.quick else args.notify_changes
    async with databases(args.dsn) as dbs:
        rows = []
        for writers in sorted({1, args.notify_writers}):
            rows.append(await measure(await dbs.fresh(), changes, writers))
    headers = list(rows[0])
    print(table(headers, [[r[h] for h in headers] for r in rows]))
    print(f"wrote {write_json('notify', {'runs': rows}, Path(args.out) if args.out else None)}")
