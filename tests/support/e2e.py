"""What the end-to-end tests share: configuration, simulator admin calls, polling and checks.

The daemon runs time-scaled (``speed``) against an in-process simulator on the same scale, on a
fresh migrated database. Everything here waits for conditions with a deadline, never for a fixed
time, so a slow machine makes a test slower, not red.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import aiohttp
import asyncpg

from harvester import config
from harvester.sim import SimServer
from tests.support import configs

TOKEN = "e2e:key:secret"
ROOT = Path(__file__).resolve().parents[2]

# The sim's view of a finished job → the state the harvester must leave it in.
EXPECTED_STATE = {"completed": "harvested", "failed": "failed", "cancelled": "cancelled"}


def daemon_config(dsn: str, sim: SimServer, speed: float, **overrides: Any) -> config.Config:
    """A daemon configuration for this simulator; ``overrides`` use dotted keys."""
    values: dict[str, Any] = {
        "database.dsn": dsn,
        "api.base_url": sim.url,
        "api.token": TOKEN,
        "speed": speed,
        "server.enabled": False,
        "log.level": "warning",
    }
    values.update(overrides)
    return configs.loaded(values)


def daemon_env(
    dsn: str, sim: SimServer, speed: float, worker_id: str, extra: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment of a ``harvester run`` subprocess: documented names, then section keys."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update(
        {
            "HARVESTER_DSN": dsn,
            "HARVESTER_API_TOKEN": TOKEN,
            "HARVESTER_API_BASE_URL": sim.url,
            "HARVESTER_SPEED": str(speed),
            "HARVESTER_SERVER__ENABLED": "false",
            "HARVESTER_LOG_LEVEL": "info",
            "HARVESTER_WORKER__WORKER_ID": worker_id,
        }
    )
    env.update(extra or {})
    return env


@dataclass
class Daemon:
    """A ``harvester run`` subprocess with its log file."""

    proc: asyncio.subprocess.Process
    log_path: Path
    worker_id: str

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def exit_code(self, within_s: float) -> int:
        return await asyncio.wait_for(self.proc.wait(), timeout=within_s)

    async def stop(self) -> None:
        """Kill it if it is still running (test clean-up)."""
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


async def start_daemon(env: Mapping[str, str], log_dir: Path, *args: str) -> Daemon:
    worker_id = env["HARVESTER_WORKER__WORKER_ID"]
    log_path = log_dir / f"{worker_id}.log"
    with log_path.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "harvester",
            "run",
            *args,
            env=dict(env),
            cwd=str(ROOT),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )
    return Daemon(proc, log_path, worker_id)


async def sim_jobs(sim: SimServer, count: int, job_type: str = "spiderSite", **plan: Any) -> list[UUID]:
    """Create jobs in the simulator through its admin endpoint (``outcome``, ``duration_s``...)."""
    body = {"count": count, "type": job_type, "token": TOKEN, **plan}
    async with aiohttp.ClientSession() as session, session.post(f"{sim.url}/_sim/jobs", json=body) as resp:
        resp.raise_for_status()
        created = await resp.json()
    return [UUID(str(i)) for i in created["job_ids"]]


async def sim_admin(sim: SimServer, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{sim.url}/_sim/{path}", json=dict(body)) as resp,
    ):
        resp.raise_for_status()
        answer: dict[str, Any] = await resp.json()
    return answer


def unknown_ids(count: int) -> list[UUID]:
    """Job IDs the simulator never issued: they must end ``not_found``."""
    return [uuid4() for _ in range(count)]


async def enqueue(dsn: str, ids: list[UUID]) -> None:
    """Insert job IDs the way a producer does (one plain INSERT)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING", ids
        )
    finally:
        await conn.close()


async def wait_for(
    check: Callable[[], Awaitable[bool] | bool], within_s: float, what: str, interval: float = 0.1
) -> float:
    """Poll ``check`` (plain or async) until it holds; return the seconds it took."""
    started = time.monotonic()
    deadline = started + within_s
    while True:
        held = check()
        if held if isinstance(held, bool) else await held:
            return time.monotonic() - started
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within_s:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def fetch_jobs(dsn: str) -> dict[UUID, asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT * FROM harvester.jobs")
    finally:
        await conn.close()
    return {row["job_id"]: row for row in rows}


async def state_counts(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM harvester.jobs GROUP BY state")
    finally:
        await conn.close()
    return {row["state"]: int(row["n"]) for row in rows}


def sim_status(sim: SimServer, job_id: UUID) -> str | None:
    """The simulator's current status of a job, None if it never existed."""
    job = sim.state.jobs.get(str(job_id))
    return None if job is None else job.status_at(sim.state.clock.now())


def mismatched_states(sim: SimServer, jobs: Mapping[UUID, asyncpg.Record]) -> list[str]:
    """Jobs whose harvester state disagrees with the simulator's own table."""
    wrong = []
    for job_id, row in jobs.items():
        status = sim_status(sim, job_id)
        expected = "not_found" if status is None else EXPECTED_STATE.get(status, "pending")
        if row["state"] != expected:
            wrong.append(f"{job_id}: sim {status}, harvester {row['state']}")
    return wrong


def worst_window(stats: Mapping[str, Any]) -> int:
    """The most requests the credential sent in any rolling (scaled) 60 s window."""
    return int(stats["rate_limit"][TOKEN.split(":")[0]]["max_requests_60s"])


def max_burst(stats: Mapping[str, Any]) -> float:
    return float(stats["rate_limit"][TOKEN.split(":")[0]]["max_burst"])


@dataclass
class RequestLog:
    """Every request the simulator answers, with the real time it answered it.

    Wraps ``SimState.record`` (called once per request, whatever the outcome), so a test can say
    what was sent during a given stretch of time.
    """

    entries: list[tuple[float, str, str]] = field(default_factory=list)

    def attach(self, sim: SimServer) -> None:
        state = sim.state
        original = state.record

        def record(endpoint: str, outcome: str, client_id: str) -> None:
            self.entries.append((time.monotonic(), endpoint, outcome))
            original(endpoint, outcome, client_id)

        state.record = record  # type: ignore[method-assign]

    def between(self, start: float, end: float) -> list[tuple[float, str, str]]:
        return [entry for entry in self.entries if start <= entry[0] < end]

    def first(self, outcome: str, after: float = 0.0) -> float | None:
        return next((at for at, _, got in self.entries if got == outcome and at >= after), None)


async def listening(dsn: str) -> bool:
    """Whether a daemon holds LISTEN harvester_jobs on this database (seen from ``dsn``)."""
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND query ILIKE 'LISTEN%harvester_jobs%'"
            )
        )
    finally:
        await conn.close()


async def all_claimed(dsn: str) -> bool:
    """Whether every job in the queue has been claimed at least once."""
    conn = await asyncpg.connect(dsn)
    try:
        return bool(await conn.fetchval("SELECT bool_and(lease_token > 0) FROM harvester.jobs"))
    finally:
        await conn.close()
