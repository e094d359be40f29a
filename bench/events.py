"""Events benchmark: harvester with the event stream, without it, and the seed loop, same jobs.

Three engines run one after the other on the same arrivals: the in-process daemon with
``polling.events = "sse"``, the same daemon with ``"off"``, and the seed document's loop
(:mod:`bench.seedloop`). Each gets its own simulator (same seed, same settings) and its own database.
Everything is time-scaled by ``--speed`` (default 20); every figure is in API (unscaled) time.

Conditions for every load, as SpiderIQ may behave:

- the account's ``/jobs/list`` shows every job of the credential: about 30 % more jobs than
  harvester enqueues are submitted under the same token (another user of the credential) and never
  handed to any engine; they are created in between ours, so they share the queue and the list;
- the stream loses 3 % of the job events (``events_lost``) and every stream is cut 10 API minutes
  after it opened (``stream_cut_s``); the simulator's default noise (campaign events, unknown event
  types, comments) is on. Two extra runs of the light load, streaming harvester only: with a
  healthy stream (``light_healthy``: nothing lost, no cut) and with the stream refused (503) for
  the whole run (``light_refused``: it must do no worse than ``light / off``).

Latency is completion to stored for the jobs that ended (completed or failed, the ends the stream
announces); ``p95 all`` adds the cancelled ones, which no event announces. ``late_past_bound``
counts the ended jobs stored later than twice their type's typical run or one reconcile interval,
whichever is shorter (how late a lost end may be found; 0 wanted).

Loads: ``light`` (20 jobs/min for 8 min) and ``half`` (50/min for 6 min) arrive live (Poisson) into
a queue with no limit of its own; ``budget`` submits 400 jobs at once into a queue that starts our
jobs at 95/min (the queue's pace counts the other user's jobs too, so it is set to 95 x 1.3);
``bulk`` submits 200 at once into a busy queue that starts 20 jobs a minute, all of them counted
(ours come out at about 15/min). The queue is FIFO over the whole account, so live arrivals during
a bulk would only wait behind it: the jobs that finish meanwhile are the bulk's own, and their
latency is what ``bulk`` reports. A last run repeats ``budget`` for the streaming harvester with
``rate_limit.reserve_per_minute = 20``: its worst rolling 60 s window must stay at or below 80.

``--shape`` runs the chosen loads on other run-time shapes of the simulator (``SHAPES``), since
SpiderIQ says neither what ``processing_time_seconds`` covers nor how run times spread: the
reported time covering half of each run (``half-reported``) or reported null (``null-reported``),
lognormal run times (``heavy-tailed``: most crawls light, a few deep ones 10-20 times the median),
and both (``heavy-tailed-half``). A shaped run is keyed and labelled ``load@shape``, e.g.
``bulk@heavy-tailed / sse``, and held to its load's checks; ``documented`` (the default) is the
simulator's default and keeps the plain ``load`` key.

Each engine gets a warm-up before the first job (5 API s; the streaming daemon until its stream
is open), as a daemon that has been running would have: jobs submitted while the stream is not yet
open lose their ``job.queued`` event, which is the restart case, not the steady state. Jobs are
created when their arrival is released (at most one 0.5 API s tick late), not back-dated, so that
their ``job.queued`` is sent.

Requests count everything the simulator received with the credential (results, list pages, status
polls, stream connections; job creation goes through the unauthenticated admin endpoint and costs
nothing). A harvester run counts only if its daemon was still running at the end and exited 0 when
stopped; otherwise the run prints no figure and the benchmark fails with the daemon's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any
from uuid import UUID

import asyncpg

from bench import harvest
from bench.common import BenchFailed, Databases, databases, percentile, print_checks, save, table
from harvester import logs
from harvester.sim import SimServer
from harvester.sim.admin import create_jobs
from harvester.sim.jobs import MAPS, SITE, Plan

NAME = "events"
TOKEN = harvest.TOKEN
EXTRA_SHARE = 0.30  # jobs of the account no engine is told about, per job it is told about
FAULTS = {"events_lost": 0.03, "stream_cut_s": 600.0}
ENGINES = ("sse", "off", "seed")
RESERVE_PER_MIN = 20.0
RESERVE_LIMIT = harvest.LIMIT_PER_MIN - RESERVE_PER_MIN
RECONCILE_S = 300.0  # polling.list_reconcile_s's default: a lost end is found within it
# A stream refused for the whole run must do no worse than no stream at all (light / off of the
# same run): a few connection attempts more, and the same latency give or take the noise.
REFUSED_EXTRA_REQ = 0.05
REFUSED_P95_FACTOR = 1.25
WARM_UP_API_S = 5.0
STREAM_WAIT_API_S = 60.0
# The simulator's run-time settings per --shape (harvester.sim.jobs.RunTimes); "documented" is its default.
DOCUMENTED = "documented"
HEAVY: dict[str, Any] = {"run_time_shape": "lognormal", "run_time_sigma": 1.0}
SHAPES: dict[str, dict[str, Any]] = {
    DOCUMENTED: {},
    "half-reported": {"processing_time_share": 0.5},
    "null-reported": {"processing_time_share": None},
    "heavy-tailed": HEAVY,
    "heavy-tailed-half": {**HEAVY, "processing_time_share": 0.5},
}


@dataclass(frozen=True, slots=True)
class Load:
    name: str
    per_minute: float = 0.0  # our live arrivals per API minute
    minutes: float = 0.0  # span of the live arrivals, API minutes
    at_once: int = 0  # our jobs submitted together at the start
    queue_per_min: float | None = None  # the simulator queue's pace over all the account's jobs
    tail_s: float = 300.0  # API seconds after the last arrival before a run is cut off
    faults: tuple[tuple[str, Any], ...] = tuple(FAULTS.items())  # the stream's faults
    engines: tuple[str, ...] = ENGINES
    arrivals: str = ""  # the name whose arrivals this load repeats ("" = its own)


HEALTHY: tuple[tuple[str, Any], ...] = ()
REFUSED = (("stream_refuse", "503"),)
LOADS = (
    Load("light_healthy", per_minute=20, minutes=8, faults=HEALTHY, engines=("sse",), arrivals="light"),
    Load("light", per_minute=20, minutes=8),
    Load("light_refused", per_minute=20, minutes=8, faults=REFUSED, engines=("sse",), arrivals="light"),
    Load("half", per_minute=50, minutes=6),
    Load("budget", at_once=400, queue_per_min=95 * (1 + EXTRA_SHARE), tail_s=660),
    Load("bulk", at_once=200, queue_per_min=20, tail_s=1080),
)
QUICK = (
    Load("light", per_minute=40, minutes=0.5, tail_s=150),
    Load("budget", at_once=30, queue_per_min=95 * (1 + EXTRA_SHARE), tail_s=150),
)


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float  # API seconds after the run starts
    job_type: str
    ours: bool  # handed to the engine; False: another user's job on the same account


def schedule(load: Load, seed: int) -> list[Arrival]:
    """The account's jobs in creation order, identical for every engine given the seed."""
    rng = random.Random(f"bench-events:{seed}:{load.arrivals or load.name}")

    def kind() -> str:
        return SITE if rng.random() < 2 / 3 else MAPS

    if load.at_once:
        extras = round(load.at_once * EXTRA_SHARE)
        owners = [True] * load.at_once + [False] * extras
        rng.shuffle(owners)
        return [Arrival(0.0, kind(), ours) for ours in owners]
    arrivals: list[Arrival] = []
    end = load.minutes * 60
    for ours, rate in ((True, load.per_minute), (False, load.per_minute * EXTRA_SHARE)):
        at = 0.0
        while True:
            at += rng.expovariate(rate / 60)
            if at >= end:
                break
            arrivals.append(Arrival(at, kind(), ours))
    arrivals.sort(key=lambda a: a.at_s)
    return arrivals


