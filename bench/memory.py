"""Memory benchmark: peak RSS of a ``harvester run`` process working a 1 million job backlog.

The daemon runs as its own process (the console script, default settings) against the bundled
simulator for a fixed time; its peak resident set (``VmHWM`` from ``/proc``) is sampled until it
exits. Two backlogs of a million pending, due jobs, each in its own database:

- ``fresh``: enqueued a minute ago. Their IDs are unknown to the simulator, so the daemon claims,
  polls and reschedules them at the full rate limit, its busiest steady state.
- ``stale``: enqueued 30 days ago, older than ``polling.give_up_after_s`` (a backfill, or a week of
  downtime), so the daemon's housekeeping expires them while it works.

A run counts only if the daemon exits 0 after the whole period (``bench.common.subject_failure``);
otherwise the scenario is reported as failed with the daemon's exit code and last log lines, no
figure is printed or written for it, and the benchmark fails with that exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.claims import load_pending
from bench.common import BenchFailed, Databases, databases, subject_failure, table, write_json
from harvester.config import PollingConfig
from harvester.sim import SimServer

TOKEN = "bench:bench:bench"
# scenario -> how long ago its backlog was enqueued (seconds); stale is past give_up_after_s
GIVE_UP_AFTER_S = PollingConfig().give_up_after_s
SCENARIOS = {"fresh": 60.0, "stale": 30 * 86_400.0}
# A daemon still running this long after its --max-seconds is hung, not slow to stop.
STOP_SLACK_S = 30.0


def read_kib(pid: int, field: str) -> int | None:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


def harvester_command(seconds: float, speed: float) -> list[str]:
    exe = str(Path(sys.executable).with_name("harvester"))
    return [exe, "run", "--max-seconds", str(seconds), "--speed", str(speed)]


def count_warnings(lines: list[str]) -> dict[str, int]:
    """Warnings and errors the daemon logged, by event (repeats it held back included)."""
    counts: dict[str, int] = {}
    for line in lines:
        with contextlib.suppress(ValueError):
            event = json.loads(line)
            if isinstance(event, dict) and event.get("level") in {"warning", "error", "critical"}:
                name = str(event.get("event"))
                counts[name] = counts.get(name, 0) + 1 + int(event.get("suppressed", 0))
    return counts


async def watch(command: list[str], env: dict[str, str], seconds: float) -> dict[str, Any]:
    """Run the subject ``command`` and sample its memory until it exits.

    Returns the samples together with how it ended: ``exit_code``, ``ran_s`` and, when it does
    not count, ``failure`` (and the last lines it wrote).
    """
    with tempfile.TemporaryFile(mode="w+") as log:
        began = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            *command, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
        )
        peak = rss = 0
        samples = []
        deadline = began + seconds + STOP_SLACK_S
        while proc.returncode is None and time.monotonic() < deadline:
            hwm = read_kib(proc.pid, "VmHWM")
            now_rss = read_kib(proc.pid, "VmRSS")
            if hwm:
                peak = max(peak, hwm)
            if now_rss:
                rss = now_rss
                samples.append((round(time.monotonic() - began, 1), now_rss))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(proc.wait(), timeout=0.2)
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            exit_code: int | None = None
        else:
            exit_code = proc.returncode
        ran_s = time.monotonic() - began
        log.seek(0)
        lines = log.read().splitlines()
        tail = lines[-5:]
    outcome: dict[str, Any] = {
        "exit_code": exit_code,
        "subject_exit_code": exit_code,
        "ran_s": round(ran_s, 1),
        "warnings": count_warnings(lines),
        "last_lines": tail,
    }
    failed = subject_failure(exit_code, ran_s, seconds)
    if failed is not None:
        outcome.update(exit_code=failed[0], failure=failed[1])
        return outcome
    outcome.update(
        peak_rss_mb=round(peak / 1024, 1),
        last_rss_mb=round(rss / 1024, 1),
        rss_mb_over_time=[(t, round(kib / 1024, 1)) for t, kib in samples[::10]],
    )
    return outcome


async def run_scenario(
    dbs: Databases, backlog: int, enqueued_ago_s: float, seconds: float, speed: float
) -> dict[str, Any]:
    dsn = await dbs.fresh()
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        load_s = await load_pending(pool, backlog, enqueued_ago_s)
        async with SimServer(speed=speed, seed=1, tokens=[TOKEN]) as sim:
            env = {
                **os.environ,
                "HARVESTER_DSN": dsn,
                "HARVESTER_API_TOKEN": TOKEN,
                "HARVESTER_API_BASE_URL": sim.url,
                "HARVESTER_SERVER__ENABLED": "false",
                "HARVESTER_LOG_LEVEL": "warning",
            }
            figures = await watch(harvester_command(seconds, speed), env, seconds)
            stats = sim.stats(per_job=False)
        counts = {
            str(r["state"]): int(r["n"])
            for r in await pool.fetch(
                "SELECT state, count(*)::bigint AS n FROM harvester.jobs GROUP BY state"
            )
        }
        polled = int(await pool.fetchval("SELECT count(*) FROM harvester.jobs WHERE polls > 0"))
    finally:
        await pool.close()
        await dbs.drop(dsn)
    figures.update({"backlog": backlog, "enqueued_ago_s": enqueued_ago_s, "load_s": round(load_s, 1)})
    expired = counts.get("expired", 0)
    if "failure" not in figures and enqueued_ago_s > GIVE_UP_AFTER_S and not expired:
        # The daemon survived, but did not do what this backlog is about: no figure for it.
        figures.update(
            exit_code=1,
            failure=(
                f"expired none of the {backlog:,} stale jobs in {figures['ran_s']} s "
                f"(warnings: {figures['warnings'] or 'none'})"
            ),
        )
        for key in ("peak_rss_mb", "last_rss_mb", "rss_mb_over_time"):
            figures.pop(key, None)
    if "failure" not in figures:
        figures.pop("last_lines", None)
    if "failure" not in figures:
        figures.update(
            {
                "requests": stats["requests_total"],
                "served_429": stats["served_429"],
                "jobs_polled": polled,
                "states_after": counts,
            }
        )
    return figures


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backlog = 50_000 if args.quick else 1_000_000
    seconds = 5.0 if args.quick else args.memory_seconds
    speed = 10.0
    names = args.memory_scenarios.split(",") if args.memory_scenarios else list(SCENARIOS)
    results: dict[str, dict[str, Any]] = {}
    async with databases(args.dsn) as dbs:
        for name in names:
            results[name] = await run_scenario(dbs, backlog, SCENARIOS[name], seconds, speed)
            state = results[name].get("failure", "ok")
            print(f"  {name}: {state}", file=sys.stderr)
    return report(args, results, backlog, seconds, speed)


def report(
    args: argparse.Namespace, results: dict[str, dict[str, Any]], backlog: int, seconds: float, speed: float
) -> dict[str, Any]:
    """Print and write the figures of the runs that count; fail if any did not."""
    headers = ("backlog", "run s", "requests", "jobs polled", "expired", "peak RSS MB", "last RSS MB")
    rows = [
        [
            f"{backlog:,} {name}",
            r["ran_s"],
            r["requests"],
            r["jobs_polled"],
            r["states_after"].get("expired", 0),
            r["peak_rss_mb"],
            r["last_rss_mb"],
        ]
        for name, r in results.items()
        if "failure" not in r
    ]
    failed = {name: r for name, r in results.items() if "failure" in r}
    if rows:
        print(table(headers, rows))
    for name, r in failed.items():
        print(f"FAILED {backlog:,} {name}: {r['failure']} (no figure)")
        for line in r.get("last_lines", []):
            print(f"  | {line}")
    exit_code = next((r["exit_code"] for r in failed.values()), 0)
    command = "python -m bench memory" + (" --quick" if args.quick else "")
    payload = {
        "command": command,
        "exit_code": exit_code,
        "seconds": seconds,
        "speed": speed,
        "scenarios": results,
        "table": {"headers": list(headers), "rows": rows},
    }
    print(f"wrote {write_json('memory', payload, Path(args.out) if args.out else None)}")
    if failed:
        raise BenchFailed(
            "memory", exit_code, "; ".join(f"{name}: {r['failure']}" for name, r in failed.items())
        )
    return payload


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--memory-seconds", type=float, default=30.0, help="memory: how long the daemon runs (default 30)"
    )
    parser.add_argument(
        "--memory-scenarios", default="", help="memory: comma-separated subset of " + ",".join(SCENARIOS)
    )
