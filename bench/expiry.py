"""Expiry benchmark: the daemon expiring a million stale jobs under a 2 s statement timeout.

A fresh database, migrated by the code under test, holds a backlog of pending, due jobs enqueued
30 days ago, past ``polling.give_up_after_s`` (a backfill, or a week of downtime). ``harvester run
--max-seconds`` then runs as its own process against the bundled simulator with
``HARVESTER_DATABASE__STATEMENT_TIMEOUT_S=2``; its housekeeping expires the backlog in bounded
batches while the workers claim as usual. Figures: jobs in state ``expired`` after the run, how long
the run took, how long until the last ``jobs_expired`` event (from the spawn), and jobs expired per
second over that time. The target: the whole backlog expired within the run.

``--code-root`` names the source tree whose daemon is measured (default: this repository). The
daemon and its ``harvester migrate`` run with that tree as working directory and first on
``PYTHONPATH``, so the same benchmark measures an older commit checked out elsewhere (``git worktree
add /tmp/before <commit>``) with that commit's package and migrations, for before/after figures.

A run counts only if the daemon exits 0 after the whole period (``bench.common.subject_failure``),
logged no ``*_failed`` event and no statement was cancelled (``QueryCanceled``, a statement
timeout); otherwise the benchmark fails with no figure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg

from bench.claims import load_pending
from bench.common import (
    BenchFailed,
    Databases,
    databases,
    print_checks,
    save,
    subject_failure,
    table,
    with_database,
)
from harvester.sim import SimServer

TOKEN = "bench:bench:bench"
ROOT = Path(__file__).resolve().parents[1]
STALE_AGE_S = 30 * 86_400.0  # past the default give_up_after_s (7 days)
STATEMENT_TIMEOUT_S = 2.0
BACKLOG, SECONDS = 1_000_000, 40.0
QUICK_BACKLOG, QUICK_SECONDS = 20_000, 5.0
# A daemon still running this long after its --max-seconds is hung, not slow to stop.
STOP_SLACK_S = 60.0
# What a cancelled statement leaves in the log, whichever event carries it.
CANCELLED = ("QueryCanceled", "statement timeout")


def code_env(code_root: Path, dsn: str, **extra: str) -> dict[str, str]:
    """The environment of a subprocess that runs ``code_root``'s package (no other HARVESTER_*)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(code_root), *filter(None, [env.get("PYTHONPATH")])])
    env["HARVESTER_DSN"] = dsn
    env.update(extra)
    return env


def describe_code(code_root: Path, dsn: str) -> dict[str, Any]:
    """Which commit is measured, whether its package or SQL differ from it, and that the subprocess
    really imports that package (not the one installed in the venv)."""

    def run(*command: str, env: dict[str, str] | None = None) -> str:
        done = subprocess.run(
            command, cwd=code_root, env=env, capture_output=True, text=True, check=False, timeout=60
        )
        return done.stdout.strip() if done.returncode == 0 else ""

    package = run(
        sys.executable, "-c", "import harvester; print(harvester.__file__)", env=code_env(code_root, dsn)
    )
    if not package or not Path(package).resolve().is_relative_to(code_root.resolve()):
        raise BenchFailed("expiry", 1, f"{code_root}: the daemon would import harvester from {package!r}")
    return {
        "root": str(code_root),
        "commit": run("git", "rev-parse", "HEAD") or None,
        "changed_files": run("git", "status", "--porcelain", "--", "harvester", "sql").splitlines(),
        "package": package,
    }