class StreamHarvester(harvest.HarvesterEngine):
    """The daemon in-process, default settings but for the stream switch and the reserve."""

    def __init__(
        self, dsn: str, sim: SimServer, speed: float, pool: asyncpg.Pool, events: str, reserve: float
    ) -> None:
        super().__init__(
            dsn, sim, speed, pool, **{"polling.events": events, "rate_limit.reserve_per_minute": reserve}
        )

    async def stop(self) -> None:
        try:
            await super().stop()
        except BenchFailed as exc:
            raise BenchFailed(NAME, exc.exit_code, exc.reason) from exc


async def drive(sim: SimServer, engine: harvest.Engine, arrivals: Sequence[Arrival], speed: float) -> None:
    """Create every job of the account when it arrives, in schedule order; hand ours over."""
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
            # Created now, not back-dated to its planned instant: a back-dated job's job.queued
            # would be in the past and never sent, and the engines would not see the stream as is.
            ids = create_jobs(sim.state, cred, 1, a.job_type, Plan())
            if a.ours:
                batch += [UUID(j) for j in ids]
            i += 1
        if batch:
            engine.arrive(batch)
        if i < len(arrivals):
            wait = min(arrivals[i].at_s - now, harvest.TICK_API_S)
            await asyncio.sleep(max(0.0, wait) / speed)


