"""``harvester demo``: the whole product on embedded defaults, in about a minute.

A throwaway PostgreSQL, the bundled simulator (time-scaled), a few hundred site and maps jobs
submitted to it, their IDs enqueued, the daemon harvesting them with a live progress line until the
queue drains, then a summary of what landed in the tables and what it cost in requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from typing import Any
from uuid import UUID

from harvester import config, db, logs
from harvester.db import admin
from harvester.db import demo as reads
from harvester.errors import DatabaseError
from harvester.pgtemp import TempPostgres
from harvester.sim import SimServer, submit_mix

TOKEN = "demo:demo:demo"  # noqa: S105 - the simulator's own credential, not a secret


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--jobs", type=int, default=300, help="jobs to submit (default 300)")
    parser.add_argument(
        "--speed", type=float, default=30.0, help="time scale of simulator and daemon (default 30)"
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument("--dsn", help="use this database instead of a throwaway PostgreSQL")
    parser.add_argument(
        "--default-region",
        default="US",
        help="normalize.default_region for phones written without + (default US; '' for none)",
    )


async def run(args: argparse.Namespace) -> int:
    started = time.monotonic()
    logs.setup("json", "warning", stream=sys.stderr)
    pg: TempPostgres | None = None
    dsn = args.dsn
    if dsn is None:
        print("starting a throwaway PostgreSQL ...", flush=True)
        pg = TempPostgres()
        await asyncio.to_thread(pg.start)
        dsn = pg.dsn
    try:
        async with SimServer(speed=args.speed, seed=args.seed, tokens=[TOKEN]) as sim:
            print(f"simulator at {sim.url} (speed x{args.speed:g}, seed {args.seed})", flush=True)
            return await _harvest(args, dsn, sim, started)
    finally:
        if pg is not None:
            await asyncio.to_thread(pg.stop)


async def _harvest(args: argparse.Namespace, dsn: str, sim: Any, started: float) -> int:
    # The daemon's modules load only for the commands that run it: every other command starts
    # without them (they pull in the HTTP client and the loops: a third of a second).
    from harvester.daemon import run as daemon

    cfg = config.load(
        environ={},
        overrides={
            "database.dsn": dsn,
            "api.base_url": sim.url,
            "api.token": TOKEN,
            "speed": args.speed,
            "server.enabled": False,
            "log.level": "warning",
            "normalize.default_region": args.default_region,
        },
    )
    await daemon.migrate_with_retry(dsn)
    ids = [UUID(i) for i in await submit_mix(sim.url, TOKEN, args.jobs)]
    pool = await db.open_pool(cfg.database, max_size=3)
    try:
        await admin.enqueue(pool, ids, tags={"source": "demo"})
        print(f"submitted {len(ids)} jobs to the simulator and enqueued their IDs", flush=True)
        stop = asyncio.Event()
        progress = asyncio.create_task(_progress(pool, sim, stop, started))
        try:
            await daemon.run(cfg, stop, drain=True, max_seconds=100.0)
        finally:
            stop.set()
            await progress
        await _summary(pool, sim, started, cfg.normalize.default_region)
    finally:
        await pool.close()
    return 0


async def _counts(pool: db.Pool) -> dict[str, int]:
    report = await admin.status(pool)
    return report.counts


async def _progress(pool: db.Pool, sim: Any, stop: asyncio.Event, started: float) -> None:
    """One line every few seconds, with the rolling-minute count the rate limit is about."""
    interactive = sys.stdout.isatty()
    last_print = 0.0
    while not stop.is_set():
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=0.5)
        now = time.monotonic()
        if not interactive and now - last_print < 3 and not stop.is_set():
            continue
        last_print = now
        try:
            counts = await _counts(pool)
        except DatabaseError:
            continue  # the daemon reports database trouble itself
        stats = sim.stats(per_job=False)
        used = _requests(stats)
        elapsed = now - started
        line = (
            f"[{elapsed:5.1f}s] harvested {counts.get('harvested', 0):4d}  "
            f"pending {counts.get('pending', 0):4d}  "
            f"failed {counts.get('failed', 0) + counts.get('cancelled', 0):3d}  "
            f"requests {used:5d}  last minute {_last_minute(stats):3d}/100"
        )
        print(("\r" + line) if interactive else line, end="" if interactive else "\n", flush=True)
    if interactive:
        print()


def _last_minute(stats: dict[str, Any]) -> int:
    """Requests in the rolling 60 s (simulated) that ends now, as the simulator counts them."""
    return sum(int(c["requests_last_60s"]) for c in stats.get("rate_limit", {}).values())


def _requests(stats: dict[str, Any]) -> int:
    return int(stats.get("requests_total", 0))


async def _summary(pool: db.Pool, sim: Any, started: float, region: str) -> None:
    rows = await reads.rows_per_table(pool)
    counts = await _counts(pool)
    stats = sim.stats(per_job=False)
    harvested = counts.get("harvested", 0)
    finished = sum(v for k, v in counts.items() if k != "pending")
    requests = _requests(stats)
    print("\nrows per table:")
    for table, n in rows.items():
        print(f"  harvester.{table:<16} {n:6d}")
    print("\njobs by state: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    leads = await reads.sample_leads(pool)
    print("\nsample leads:")
    for lead in leads:
        print(
            f"  {lead['company']!s:<28} {lead['domain']!s:<24} ICP {lead['icp_fit_score']!s:<5} "
            f"{lead['decision_maker'] or '-'}"
        )
    places = await reads.sample_businesses(pool)
    print("\nsample businesses:")
    for place in places:
        print(
            f"  {place['name']!s:<32} {place['rating']!s:>4} ({place['reviews_count']} reviews) "
            f"{place['category']}"
        )
    raw_phones, with_e164 = await reads.raw_phones(pool)
    print("\nphones the API gave as raw text (site phone strings, Maps phones without phone_e164):")
    print(f"  raw phones              {raw_phones}")
    print(f"  with an E.164 form      {with_e164} (default region {region or 'none'})")
    print("\nrequests:")
    print(f"  API requests            {requests}")
    print(f"  per finished job        {requests / max(finished, 1):.3f}")
    print(f"  per harvested job       {requests / max(harvested, 1):.3f}")
    print(f"  429s served             {stats.get('served_429', 0)}")
    print(f"  worst 60 s window       {_worst_window(stats)} (limit 100)")
    simulated = float(stats.get("sim_time_s", 0.0)) / 60
    print(
        f"\ndone in {time.monotonic() - started:.1f} s "
        f"(the simulator ran {stats.get('speed', 1):g}x: about {simulated:.1f} simulated minutes)"
    )
    summary = {
        "harvested": harvested,
        "requests": requests,
        "raw_phones": raw_phones,
        "raw_phones_e164": with_e164,
    }
    print(json.dumps(summary), file=sys.stderr)


def _worst_window(stats: dict[str, Any]) -> int:
    """The most requests any credential sent in one rolling (scaled) 60 s window."""
    return max((int(c["max_requests_60s"]) for c in stats.get("rate_limit", {}).values()), default=0)