async def create_database(dbs: Databases) -> str:
    """An empty database (not the template: the code under test applies its own migrations)."""
    name = f"bench_expiry_{uuid.uuid4().hex[:12]}"
    conn = await asyncpg.connect(dbs.server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    return with_database(dbs.server_dsn, name)


async def migrate(code_root: Path, dsn: str) -> list[str]:
    """``harvester migrate`` of the code under test; returns the versions it applied."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harvester",
        "migrate",
        cwd=code_root,
        env=code_env(code_root, dsn),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        raise BenchFailed("expiry", proc.returncode or 1, f"harvester migrate failed: {text[-500:]}")
    for event in events_of(text.splitlines()):
        if event.get("event") == "migrations_applied":
            return [str(v) for v in event.get("versions", [])]
    return []


def events_of(lines: list[str]) -> list[dict[str, Any]]:
    found = []
    for line in lines:
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                event = json.loads(line)
                if isinstance(event, dict):
                    found.append(event)
    return found


def at(event: dict[str, Any]) -> float | None:
    """An event's wall-clock time (the log's ISO UTC timestamp) as epoch seconds."""
    try:
        return datetime.fromisoformat(str(event["timestamp"]).replace("Z", "+00:00")).timestamp()
    except (KeyError, ValueError):
        return None


async def run_daemon(code_root: Path, env: dict[str, str], seconds: float) -> dict[str, Any]:
    """``harvester run --max-seconds`` of the code under test, to its end; how it went, from its log."""
    with tempfile.TemporaryFile(mode="w+") as log:
        spawned_at = time.time()
        began = time.monotonic()
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "harvester",
            "run",
            "--max-seconds",
            f"{seconds:g}",
            cwd=code_root,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        exit_code: int | None
        try:
            exit_code = await asyncio.wait_for(proc.wait(), timeout=seconds + STOP_SLACK_S)
        except TimeoutError:
            proc.kill()
            await proc.wait()
            exit_code = None
        ran_s = time.monotonic() - began
        log.seek(0)
        lines = log.read().splitlines()
    events = events_of(lines)
    expiries = [e for e in events if e.get("event") == "jobs_expired"]
    last_expiry = max((t for t in map(at, expiries) if t is not None), default=None)
    failed_events = [e for e in events if str(e.get("event", "")).endswith("_failed")]
    cancelled = [line for line in lines if any(mark in line for mark in CANCELLED)]
    outcome: dict[str, Any] = {
        "exit_code": exit_code,
        "ran_s": round(ran_s, 2),
        "expired_logged": sum(int(e.get("count", 0)) for e in expiries),
        "expiry_passes": len(expiries),
        "expiry_s": None if last_expiry is None else round(last_expiry - spawned_at, 2),
        "failed_events": sorted({str(e["event"]) for e in failed_events}),
        "cancelled_lines": len(cancelled),
    }
    reasons = []
    failed = subject_failure(exit_code, ran_s, seconds)
    if failed is not None:
        reasons.append(failed[1])
    if failed_events:
        reasons.append(f"{len(failed_events)} *_failed events ({', '.join(outcome['failed_events'])})")
    if cancelled:
        reasons.append(f"{len(cancelled)} log lines of a cancelled statement")
    if reasons:
        outcome.update(
            exit_code=failed[0] if failed else 1,
            failure="; ".join(reasons),
            last_lines=[*cancelled[:3], *lines[-8:]],
        )
    return outcome


async def run_one(dbs: Databases, code_root: Path, backlog: int, seconds: float) -> dict[str, Any]:
    dsn = await create_database(dbs)
    try:
        code = await asyncio.to_thread(describe_code, code_root, dsn)
        migrations = await migrate(code_root, dsn)
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            load_s = await load_pending(pool, backlog, STALE_AGE_S)
            async with SimServer(speed=1.0, seed=5, tokens=[TOKEN]) as sim:
                env = code_env(
                    code_root,
                    dsn,
                    HARVESTER_API_TOKEN=TOKEN,
                    HARVESTER_API_BASE_URL=sim.url,
                    HARVESTER_SERVER__ENABLED="false",
                    HARVESTER_LOG_LEVEL="info",
                    HARVESTER_DATABASE__STATEMENT_TIMEOUT_S=f"{STATEMENT_TIMEOUT_S:g}",
                )
                outcome = await run_daemon(code_root, env, seconds)
            states = {
                str(r["state"]): int(r["n"])
                for r in await pool.fetch(
                    "SELECT state, count(*)::bigint AS n FROM harvester.jobs GROUP BY state"
                )
            }
            # Jobs a worker claimed (and polled: the simulator never heard of them) are leased, so
            # the sweep skips them; those left pending say so, not an unfinished sweep.
            claimed_pending = await pool.fetchval(
                "SELECT count(*) FROM harvester.jobs WHERE state = 'pending' AND lease_token > 0"
            )
            # The daemon's updates left the planner's statistics saying no job is expired: without
            # a fresh ANALYZE the queries below can rescan the table once per expired row.
            await pool.execute("ANALYZE harvester.jobs")
            # Each batch stamps finished_at with its transaction's start: first to last batch.
            first, last = await pool.fetchrow(
                "SELECT min(finished_at), max(finished_at) FROM harvester.jobs WHERE state = 'expired'"
            ) or (None, None)
            # Whether the pace holds as the backlog shrinks (dead index entries, a growing feed).
            paced = await pool.fetch(
                "SELECT floor(extract(epoch FROM finished_at - $1::timestamptz) / 10)::int AS slot,"
                "       count(*) AS n"
                "  FROM harvester.jobs WHERE state = 'expired' GROUP BY 1 ORDER BY 1",
                first,
            )
        finally:
            await pool.close()
    finally:
        await dbs.drop(dsn)
    expired = states.get("expired", 0)
    expiry_s = outcome["expiry_s"]
    outcome.update(
        {
            "code": code,
            "migrations": migrations,
            "backlog": backlog,
            "load_s": round(load_s, 1),
            "expired": expired,
            "states_after": states,
            "pending_claimed_by_workers": int(claimed_pending),
            "batches_span_s": None if first is None else round((last - first).total_seconds(), 2),
            "expired_per_10s": [int(r["n"]) for r in paced],
            "jobs_per_s": round(expired / expiry_s) if expiry_s else None,
        }
    )
    return outcome


def checks(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "run": Path(result["code"]["root"]).name or "/",
            "figure": "expired within the run",
            "target": f"== {result['backlog']:,}",
            "value": result["expired"],
            "met": result["expired"] == result["backlog"],
        }
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    backlog = QUICK_BACKLOG if args.quick else args.expiry_backlog
    seconds = QUICK_SECONDS if args.quick else args.expiry_seconds
    code_root = resolved(args.code_root)
    async with databases(args.dsn) as dbs:
        result = await run_one(dbs, code_root, backlog, seconds)
    print(f"  {code_root} at {result['code']['commit']}: {result.get('failure', 'ok')}", file=sys.stderr)
    headers = ("code", "backlog", "run s", "expired", "expiry s", "jobs/s", "batches span s", "exit")
    failures = [result["failure"]] if "failure" in result else []
    rows = []
    if not failures:
        rows.append(
            [
                f"{code_root} ({(result['code']['commit'] or '?')[:7]})",
                backlog,
                result["ran_s"],
                result["expired"],
                result["expiry_s"],
                result["jobs_per_s"],
                result["batches_span_s"],
                result["exit_code"],
            ]
        )
        print(table(headers, rows))
    else:
        print(f"FAILED {code_root}: {result['failure']} (no figure)")
        for line in result.get("last_lines", []):
            print(f"  | {line}")
    targets = checks(result) if not failures else []
    if args.quick:
        print("  (--quick: a small backlog and a short run, the figures are not meaningful)")
    print_checks(targets, ("run",))
    payload = {
        "command": command(args),
        "quick": args.quick,
        "exit_code": result["exit_code"],
        "max_seconds": seconds,
        "statement_timeout_s": STATEMENT_TIMEOUT_S,
        "stale_age_s": STALE_AGE_S,
        "run": result,
        "checks": targets,
        "table": {"headers": list(headers), "rows": rows},
    }
    save("expiry", payload, args.out, failures, result["exit_code"])
    return payload


def resolved(path: str) -> Path:
    return Path(path).resolve()


def command(args: argparse.Namespace) -> str:
    parts = ["python -m bench expiry"]
    if args.quick:
        parts.append("--quick")
    else:
        if args.expiry_backlog != BACKLOG:
            parts.append(f"--expiry-backlog {args.expiry_backlog}")
        if args.expiry_seconds != SECONDS:
            parts.append(f"--expiry-seconds {args.expiry_seconds:g}")
    if resolved(args.code_root) != ROOT:
        parts.append(f"--code-root {args.code_root}")
    return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--expiry-backlog",
        type=int,
        default=BACKLOG,
        help=f"expiry: stale pending jobs (default {BACKLOG:,}, --quick {QUICK_BACKLOG:,})",
    )
    parser.add_argument(
        "--expiry-seconds",
        type=float,
        default=SECONDS,
        help=f"expiry: the daemon's --max-seconds (default {SECONDS:g}, --quick {QUICK_SECONDS:g})",
    )
    parser.add_argument(
        "--code-root",
        default=str(ROOT),
        help="expiry: the source tree whose daemon and migrations are measured (default: this one), "
        "e.g. an older commit's worktree for before/after figures",
    )