def keyed(name: str, shape: str) -> str:
    """A run's key in the results and its table label: the load's name, ``@shape`` unless documented."""
    return name if shape == DOCUMENTED else f"{name}@{shape}"


async def run_one(
    engine_kind: str,
    load: Load,
    dbs: Databases,
    speed: float,
    seed: int,
    reserve: float = 0.0,
    shape: str = DOCUMENTED,
) -> dict[str, Any]:
    dsn = await dbs.fresh()
    arrivals = schedule(load, seed)
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=12)
    try:
        async with SimServer(
            speed=speed,
            seed=seed,
            tokens=[TOKEN],
            queue_starts_per_minute=load.queue_per_min,
            faults=dict(load.faults),
            **SHAPES[shape],
        ) as sim:
            engine: harvest.Engine = (
                harvest.SeedEngine(sim, speed, pool)
                if engine_kind == "seed"
                else StreamHarvester(dsn, sim, speed, pool, engine_kind, reserve)
            )
            started_wall = time.time()
            await engine.start()
            await warm_up(sim, engine_kind, speed)
            await drive(sim, engine, arrivals, speed)
            deadline = time.monotonic() + load.tail_s / speed
            while time.monotonic() < deadline:
                if await engine.idle():
                    break
                await asyncio.sleep(0.05)
            cut_off = not await engine.idle()
            await engine.stop()
            figures = await harvest.measure(pool, sim, speed, started_wall)
            figures.update(extra_figures(sim))
            figures.update(await latency_split(pool, sim, speed))
            figures["account_jobs"] = len(arrivals)
            figures["cut_off"] = cut_off
            figures["engine_outcomes"] = engine.outcomes()
            return figures
    finally:
        await pool.close()
        await dbs.drop(dsn)


async def warm_up(sim: SimServer, engine_kind: str, speed: float) -> None:
    """Let the engine settle before the first job, as a daemon that has been running would be:
    WARM_UP_API_S for every engine, and for the streaming one until its stream is open (at most
    STREAM_WAIT_API_S; a stream that does not open by then is the daemon's to explain)."""
    await asyncio.sleep(WARM_UP_API_S / speed)
    step_s = 0.01
    for _ in range(int(STREAM_WAIT_API_S / speed / step_s) if engine_kind == "sse" else 0):
        if sim.state.hub.subscribers:
            break
        await asyncio.sleep(step_s)


