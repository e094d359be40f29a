"""Queue benchmark: claim latency with 10 thousand against 1 million pending jobs.

Pending rows are bulk-loaded with ``generate_series``, all due (the worst case: every claim has a
choice of the whole backlog), then ``db.jobs.PgJobStore.claim`` is called back to back, as the worker
does, each call taking up to ``max_in_flight`` jobs. A claim moves its jobs' due time past the lease,
so the measured calls also pay for the dead index entries that earlier claims leave behind.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import databases, percentile, table, write_json
from harvester.config import RateLimitConfig
from harvester.db.jobs import PgJobStore

SIZES = (10_000, 1_000_000)
QUICK_SIZES = (1_000, 20_000)


async def load_pending(pool: asyncpg.Pool, count: int, enqueued_ago_s: float = 86_400.0) -> float:
    """Insert ``count`` due pending jobs, enqueued ``enqueued_ago_s`` ago, in one statement;
    returns seconds taken."""
    began = time.perf_counter()
    await pool.execute(
        "INSERT INTO harvester.jobs (job_id, enqueued_at, next_poll_at)"
        " SELECT gen_random_uuid(), now() - make_interval(secs => $2),"
        "        now() - interval '1 hour' + i * interval '1 millisecond'"
        "   FROM generate_series(1, $1::int) AS i",
        count,
        enqueued_ago_s,
    )
    await pool.execute("VACUUM ANALYZE harvester.jobs")
    took = time.perf_counter() - began
    # The bulk load leaves a checkpoint's worth of dirty pages; flush them now, or the claims
    # measure the write-out of the load rather than the queue.
    await pool.execute("CHECKPOINT")
    return took


async def measure_claims(pool: asyncpg.Pool, calls: int, limit: int) -> list[float]:
    latencies = []
    for _ in range(calls):
        began = time.perf_counter()
        jobs = await PgJobStore(pool).claim("bench", limit, 300.0)
        latencies.append((time.perf_counter() - began) * 1000)
        assert len(jobs) == limit
    return latencies


async def run(args: argparse.Namespace) -> dict[str, Any]:
    sizes = QUICK_SIZES if args.quick else SIZES
    limit = RateLimitConfig().max_in_flight
    requested = 100 if args.quick else args.claims
    figures: dict[str, Any] = {}
    async with databases(args.dsn) as dbs:
        for size in sizes:
            dsn = await dbs.fresh()
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            # every claimed job leaves the due set: never claim more than half the queue
            calls = min(requested, size // limit // 2 - 20)
            try:
                load_s = await load_pending(pool, size)
                await measure_claims(pool, 20, limit)  # warm the cache and the plan
                latencies = await measure_claims(pool, calls, limit)
            finally:
                await pool.close()
                await dbs.drop(dsn)
            figures[str(size)] = {
                "pending": size,
                "load_s": round(load_s, 1),
                "claims": calls,
                "jobs_per_claim": limit,
                "p50_ms": percentile(latencies, 50),
                "p99_ms": percentile(latencies, 99),
                "max_ms": max(latencies),
            }
            print(f"  {size:,} pending: loaded in {load_s:.1f} s", file=sys.stderr)
    small, large = (figures[str(s)] for s in sizes)
    rows = [
        [f"{f['pending']:,} pending", f["claims"], f["jobs_per_claim"], f["p50_ms"], f["p99_ms"], f["max_ms"]]
        for f in figures.values()
    ]
    headers = ("queue", "claims", "jobs/claim", "p50 ms", "p99 ms", "max ms")
    print(table(headers, rows))
    ratio = large["p99_ms"] / small["p99_ms"]
    print(f"p99 at {sizes[1]:,} is {ratio:.2f}x the p99 at {sizes[0]:,}")
    payload = {
        "command": "python -m bench queue" + (" --quick" if args.quick else ""),
        "sizes": figures,
        "p99_ratio": ratio,
        "table": {"headers": list(headers), "rows": rows},
    }
    print(f"wrote {write_json('queue', payload, Path(args.out) if args.out else None)}")
    return payload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--claims",
        type=int,
        default=1000,
        help="queue: claims measured per size (at most half the queue is claimed)",
    )
