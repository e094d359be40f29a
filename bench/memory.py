"""Memory benchmark: peak RSS of a ``harvester run`` process working a 1 million job backlog.

The daemon runs as its own process (the console script, default settings) against the bundled
simulator, with a million pending, due jobs in its queue, for a fixed time; its peak resident set
(``VmHWM`` from ``/proc``) is sampled until it exits. The backlog's job IDs are unknown to the
simulator, so the daemon claims, polls and reschedules them at the full rate limit, which is its
busiest steady state; memory must not grow with the size of the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.claims import load_pending
from bench.common import databases, table, write_json
from harvester.sim import SimServer

TOKEN = "bench:bench:bench"


def read_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


async def watch(dsn: str, sim_url: str, seconds: float, speed: float) -> dict[str, Any]:
    env = {**os.environ, "HARVESTER_DSN": dsn, "HARVESTER_API_TOKEN": TOKEN,
           "HARVESTER_API_BASE_URL": sim_url, "HARVESTER_SERVER__ENABLED": "false",
           "HARVESTER_LOG_LEVEL": "warning"}
    exe = str(Path(sys.executable).with_name("harvester"))
    proc = await asyncio.create_subprocess_exec(
        exe, "run", "--max-seconds", str(seconds), "--speed", str(speed), env=env,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    peak = rss = 0
    samples = []
    began = time.monotonic()
    while proc.returncode is None:
        hwm = read_kib(proc.pid, "VmHWM")
        now_rss = read_kib(proc.pid, "VmRSS")
        if hwm:
            peak = max(peak, hwm)
        if now_rss:
            rss = now_rss
            samples.append((round(time.monotonic() - began, 1), now_rss))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), timeout=0.2)
    return {"exit_code": proc.returncode, "peak_rss_mb": peak / 1024, "last_rss_mb": rss / 1024,
            "rss_mb_over_time": [(t, round(kib / 1024, 1)) for t, kib in samples[::10]]}


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backlog = 50_000 if args.quick else 1_000_000
    seconds = 5.0 if args.quick else args.memory_seconds
    speed = 10.0
    async with databases(args.dsn) as dbs:
        dsn = await dbs.fresh()
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            load_s = await load_pending(pool, backlog)
            async with SimServer(speed=speed, seed=1, tokens=[TOKEN]) as sim:
                figures = await watch(dsn, sim.url, seconds, speed)
                stats = sim.stats(per_job=False)
            polled = int(await pool.fetchval("SELECT count(*) FROM harvester.jobs WHERE polls > 0"))
        finally:
            await pool.close()
            await dbs.drop(dsn)
    figures.update({"backlog": backlog, "load_s": round(load_s, 1), "seconds": seconds,
                    "speed": speed, "requests": stats["requests_total"],
                    "served_429": stats["served_429"], "jobs_polled": polled})
    headers = ("backlog", "run s", "requests", "jobs polled", "peak RSS MB", "last RSS MB")
    rows = [[backlog, seconds, figures["requests"], polled, round(figures["peak_rss_mb"], 1),
             round(figures["last_rss_mb"], 1)]]
    print(table(headers, rows))
    payload = {"command": "python -m bench memory" + (" --quick" if args.quick else ""),
               **figures, "table": {"headers": list(headers), "rows": rows}}
    print(f"wrote {write_json('memory', payload, Path(args.out) if args.out else None)}")
    return payload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--memory-seconds", type=float, default=30.0,
                        help="memory: how long the daemon runs (default 30)")