def typical_runs(sim: SimServer) -> dict[str, float]:
    """The mean run of each job type over the account's jobs that ran to their end."""
    runs: dict[str, list[float]] = {}
    for job in sim.state.jobs.values():
        if job.cancel_at is None:
            runs.setdefault(job.type, []).append(job.end_at - job.start_at)
    return {kind: sum(r) / len(r) for kind, r in runs.items() if r}


async def latency_split(pool: asyncpg.Pool, sim: SimServer, speed: float) -> dict[str, Any]:
    """Completion to stored, as bench.harvest measures it, for the jobs that ended (completed or
    failed: SpiderIQ announces those ends) and for the cancelled ones (no event announces a
    cancellation, only a list page or a poll finds it); and p90 over all.

    ``late_past_bound``: ended jobs stored later than twice their type's typical run (the mean
    over the run's jobs) or one reconcile interval, whichever is shorter: how late a job whose end
    event was lost may be found."""
    rows = await pool.fetch(
        "SELECT j.job_id, j.state, extract(epoch FROM j.enqueued_at)::float8 AS enqueued,"
        "       extract(epoch FROM COALESCE(r.fetched_at, j.finished_at))::float8 AS stored"
        "  FROM harvester.jobs j LEFT JOIN harvester.results r USING (job_id)"
        " WHERE j.state <> 'pending'"
    )
    clock = sim.state.clock
    typical = typical_runs(sim)
    every: list[float] = []
    cancelled: list[float] = []
    others: list[float] = []
    past_bound = 0
    for row in rows:
        if row["stored"] is None:
            continue
        job = sim.state.jobs[str(row["job_id"])]
        done_at = clock.real_wall(job.finished_at())
        latency = (row["stored"] - max(done_at, row["enqueued"])) * speed
        every.append(latency)
        (cancelled if row["state"] == "cancelled" else others).append(latency)
        if row["state"] != "cancelled" and latency > min(2 * typical.get(job.type, 0.0), RECONCILE_S):
            past_bound += 1
    return {
        "latency_p90_s": percentile(every, 90),
        "latency_p50_ended_s": percentile(others, 50),
        "latency_p95_ended_s": percentile(others, 95),
        "latency_max_ended_s": max(others, default=None),
        "latency_p50_cancelled_s": percentile(cancelled, 50),
        "latency_max_cancelled_s": max(cancelled, default=None),
        "over_2s": sum(1 for v in every if v > 2.0),
        "late_past_bound": past_bound,
    }


def extra_figures(sim: SimServer) -> dict[str, Any]:
    """What the requests were: list pages, stream connections, results by answer, the stream."""
    stats = sim.stats(per_job=False)
    by = stats["requests_by_endpoint"]
    results = by.get("results", {})
    events = stats["events"]
    return {
        "list_pages": sum(by.get("list", {}).values()),
        "stream_connections": sum(by.get("events_stream", {}).values()),
        "status_requests": sum(by.get("status", {}).values()),
        "results_by_status": dict(results),
        "results_202": int(results.get("202", 0)),
        "requests_by_endpoint_and_status": by,
        "stream": {
            key: events[key]
            for key in (
                "connections_opened",
                "events_sent_by_type",
                "events_lost",
                "streams_cut",
                "refused_total",
            )
        },
    }


HEADERS = (
    "load / engine",
    "jobs",
    "stored",
    "req/finished",
    "list pages",
    "stream conns",
    "202s",
    "p50 s",
    "p95 s",
    "p95 all s",
    "429s",
    "max 60s",
    "pace",
)


def row_of(label: str, fig: dict[str, Any]) -> list[Any]:
    return [
        label,
        fig["jobs"],
        fig["finished"],
        fig["requests_per_finished"],
        fig["list_pages"],
        fig["stream_connections"],
        fig["results_202"],
        fig["latency_p50_ended_s"],
        fig["latency_p95_ended_s"],
        fig["latency_p95_s"],
        fig["served_429"],
        fig["worst_window_60s"],
        fig["pace"],
    ]


