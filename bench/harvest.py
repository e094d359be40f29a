"""Harvest benchmark: the harvester against the seed's polling loop, same jobs, same limit.

For each scenario both engines run one after the other, each against a fresh simulator with the
same seed and a fresh database; jobs arrive on the same schedule (Poisson arrivals, two thirds
spiderSite 10-30 s, one third spiderMaps 30-90 s, the simulator's 5 % failures and 2 % cancels), are
created in the simulator in the same order (so they are the same jobs) and enqueued as they arrive.
Everything is time-scaled by ``--speed``; every figure is reported in API (unscaled) time.

Figures: harvested jobs per minute, API requests per harvested job (200 stored) and per finished
job (any final state stored), 429s, the worst rolling 60 s window, completion-to-stored latency
(simulator completion time against the row's store time), and how long after the last upstream
completion the last row was stored (drain).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol
from uuid import UUID

import asyncpg

from bench.common import BenchFailed, Databases, databases, percentile, save, table
from bench.seedloop import SeedLoop
from harvester import config, logs
from harvester.daemon import run as daemon
from harvester.db import admin
from harvester.db.jobs import PgJobStore
from harvester.db.limiter import SharedLimiter
from harvester.sim import SimServer
from harvester.sim.admin import create_jobs
from harvester.sim.jobs import MAPS, SITE, Plan

TOKEN = "bench:bench:bench"
LIMIT_PER_MIN = 100
BACKLOG_AGE_S = 900.0  # backlog jobs were submitted this long before the run: all long finished
TICK_API_S = 0.5  # arrivals are released in steps of this much API time


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    per_minute: float  # arrivals per API minute; 0 with a backlog
    minutes: float  # span of the arrivals, API minutes
    backlog: int = 0  # jobs already finished upstream when the run starts
    tail_s: float = 300.0  # API seconds after the last arrival before a run is cut off


SCENARIOS = (
    Scenario("light", 25, 6),
    Scenario("half", 50, 6),
    Scenario("budget", 95, 10),
    Scenario("backlog", 0, 0, backlog=500, tail_s=600),
)
QUICK = (
    Scenario("light", 40, 0.75, tail_s=150),
    Scenario("backlog", 0, 0, backlog=40, tail_s=120),
)


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float  # API seconds after the run starts
    job_type: str
    age_s: float  # how long before arriving it was submitted (backlog only)


def schedule(scenario: Scenario, seed: int) -> list[Arrival]:
    """The jobs of a scenario, identical for both engines given the seed."""
    rng = random.Random(f"bench:{seed}:{scenario.name}")
    if scenario.backlog:
        return [
            Arrival(0.0, SITE if rng.random() < 2 / 3 else MAPS, BACKLOG_AGE_S + rng.uniform(0, 60))
            for _ in range(scenario.backlog)
        ]
    arrivals: list[Arrival] = []
    at = 0.0
    end = scenario.minutes * 60
    while True:
        at += rng.expovariate(scenario.per_minute / 60)
        if at >= end:
            return arrivals
        arrivals.append(Arrival(at, SITE if rng.random() < 2 / 3 else MAPS, 0.0))


class Engine(Protocol):
    async def start(self) -> None: ...
    def arrive(self, job_ids: list[UUID]) -> None: ...
    async def idle(self) -> bool: ...
    async def stop(self) -> None: ...
    def outcomes(self) -> dict[str, int]: ...


class HarvesterEngine:
    """The daemon in-process on default settings (stream off); arrivals are plain inserts."""

    def __init__(self, dsn: str, sim: SimServer, speed: float, pool: asyncpg.Pool, **settings: Any) -> None:
        self.pool = pool
        self.cfg = config.load(
            environ={},
            overrides={
                "database.dsn": dsn,
                "api.base_url": sim.url,
                "api.token": TOKEN,
                "speed": speed,
                "server.enabled": False,
                "log.level": "warning",
                # this bench compares list-and-polls with the seed loop; bench.events the stream
                "polling.events": "off",
                **settings,
            },
        )
        self.stop_event = asyncio.Event()
        self.task: asyncio.Task[int] | None = None
        self.inserts: set[asyncio.Task[int]] = set()

    async def start(self) -> None:
        self.task = asyncio.create_task(daemon.run(self.cfg, self.stop_event))

    def arrive(self, job_ids: list[UUID]) -> None:
        task = asyncio.create_task(admin.enqueue(self.pool, job_ids))
        self.inserts.add(task)
        task.add_done_callback(self.inserts.discard)

    async def idle(self) -> bool:
        if self.task is not None and self.task.done():
            return True
        return not self.inserts and not await PgJobStore(self.pool).any_pending()

    async def stop(self) -> None:
        """Stop the daemon; it must still have been running and must exit 0, or the run fails."""
        early = self.task is not None and self.task.done()
        self.stop_event.set()
        code = await self.task if self.task is not None else 0
        if code != 0 or early:
            raise BenchFailed(
                "harvest",
                code or 1,
                f"the daemon exited {code} " + ("before the run ended" if early else "when stopped"),
            )

    def outcomes(self) -> dict[str, int]:
        return {}


class SeedEngine:
    def __init__(self, sim: SimServer, speed: float, pool: asyncpg.Pool) -> None:
        self.pool = pool
        limiter = SharedLimiter(
            pool,
            token=TOKEN,
            requests_per_minute=LIMIT_PER_MIN * speed,
            burst=20,
            window_s=60 / speed,
            default_pause_s=60 / speed,
        )
        self.loop = SeedLoop(sim.url, TOKEN, pool, limiter, speed)

    async def start(self) -> None:
        await self.loop.start()

        self.inserts: set[asyncio.Task[None]] = set()

    def arrive(self, job_ids: list[UUID]) -> None:
        task = asyncio.create_task(self._arrive(job_ids))
        self.inserts.add(task)
        task.add_done_callback(self.inserts.discard)

    async def _arrive(self, job_ids: list[UUID]) -> None:
        await admin.enqueue(self.pool, job_ids)  # so the store finds the jobs row, as for the harvester
        self.loop.arrive(job_ids)

    async def idle(self) -> bool:
        return not self.inserts and self.loop.idle()

    async def stop(self) -> None:
        await self.loop.stop()

    def outcomes(self) -> dict[str, int]:
        return dict(self.loop.outcomes)


async def drive(sim: SimServer, engine: Engine, arrivals: Sequence[Arrival], speed: float) -> None:
    """Create each job in the simulator when it arrives (in schedule order) and hand it over."""
    clock = sim.state.clock
    cred = sim.state.credential(TOKEN)
    assert cred is not None
    start = clock.now()
    i = 0
    while i < len(arrivals):
        now = clock.now() - start
        batch: list[UUID] = []
        while i < len(arrivals) and arrivals[i].at_s <= now:
            a = arrivals[i]
            plan = Plan(start_offset_s=max(0.0, now - a.at_s) + a.age_s)
            batch += [UUID(j) for j in create_jobs(sim.state, cred, 1, a.job_type, plan)]
            i += 1
        if batch:
            engine.arrive(batch)
        if i < len(arrivals):
            wait = min(arrivals[i].at_s - now, TICK_API_S)
            await asyncio.sleep(max(0.0, wait) / speed)


async def run_one(kind: str, scenario: Scenario, dbs: Databases, speed: float, seed: int) -> dict[str, Any]:
    dsn = await dbs.fresh()
    arrivals = schedule(scenario, seed)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=12)
    try:
        async with SimServer(speed=speed, seed=seed, tokens=[TOKEN]) as sim:
            engine: Engine = (
                HarvesterEngine(dsn, sim, speed, pool)
                if kind == "harvester"
                else SeedEngine(sim, speed, pool)
            )
            started_wall = time.time()
            await engine.start()
            await drive(sim, engine, arrivals, speed)
            deadline = time.monotonic() + scenario.tail_s / speed
            while time.monotonic() < deadline:
                if await engine.idle():
                    break
                await asyncio.sleep(0.05)
            cut_off = not await engine.idle()
            await engine.stop()
            figures = await measure(pool, sim, speed, started_wall)
            figures["cut_off"] = cut_off
            figures["engine_outcomes"] = engine.outcomes()
            return figures
    finally:
        await pool.close()
        await dbs.drop(dsn)


async def measure(pool: asyncpg.Pool, sim: SimServer, speed: float, started_wall: float) -> dict[str, Any]:
    """The figures of one run, all in API seconds (real seconds times the speed)."""
    rows = await pool.fetch(
        "SELECT j.job_id, j.state, extract(epoch FROM j.enqueued_at)::float8 AS enqueued,"
        "       extract(epoch FROM COALESCE(r.fetched_at, j.finished_at))::float8 AS stored"
        "  FROM harvester.jobs j LEFT JOIN harvester.results r USING (job_id)"
    )
    clock = sim.state.clock
    stats = sim.stats(per_job=False)
    now_sim = clock.now()
    latencies, completions, stored_at = [], [], []
    states: dict[str, int] = {}
    for row in rows:
        states[row["state"]] = states.get(row["state"], 0) + 1
        job = sim.state.jobs[str(row["job_id"])]
        done_at = job.finished_at()
        if done_at <= now_sim:
            completions.append(max(clock.real_wall(done_at), row["enqueued"]))
        if row["state"] != "pending" and row["stored"] is not None:
            stored_at.append(row["stored"])
            # a backlog job finished before it was enqueued: count from the enqueue
            latencies.append((row["stored"] - max(clock.real_wall(done_at), row["enqueued"])) * speed)
    first = min((r["enqueued"] for r in rows), default=started_wall)
    harvested = states.get("harvested", 0)
    finished = sum(n for s, n in states.items() if s != "pending")
    requests = int(stats["requests_total"])
    span_min = ((max(stored_at) - first) * speed / 60) if stored_at else None
    offered_min = ((max(completions) - first) * speed / 60) if completions else None
    per_min = finished / span_min if span_min else None
    offered = len(completions) / offered_min if offered_min else math.inf
    pace = None if per_min is None else per_min / min(offered, LIMIT_PER_MIN)
    windows = [int(c["max_requests_60s"]) for c in stats["rate_limit"].values()]
    passes = await pool.fetchrow(
        "SELECT coalesce(sum(passes), 0)::int AS passes,"
        " coalesce(sum(pages), 0)::int AS pages FROM harvester.discovery"
    )
    return {
        "jobs": len(rows),
        "states": states,
        "harvested": harvested,
        "finished": finished,
        "requests": requests,
        "requests_by_endpoint": {k: sum(v.values()) for k, v in stats["requests_by_endpoint"].items()},
        "requests_per_harvested": requests / harvested if harvested else None,
        "requests_per_finished": requests / finished if finished else None,
        "served_429": int(stats["served_429"]),
        "worst_window_60s": max(windows, default=0),
        "result_fetches": stats["result_fetches"]["total"],
        "list_passes": passes["passes"] if passes else 0,
        "list_pages": passes["pages"] if passes else 0,
        "finished_per_min": per_min,
        "offered_per_min": offered if offered != math.inf else None,
        "pace": pace,
        "latency_p50_s": percentile(latencies, 50),
        "latency_p95_s": percentile(latencies, 95),
        "latency_max_s": max(latencies, default=None),
        "drain_s": (
            (max(stored_at) - max(completions)) * speed
            if stored_at and completions and finished == len(rows)
            else None
        ),
    }


ROW_KEYS = (
    "finished_per_min",
    "requests_per_harvested",
    "requests_per_finished",
    "served_429",
    "worst_window_60s",
    "latency_p50_s",
    "latency_p95_s",
    "drain_s",
)
HEADERS = (
    "scenario / engine",
    "jobs",
    "stored",
    "jobs/min",
    "req/harvested",
    "req/finished",
    "429s",
    "max 60s",
    "p50 s",
    "p95 s",
    "drain s",
)


def row_of(name: str, kind: str, fig: dict[str, Any]) -> list[Any]:
    return [
        f"{name} / {kind}",
        fig["jobs"],
        fig["finished"] if kind == "harvester" else fig["harvested"],
        *(fig[k] for k in ROW_KEYS),
    ]


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logs.setup("json", "error", stream=sys.stderr)
    scenarios: tuple[Scenario, ...] = QUICK if args.quick else SCENARIOS
    if args.scenarios:
        scenarios = tuple(s for s in scenarios if s.name in args.scenarios.split(","))
    speed = args.speed or (60.0 if args.quick else 20.0)
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    failures: list[str] = []
    exit_code = 0
    async with databases(args.dsn) as dbs:
        for scenario in scenarios:
            results[scenario.name] = {"scenario": asdict(scenario)}
            for kind in ("harvester", "seed"):
                began = time.monotonic()
                try:
                    fig = await run_one(kind, scenario, dbs, speed, args.seed)
                except BenchFailed as exc:
                    failures.append(f"{scenario.name} / {kind}: {exc.reason}")
                    exit_code = exit_code or exc.exit_code
                    results[scenario.name][kind] = {"exit_code": exc.exit_code, "failure": exc.reason}
                    print(f"  {scenario.name:8s} {kind:9s} FAILED: {exc.reason}", file=sys.stderr)
                    continue
                fig["wall_s"] = round(time.monotonic() - began, 1)
                results[scenario.name][kind] = fig
                rows.append(row_of(scenario.name, kind, fig))
                print(f"  {scenario.name:8s} {kind:9s} done in {fig['wall_s']} s", file=sys.stderr)
    if rows:
        print(table(HEADERS, rows))
    for failure in failures:
        print(f"FAILED {failure} (no figure)")
    payload = {
        "command": command(args),
        "speed": speed,
        "seed": args.seed,
        "quick": args.quick,
        "exit_code": exit_code,
        "scenarios": results,
        "table": {"headers": list(HEADERS), "rows": rows},
    }
    save("harvest", payload, args.out, failures, exit_code)
    return payload


def command(args: argparse.Namespace) -> str:
    parts = ["python -m bench harvest"]
    if args.quick:
        parts.append("--quick")
    if args.speed:
        parts.append(f"--speed {args.speed:g}")
    if args.scenarios:
        parts.append(f"--scenarios {args.scenarios}")
    return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed",
        type=float,
        default=None,
        help="time scale of simulator and engines (default 20, --quick 60)",
    )
    parser.add_argument("--seed", type=int, default=7, help="simulator and schedule seed")
    parser.add_argument("--scenarios", default="", help="comma-separated subset: light,half,budget,backlog")
