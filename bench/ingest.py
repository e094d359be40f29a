"""Ingest benchmark: storing result bodies set-based against one INSERT per row.

The bodies are the simulator's own (two thirds spiderSite, one third spiderMaps, documented variants
included), all completed. Three ways to store the same bodies into fresh databases:

- ``row by row``: the baseline. Each body in its own transaction, every row its own INSERT (the
  harvester's statements, each called with a single row).
- ``store_result``: what the daemon does per fetched body: one transaction, one statement per table.
- ``batched``: the same statements over batches of bodies in one transaction each (reprocess path).

Parsing and normalizing are the same code in all three and are included in every timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import databases, table, write_json
from harvester.api.classify import read_body
from harvester.db import bulk, store
from harvester.db.rows import ROW_TABLES, write_rows
from harvester.sim.admin import create_jobs
from harvester.sim.bodies import results_body
from harvester.sim.clock import ManualClock
from harvester.sim.jobs import MAPS, SITE, Plan
from harvester.sim.settings import SimSettings
from harvester.sim.state import SimState

TABLES = ROW_TABLES
BATCH = 200


def make_bodies(count: int, seed: int = 11) -> list[bytes]:
    """``count`` completed result bodies, deterministic for the seed."""
    clock = ManualClock()
    state = SimState(SimSettings(seed=seed, fail_rate=0.0, cancel_rate=0.0), clock)
    cred = next(iter(state.credentials.values()))
    site = count * 2 // 3
    ids = create_jobs(state, cred, site, SITE, Plan(outcome="completed")) + create_jobs(
        state, cred, count - site, MAPS, Plan(outcome="completed")
    )
    clock.advance(3600)
    bodies = []
    for job_id in ids:
        status, body = results_body(clock, state.jobs[job_id], clock.now(), seed, True)
        assert status == 200
        bodies.append(json.dumps(body).encode())
    return bodies


class RowByRow:
    """A connection stand-in that runs each set-based statement once per row: the naive baseline."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def execute(self, sql: str, *args: Any) -> str:
        arrays = [a for a in args if isinstance(a, list)]
        if not arrays:
            return await self.conn.execute(sql, *args)
        status = ""
        for i in range(len(arrays[0])):
            status = await self.conn.execute(sql, *([a[i]] if isinstance(a, list) else a for a in args))
        return status


async def autocommit_rows(pool: asyncpg.Pool, bodies: Sequence[bytes]) -> None:
    """Every INSERT its own transaction, as a loop of plain inserts on an autocommit connection."""
    async with pool.acquire() as conn:
        for raw in bodies:
            await write_rows(
                RowByRow(conn),  # type: ignore[arg-type]  # duck-typed: only execute() is used
                [store.prepare(read_body(raw), None)],
                fetched=True,
            )


async def row_by_row(pool: asyncpg.Pool, bodies: Sequence[bytes]) -> None:
    """One INSERT per row, but one transaction per body: the kinder baseline."""
    for raw in bodies:
        item = store.prepare(read_body(raw), None)
        async with pool.acquire() as conn, conn.transaction():
            await write_rows(RowByRow(conn), [item], fetched=True)  # type: ignore[arg-type]


async def per_body(pool: asyncpg.Pool, bodies: Sequence[bytes]) -> None:
    for raw in bodies:
        await store.store_result(pool, raw, read_body(raw), http_status=None, polls_spent=0)


async def batched(pool: asyncpg.Pool, bodies: Sequence[bytes]) -> None:
    """What ``harvester import`` does: ``store_results`` on BATCH bodies per transaction."""
    for start in range(0, len(bodies), BATCH):
        outcomes = await bulk.store_results(
            pool, [(raw, read_body(raw)) for raw in bodies[start : start + BATCH]]
        )
        if any(o.kind != "harvested" for o in outcomes):
            raise RuntimeError("a generated body was not stored")


METHODS = (
    ("one INSERT per row, autocommit", autocommit_rows),
    ("one INSERT per row, a transaction per body", row_by_row),
    ("store_result, per body", per_body),
    (f"store_results (import), {BATCH} bodies per transaction", batched),
)


async def make_durable(dbs: Any) -> str:
    """Commit as production does: the throwaway server starts with fsync off, which hides the cost
    of a commit, and commits per row are exactly what the baseline pays for."""
    conn = await asyncpg.connect(dbs.server_dsn)
    try:
        for setting in ("fsync", "synchronous_commit", "full_page_writes"):
            await conn.execute(f"ALTER SYSTEM SET {setting} = on")
        await conn.execute("SELECT pg_reload_conf()")
    finally:
        await conn.close()
    return "durable (fsync, synchronous_commit, full_page_writes on)"


async def count_rows(pool: asyncpg.Pool) -> int:
    return sum([int(await pool.fetchval(f"SELECT count(*) FROM harvester.{t}")) for t in TABLES])


async def run(args: argparse.Namespace) -> dict[str, Any]:
    count = 300 if args.quick else args.bodies
    bodies = make_bodies(count)
    figures: dict[str, Any] = {}
    async with databases(args.dsn) as dbs:
        durable = await make_durable(dbs) if args.dsn is None else "as configured"
        for name, method in METHODS:
            dsn = await dbs.fresh()
            pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
            try:
                began = time.perf_counter()
                await method(pool, bodies)
                seconds = time.perf_counter() - began
                stored = await count_rows(pool)
            finally:
                await pool.close()
                await dbs.drop(dsn)
            figures[name] = {
                "bodies": count,
                "rows": stored,
                "seconds": round(seconds, 3),
                "bodies_per_s": count / seconds,
                "rows_per_s": stored / seconds,
            }
            print(f"  {name}: {seconds:.1f} s", file=sys.stderr)
    base = figures[METHODS[1][0]]["rows_per_s"]
    rows = [
        [
            n,
            f["bodies"],
            f["rows"],
            f["seconds"],
            round(f["bodies_per_s"]),
            round(f["rows_per_s"]),
            f"{f['rows_per_s'] / base:.1f}x",
        ]
        for n, f in figures.items()
    ]
    headers = ("method", "bodies", "rows", "seconds", "bodies/s", "rows/s", "vs per-body baseline")
    print(table(headers, rows))
    payload = {
        "commits": durable,
        "command": "python -m bench ingest" + (" --quick" if args.quick else ""),
        "methods": figures,
        "table": {"headers": list(headers), "rows": rows},
    }
    print(f"wrote {write_json('ingest', payload, Path(args.out) if args.out else None)}")
    return payload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bodies", type=int, default=3000, help="ingest: bodies to store (default 3000)")