def checks(results: dict[str, Any], shapes: Sequence[str] = (DOCUMENTED,)) -> list[dict[str, Any]]:
    """The issue's targets that these runs measure, each with the figure and whether it holds;
    a shaped run (``load@shape``) is held to its load's targets."""
    wanted = [
        ("light_healthy", "sse", "requests_per_finished", "<=", 1.02),
        ("light_healthy", "sse", "latency_p95_ended_s", "<=", 2.0),
        ("light", "sse", "requests_per_finished", "<=", 1.05),
        ("light", "sse", "latency_p95_ended_s", "<=", 2.0),
        ("light", "sse", "latency_max_ended_s", "<=", RECONCILE_S),
        ("light", "sse", "late_past_bound", "<=", 0),
        ("budget", "sse", "requests_per_finished", "<=", 1.05),
        ("budget", "sse", "pace", ">=", 0.97),
        ("budget", "sse", "served_429", "<=", 0),
        ("budget", "sse", "worst_window_60s", "<=", harvest.LIMIT_PER_MIN),
        ("bulk", "sse", "requests_per_finished", "<=", 1.05),
        ("bulk", "off", "requests_per_finished", "<=", 1.10),
        ("bulk", "sse", "latency_p95_ended_s", "<=", 2.0),
        ("budget_reserve", "sse", "worst_window_60s", "<=", RESERVE_LIMIT),
    ]
    out = []
    for shape in shapes:
        for name, engine, key, op, bound in wanted:
            load = keyed(name, shape)
            fig = results.get(load, {}).get(engine)
            if not fig or key not in fig:
                continue
            value = fig[key]
            holds = value is not None and (value <= bound if op == "<=" else value >= bound)
            target = f"{op} {bound}"
            out.append(
                {
                    "load": load,
                    "engine": engine,
                    "figure": key,
                    "target": target,
                    "value": value,
                    "met": holds,
                }
            )
        out += refused_checks(results, keyed("light_refused", shape), keyed("light", shape))
    for load, by_engine in results.items():
        fig = by_engine.get("sse")
        if fig and "jobs" in fig:
            out.append(
                {
                    "load": load,
                    "engine": "sse",
                    "figure": "every job stored",
                    "target": f"== {fig['jobs']}",
                    "value": fig["finished"],
                    "met": fig["finished"] == fig["jobs"],
                }
            )
    return out


def refused_checks(results: dict[str, Any], refused_key: str, light_key: str) -> list[dict[str, Any]]:
    """A stream refused for the whole run against no stream at all (light / off of the same run)."""
    refused = results.get(refused_key, {}).get("sse")
    off = results.get(light_key, {}).get("off")
    if not (refused and off and "jobs" in refused and "jobs" in off):
        return []
    out = []
    for key, bound in (
        ("requests_per_finished", off["requests_per_finished"] + REFUSED_EXTRA_REQ),
        ("latency_p95_ended_s", (off["latency_p95_ended_s"] or 0.0) * REFUSED_P95_FACTOR),
    ):
        value = refused[key]
        out.append(
            {
                "load": refused_key,
                "engine": "sse",
                "figure": key,
                "target": f"<= {bound:.3f} ({light_key} / off)",
                "value": value,
                "met": value is not None and value <= bound,
            }
        )
    return out


def plan_runs(
    loads: Sequence[Load], budget: Load | None, with_reserve: bool, shapes: Sequence[str]
) -> list[tuple[str, Load, str, float, str]]:
    """Every run in order, as (key, load, engine, reserve per minute, shape): each shape runs the
    loads on every engine of theirs, then the budget load with the reserve if asked for."""
    runs: list[tuple[str, Load, str, float, str]] = []
    for shape in shapes:
        runs += [(keyed(load.name, shape), load, e, 0.0, shape) for load in loads for e in load.engines]
        if with_reserve and budget is not None:
            runs.append((keyed("budget_reserve", shape), budget, "sse", RESERVE_PER_MIN, shape))
    return runs


def parse_shapes(text: str) -> tuple[str, ...]:
    """``--shape``: comma-separated names of ``SHAPES``, each once."""
    names = tuple(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
    unknown = [n for n in names if n not in SHAPES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected one or more of {','.join(SHAPES)}")
    return names


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logs.setup("json", "error", stream=sys.stderr)
    loads: tuple[Load, ...] = QUICK if args.quick else LOADS
    chosen = [n for n in (getattr(args, "loads", "") or "").split(",") if n]
    if chosen:
        loads = tuple(load for load in loads if load.name in chosen)
    with_reserve = not chosen or "reserve" in chosen
    speed = args.speed or (60.0 if args.quick else 20.0)
    shapes: tuple[str, ...] = getattr(args, "shape", None) or (DOCUMENTED,)
    budget = next((load for load in (QUICK if args.quick else LOADS) if load.name == "budget"), None)
    runs = plan_runs(loads, budget, with_reserve, shapes)
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    failures: list[str] = []
    exit_code = 0
    async with databases(args.dsn) as dbs:
        for key, load, engine, reserve, shape in runs:
            entry = results.setdefault(
                key, {"load": asdict(load), "reserve_per_minute": reserve, "shape": shape}
            )
            label = f"{key} / {engine}"
            began = time.monotonic()
            try:
                fig = await run_one(engine, load, dbs, speed, args.seed, reserve, shape)
            except BenchFailed as exc:
                failures.append(f"{label}: {exc.reason}")
                exit_code = exit_code or exc.exit_code
                entry[engine] = {"exit_code": exc.exit_code, "failure": exc.reason}
                print(f"  {label:24s} FAILED: {exc.reason}", file=sys.stderr)
                continue
            fig["wall_s"] = round(time.monotonic() - began, 1)
            entry[engine] = fig
            rows.append(row_of(label, fig))
            print(f"  {label:24s} done in {fig['wall_s']} s", file=sys.stderr, flush=True)
    targets = checks(results, shapes)
    if rows:
        print(table(HEADERS, rows))
        if args.quick:
            print("  (--quick: short runs, the figures and the checks below are not meaningful)")
        print_checks(targets, ("load", "engine"))
    for failure in failures:
        print(f"FAILED {failure} (no figure)")
    payload = {
        "command": command(args),
        "speed": speed,
        "seed": args.seed,
        "quick": args.quick,
        "exit_code": exit_code,
        "conditions": {
            "extra_share": EXTRA_SHARE,
            "faults": FAULTS,
            "faults_by_load": {load.name: dict(load.faults) for load in loads},
            "stream_noise": "simulator default (0.05)",
            "limit_per_minute": harvest.LIMIT_PER_MIN,
            "shapes": {shape: SHAPES[shape] for shape in shapes},
        },
        "loads": results,
        "checks": targets,
        "table": {"headers": list(HEADERS), "rows": rows},
    }
    save(NAME, payload, args.out, failures, exit_code)
    return payload


def command(args: argparse.Namespace) -> str:
    parts = [f"python -m bench {NAME}"]
    if args.quick:
        parts.append("--quick")
    if args.speed:
        parts.append(f"--speed {args.speed:g}")
    if getattr(args, "loads", ""):
        parts.append(f"--loads {args.loads}")
    shapes = getattr(args, "shape", None) or (DOCUMENTED,)
    if shapes != (DOCUMENTED,):
        parts.append(f"--shape {','.join(shapes)}")
    return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # --speed and --seed are bench.harvest's, shared.
    parser.add_argument(
        "--loads",
        default="",
        help="events: comma-separated subset of light_healthy,light,light_refused,half,budget,bulk,reserve",
    )
    parser.add_argument(
        "--shape",
        type=parse_shapes,
        default=(DOCUMENTED,),
        help=f"events: the simulator's run-time shapes to run the loads on, comma-separated: "
        f"{','.join(SHAPES)} (default {DOCUMENTED})",
    )
