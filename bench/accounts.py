"""Accounts benchmark: several SpiderIQ clients in one deployment, shared by several replicas.

Every run is one database, one simulator and ``REPLICAS`` ``harvester run`` processes, each
configured with every account (``HARVESTER_ACCOUNTS__<NAME>__TOKEN``), the event stream on. Each
account is one simulator client with its own 100/min bucket; its jobs arrive live (Poisson, two
thirds spiderSite, one third spiderMaps) and are enqueued with their account as a producer would.
Everything is time-scaled by ``--speed`` (default 10); every figure is in API (unscaled) time.

Runs:

- ``steady``: three accounts, each at 95 jobs/min: per account and in total, jobs stored a minute,
  pace (stored a minute over the offered rate, which is below the 100/min budget), API requests
  per finished job, 429s and the worst rolling 60 s window the simulator saw for the client.
- ``revoke``: the same, with the third account's token revoked (401) halfway: the other two keep
  their pace; the revoked one stops (its jobs stay pending).
- ``backlog``: account ``a`` has 100,000 due jobs in the queue (ids the API does not know, so each
  costs ``a`` its polls) while account ``b`` gets fresh jobs at 20/min: ``b``'s completion-to-stored
  latency.
- ``adopt``: one account with ``adopt = true`` and ``adopt_since = "1h"``, nothing enqueued by
  anyone: ``BACKFILL_JOBS`` jobs finished before the run plus live ones at 30/min. Jobs adopted,
  requests per adopted job, the time until every backfilled job was stored against the physical
  limit (backfill jobs / the 100/min budget), the live jobs' latency meanwhile, and
  whether any result was fetched twice.

A run counts only if every daemon was still running at its end and exited 0 on SIGTERM; otherwise
it prints no figure and the benchmark fails with the daemon's exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import random
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg

from bench import harvest
from bench.common import BenchFailed, Databases, databases, percentile, print_checks, save, table
from harvester import logs
from harvester.db import admin
from harvester.sim import SimServer
from harvester.sim.admin import create_jobs
from harvester.sim.jobs import MAPS, SITE, Plan

NAME = "accounts"
ROOT = Path(__file__).resolve().parents[1]
REPLICAS = 3
LIMIT_PER_MIN = harvest.LIMIT_PER_MIN
WARM_UP_API_S = 20.0  # the replicas start, connect their streams and settle before the first job
BACKLOG_JOBS = 100_000
BACKFILL_JOBS = 400
BACKFILL_AGE_S = 1800.0  # backfilled jobs finished half an hour (API) before the run


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    per_minute: float  # live arrivals per API minute
    adopt: bool = False

    @property
    def token(self) -> str:
        return f"{self.name}:key:secret"

    @property
    def env_name(self) -> str:
        return self.name.upper().replace("-", "_")


@dataclass(frozen=True, slots=True)
class Run:
    name: str
    accounts: tuple[Account, ...]
    minutes: float  # span of the live arrivals, API minutes
    revoke: str | None = None  # this account's token is revoked halfway through
    backlog: int = 0  # due jobs of the first account already in the queue (ids unknown upstream)
    backfill: int = 0  # jobs of the adopting account that finished before the run
    tail_s: float = 120.0  # API seconds after the last arrival before the run is cut off
    extra_env: Mapping[str, str] = field(default_factory=dict)


THREE = (Account("a", 95), Account("b", 95), Account("c", 95))
RUNS = (
    Run("steady", THREE, minutes=8),
    Run("revoke", THREE, minutes=8, revoke="c"),
    Run("backlog", (Account("a", 0), Account("b", 20)), minutes=4, backlog=BACKLOG_JOBS, tail_s=60),
    Run("adopt", (Account("d", 30, adopt=True),), minutes=6, backfill=BACKFILL_JOBS, tail_s=300),
)
QUICK = (
    Run("steady", THREE, minutes=1.5, tail_s=60),
    Run("revoke", THREE, minutes=1.5, revoke="c", tail_s=60),
    Run("backlog", (Account("a", 0), Account("b", 20)), minutes=1, backlog=5_000, tail_s=30),
    Run("adopt", (Account("d", 30, adopt=True),), minutes=1, backfill=60, tail_s=120),
)


@dataclass(frozen=True, slots=True)
class Arrival:
    at_s: float
    account: str
    job_type: str


def schedule(run: Run, seed: int) -> list[Arrival]:
    rng = random.Random(f"bench-accounts:{seed}:{run.name}")
    arrivals: list[Arrival] = []
    for account in run.accounts:
        at = 0.0
        while account.per_minute > 0:
            at += rng.expovariate(account.per_minute / 60)
            if at >= run.minutes * 60:
                break
            arrivals.append(Arrival(at, account.name, SITE if rng.random() < 2 / 3 else MAPS))
    arrivals.sort(key=lambda a: a.at_s)
    return arrivals


# ---------------------------------------------------------------- the replicas


READY_WITHIN_S = 120.0  # python start-up and the first database connection, on a loaded machine


class Replicas:
    """``REPLICAS`` ``harvester run`` processes on one database, every account in each."""

    def __init__(self, dsn: str, sim: SimServer, speed: float, run: Run, log_dir: Path) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
        env.update(
            {
                "HARVESTER_DSN": dsn,
                "HARVESTER_API_BASE_URL": sim.url,
                "HARVESTER_SPEED": str(speed),
                "HARVESTER_SERVER__ENABLED": "false",
                "HARVESTER_LOG_LEVEL": "warning",
                **run.extra_env,
            }
        )
        for account in run.accounts:
            env[f"HARVESTER_ACCOUNTS__{account.env_name}__TOKEN"] = account.token
            if account.adopt:
                env[f"HARVESTER_ACCOUNTS__{account.env_name}__ADOPT"] = "true"
                env[f"HARVESTER_ACCOUNTS__{account.env_name}__ADOPT_SINCE"] = "1h"
        self.env = env
        self.log_dir = log_dir
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(self) -> None:
        """Start every replica and wait until each says it is up (``READY=1`` on its systemd
        notify socket, as under systemd) or has exited: the run's clock must not start while a
        replica is still importing, or one that fails at start-up would be stopped as if it had
        run (a loaded machine took longer than a quick run lasts)."""
        sockets: list[socket.socket] = []
        try:
            for n in range(REPLICAS):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                path = self.log_dir / f"notify-{n}.sock"
                sock.bind(str(path))
                sock.setblocking(False)
                sockets.append(sock)
                with (self.log_dir / f"replica-{n}.log").open("wb") as out:
                    self.procs.append(
                        await asyncio.create_subprocess_exec(
                            sys.executable,
                            "-m",
                            "harvester",
                            "run",
                            env={
                                **self.env,
                                "HARVESTER_WORKER__WORKER_ID": f"replica-{n}",
                                "NOTIFY_SOCKET": str(path),
                            },
                            cwd=str(ROOT),
                            stdout=out,
                            stderr=asyncio.subprocess.STDOUT,
                        )
                    )
            async with asyncio.timeout(READY_WITHIN_S):
                ups = (self._up(proc, sock) for proc, sock in zip(self.procs, sockets, strict=True))
                await asyncio.gather(*ups)
        finally:
            for sock in sockets:
                sock.close()

    @staticmethod
    async def _up(proc: asyncio.subprocess.Process, sock: socket.socket) -> None:
        """Until the replica sends READY=1 or exits."""
        loop = asyncio.get_running_loop()
        exited = asyncio.create_task(proc.wait())
        try:
            while not exited.done():
                said = asyncio.create_task(loop.sock_recv(sock, 4096))
                await asyncio.wait({said, exited}, return_when=asyncio.FIRST_COMPLETED)
                if said.done():
                    if b"READY=1" in said.result().split(b"\n"):
                        return
                else:
                    said.cancel()
        finally:
            if not exited.done():
                exited.cancel()

    def early_exit(self) -> tuple[int, int] | None:
        """(replica, exit code) of a replica that ended before it was told to."""
        for n, proc in enumerate(self.procs):
            if proc.returncode is not None:
                return n, proc.returncode
        return None

    async def stop(self) -> None:
        """SIGTERM each; every one must still have been running and must exit 0."""
        early = self.early_exit()
        for proc in self.procs:
            if proc.returncode is None:
                proc.send_signal(signal.SIGTERM)
        codes = []
        for proc in self.procs:
            try:
                codes.append(await asyncio.wait_for(proc.wait(), timeout=60))
            except TimeoutError:
                proc.kill()
                codes.append(await proc.wait())
        if early is not None:
            n, code = early
            raise BenchFailed(
                NAME, code or 1, f"replica {n} exited {code} before the run ended{self._tail(n)}"
            )
        for n, code in enumerate(codes):
            if code != 0:
                raise BenchFailed(
                    NAME, code if code > 0 else 128 - code, f"replica {n} exited {code}{self._tail(n)}"
                )

    def _tail(self, n: int) -> str:
        try:
            lines = (self.log_dir / f"replica-{n}.log").read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return (": " + " | ".join(lines[-3:])[:600]) if lines else ""


# ---------------------------------------------------------------- one run


async def drive(
    sim: SimServer,
    pool: asyncpg.Pool,
    run: Run,
    arrivals: Sequence[Arrival],
    speed: float,
    replicas: Replicas,
) -> dict[str, float]:
    """Create each job when it arrives and enqueue it with its account (adopting accounts: no
    enqueue); revoke ``run.revoke`` halfway. Returns when things happened (sim seconds)."""
    clock = sim.state.clock
    creds = {a.name: sim.state.credential(a.token) for a in run.accounts}
    adopting = {a.name for a in run.accounts if a.adopt}
    start = clock.now()
    marks: dict[str, float] = {"start": start}
    revoke_at = run.minutes * 30 if run.revoke else math.inf
    inserts: set[asyncio.Task[int]] = set()
    i = 0
    while i < len(arrivals) or clock.now() - start < run.minutes * 60:
        now = clock.now() - start
        if now >= revoke_at and run.revoke:
            cred = creds[run.revoke]
            assert cred is not None
            cred.status, cred.revoked_status = "revoked", 401
            sim.state.hub.notify()
            marks["revoked"] = clock.now()
            revoke_at = math.inf
        batches: dict[str, list[UUID]] = {}
        while i < len(arrivals) and arrivals[i].at_s <= now:
            a = arrivals[i]
            cred = creds[a.account]
            assert cred is not None
            ids = create_jobs(sim.state, cred, 1, a.job_type, Plan())
            if a.account not in adopting:
                batches.setdefault(a.account, []).extend(UUID(j) for j in ids)
            i += 1
        for account, ids_ in batches.items():
            task = asyncio.create_task(admin.enqueue(pool, ids_, account=account))
            inserts.add(task)
            task.add_done_callback(inserts.discard)
        if replicas.early_exit() is not None:
            break
        await asyncio.sleep(harvest.TICK_API_S / speed)
    if inserts:
        await asyncio.gather(*inserts)
    marks["arrivals_done"] = clock.now()
    return marks


async def settled(pool: asyncpg.Pool, sim: SimServer, run: Run) -> bool:
    """Every job that finished upstream is stored (the revoked account's and backlog ids aside)."""
    skip = [run.revoke] if run.revoke else []
    if run.backlog:
        skip.append(run.accounts[0].name)
    pending = await pool.fetch(
        "SELECT job_id FROM harvester.jobs WHERE state = 'pending' AND NOT (account = ANY($1::text[]))", skip
    )
    now = sim.state.clock.now()
    if any(sim.state.jobs[str(r["job_id"])].finished_at() <= now for r in pending):
        return False
    if run.backfill:
        adopted = await pool.fetchval("SELECT count(*) FROM harvester.jobs WHERE adopted")
        return int(adopted) >= run.backfill
    return True


async def run_one(run: Run, dbs: Databases, speed: float, seed: int) -> dict[str, Any]:
    dsn = await dbs.fresh()
    pool = await asyncpg.create_pool(dsn, min_size=2, max_size=6)
    arrivals = schedule(run, seed)
    try:
        async with SimServer(
            speed=speed, seed=seed, tokens=[a.token for a in run.accounts], fail_rate=0.0, cancel_rate=0.0
        ) as sim:
            if run.backlog:
                await pool.execute(
                    "INSERT INTO harvester.jobs (job_id, account, next_poll_at) "
                    "SELECT gen_random_uuid(), $1, now() - interval '1 hour' FROM generate_series(1, $2)",
                    run.accounts[0].name,
                    run.backlog,
                )
                await pool.execute("ANALYZE harvester.jobs")
            backfilled: list[str] = []
            if run.backfill:
                adopter = next(a for a in run.accounts if a.adopt)
                cred = sim.state.credential(adopter.token)
                assert cred is not None
                rng = random.Random(f"bench-accounts:{seed}:backfill")
                for _ in range(run.backfill):
                    plan = Plan(start_offset_s=BACKFILL_AGE_S + rng.uniform(0, 600))
                    backfilled += create_jobs(
                        sim.state, cred, 1, SITE if rng.random() < 2 / 3 else MAPS, plan
                    )
            with tempfile.TemporaryDirectory(prefix="bench-accounts-") as logs_dir:
                replicas = Replicas(dsn, sim, speed, run, Path(logs_dir))
                started_wall = time.time()
                await replicas.start()
                try:
                    await asyncio.sleep(WARM_UP_API_S / speed)
                    marks = await drive(sim, pool, run, arrivals, speed, replicas)
                    deadline = time.monotonic() + run.tail_s / speed
                    while time.monotonic() < deadline and replicas.early_exit() is None:
                        if await settled(pool, sim, run):
                            break
                        await asyncio.sleep(0.1)
                    cut_off = not await settled(pool, sim, run)
                finally:
                    await replicas.stop()
            figures = await measure(pool, sim, run, speed, started_wall, marks, set(backfilled))
            figures["cut_off"] = cut_off
            return figures
    finally:
        await pool.close()
        await dbs.drop(dsn)


# ---------------------------------------------------------------- figures


async def measure(
    pool: asyncpg.Pool,
    sim: SimServer,
    run: Run,
    speed: float,
    started_wall: float,
    marks: Mapping[str, float],
    backfilled: set[str],
) -> dict[str, Any]:
    rows = await pool.fetch(
        "SELECT j.job_id::text AS job_id, j.account, j.state, j.adopted,"
        "       extract(epoch FROM j.enqueued_at)::float8 AS enqueued,"
        "       extract(epoch FROM COALESCE(r.fetched_at, j.finished_at))::float8 AS stored"
        "  FROM harvester.jobs j LEFT JOIN harvester.results r USING (job_id)"
        " WHERE NOT (j.account = $1 AND $2)",
        run.accounts[0].name,
        bool(run.backlog),
    )
    clock = sim.state.clock
    stats = sim.stats(per_job=True)
    limits = stats["rate_limit"]
    by_client = stats["requests_by_credential"]
    fetches = stats["result_fetches"]["per_job"]
    revoked_at = clock.real_wall(marks["revoked"]) if "revoked" in marks else None
    out: dict[str, Any] = {"accounts": {}}
    for account in run.accounts:
        mine = [r for r in rows if r["account"] == account.name]
        finished = [r for r in mine if r["state"] != "pending" and r["stored"] is not None]
        latencies, live_latencies = [], []
        for r in finished:
            done_at = clock.real_wall(sim.state.jobs[r["job_id"]].finished_at())
            latency = (r["stored"] - max(done_at, r["enqueued"])) * speed
            latencies.append(latency)
            if r["job_id"] not in backfilled:
                live_latencies.append(latency)
        # As bench.harvest: stored a minute from the run's start to the last store, against what
        # finished upstream a minute from the start to the last completion (the budget at most).
        # A revoked account counts until its revocation.
        first = clock.real_wall(marks["start"])
        span_end = revoked_at if account.name == run.revoke and revoked_at else math.inf
        stored_at = [r["stored"] for r in finished if r["stored"] <= span_end]
        completions = [
            done
            for r in mine
            if (done := clock.real_wall(sim.state.jobs[r["job_id"]].finished_at()))
            <= min(span_end, time.time())
        ]
        span_min = ((max(stored_at) - first) * speed / 60) if stored_at else None
        per_min = len(stored_at) / span_min if span_min else None
        offered_min = ((max(completions) - first) * speed / 60) if completions else None
        offered = min(len(completions) / offered_min, LIMIT_PER_MIN) if offered_min else None
        requests = int(limits.get(account.name, {}).get("requests", 0))
        fig: dict[str, Any] = {
            "jobs": len(mine),
            "stored": len(finished),
            "pending": sum(1 for r in mine if r["state"] == "pending"),
            "stored_per_min": per_min,
            "offered_per_min": offered,
            "arrivals_per_min": account.per_minute or None,
            "pace": per_min / offered if per_min is not None and offered else None,
            "requests": requests,
            "requests_per_finished": requests / len(finished) if finished else None,
            "served_429": int(by_client.get(account.name, {}).get("429", 0)),
            "worst_window_60s": int(limits.get(account.name, {}).get("max_requests_60s", 0)),
            "latency_p50_s": percentile(live_latencies, 50),
            "latency_p95_s": percentile(live_latencies, 95),
            "latency_max_s": max(live_latencies, default=None),
            "fetched_twice": sum(1 for r in mine if fetches.get(r["job_id"], 0) > 1),
        }
        if account.adopt:
            adopted = [r for r in mine if r["adopted"]]
            back = [r for r in finished if r["job_id"] in backfilled]
            fig["adopted"] = len(adopted)
            fig["backfill_jobs"] = len(backfilled)
            fig["backfill_stored"] = len(back)
            fig["requests_per_adopted"] = requests / len(adopted) if adopted else None
            fig["backfill_done_s"] = (
                (max(r["stored"] for r in back) - first) * speed if len(back) == len(backfilled) else None
            )
            # the physical limit: every backfilled job fetched once at the account's whole budget
            fig["backfill_physical_s"] = len(backfilled) / LIMIT_PER_MIN * 60
        out["accounts"][account.name] = fig
    paced = [f for f in out["accounts"].values() if f["stored_per_min"] is not None]
    out["total_stored_per_min"] = sum(f["stored_per_min"] for f in paced) if paced else None
    out["served_429"] = int(stats["served_429"])
    out["requests_total"] = int(stats["requests_total"])
    out["started_wall"] = started_wall
    return out


HEADERS = (
    "run / account",
    "jobs",
    "stored",
    "stored/min",
    "pace",
    "req/finished",
    "429s",
    "max 60s",
    "p50 s",
    "p95 s",
    "max s",
)


def rows_of(run: str, fig: Mapping[str, Any]) -> list[list[Any]]:
    rows = [
        [
            f"{run} / {name}",
            f["jobs"],
            f["stored"],
            f["stored_per_min"],
            f["pace"],
            f["requests_per_finished"],
            f["served_429"],
            f["worst_window_60s"],
            f["latency_p50_s"],
            f["latency_p95_s"],
            f["latency_max_s"],
        ]
        for name, f in fig["accounts"].items()
    ]
    if len(fig["accounts"]) > 1:
        rows.append([f"{run} / total", None, None, fig["total_stored_per_min"], *([None] * 7)])
    return rows


def checks(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's targets these runs measure, each with its figure and whether it holds."""
    out: list[dict[str, Any]] = []

    def check(run: str, account: str, figure: str, value: Any, op: str, bound: float) -> None:
        holds = value is not None and (value <= bound if op == "<=" else value >= bound)
        out.append(
            {
                "run": run,
                "account": account,
                "figure": figure,
                "target": f"{op} {bound:g}",
                "value": value,
                "met": holds,
            }
        )

    steady = results.get("steady", {})
    for name, f in steady.get("accounts", {}).items():
        check("steady", name, "pace", f["pace"], ">=", 0.97)
        check("steady", name, "429s", f["served_429"], "<=", 0)
        check("steady", name, "worst_window_60s", f["worst_window_60s"], "<=", LIMIT_PER_MIN)
    revoke = results.get("revoke", {})
    for name, f in revoke.get("accounts", {}).items():
        if name == "c":
            continue
        base = steady.get("accounts", {}).get(name, {}).get("pace")
        ratio = f["pace"] / base if f["pace"] is not None and base else None
        check("revoke", name, "pace vs steady", ratio, ">=", 0.95)
        check("revoke", name, "429s", f["served_429"], "<=", 0)
    backlog = results.get("backlog", {}).get("accounts", {}).get("b")
    if backlog:
        check("backlog", "b", "latency_max_s", backlog["latency_max_s"], "<=", 5.0)
    adopt = results.get("adopt", {}).get("accounts", {})
    for name, f in adopt.items():
        check("adopt", name, "backfill stored", f["backfill_stored"], ">=", f["backfill_jobs"])
        check("adopt", name, "fetched twice", f["fetched_twice"], "<=", 0)
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    logs.setup("json", "error", stream=sys.stderr)
    runs: tuple[Run, ...] = QUICK if args.quick else RUNS
    chosen = [n for n in (getattr(args, "runs", "") or "").split(",") if n]
    if chosen:
        runs = tuple(r for r in runs if r.name in chosen)
    speed = getattr(args, "accounts_speed", None) or (20.0 if args.quick else 10.0)
    results: dict[str, Any] = {}
    rows: list[list[Any]] = []
    failures: list[str] = []
    exit_code = 0
    async with databases(args.dsn) as dbs:
        for one in runs:
            began = time.monotonic()
            try:
                fig = await run_one(one, dbs, speed, args.seed)
            except BenchFailed as exc:
                failures.append(f"{one.name}: {exc.reason}")
                exit_code = exit_code or exc.exit_code
                results[one.name] = {"run": asdict(one), "exit_code": exc.exit_code, "failure": exc.reason}
                print(f"  {one.name:10s} FAILED: {exc.reason}", file=sys.stderr)
                continue
            fig["wall_s"] = round(time.monotonic() - began, 1)
            fig["run"] = asdict(one)
            results[one.name] = fig
            rows += rows_of(one.name, fig)
            print(f"  {one.name:10s} done in {fig['wall_s']} s", file=sys.stderr, flush=True)
    targets = checks(results) if not failures else []
    if rows and not failures:
        print(table(HEADERS, rows))
        adopt = results.get("adopt", {}).get("accounts", {})
        for name, f in adopt.items():
            per_job = f["requests_per_adopted"] or 0.0
            done_s, physical_s = f["backfill_done_s"] or 0.0, f["backfill_physical_s"] or 0.0
            print(
                f"  adopt / {name}: {f['adopted']} jobs adopted, {per_job:.3f} requests per adopted job, "
                f"backfill of {f['backfill_jobs']} stored after {done_s:.0f} s "
                f"(physical limit: {physical_s:.0f} s, every one fetched once at the whole budget)"
            )
        if args.quick:
            print("  (--quick: short runs, the figures and the checks below are not meaningful)")
        print_checks(targets, ("run", "account"))
    for failure in failures:
        print(f"FAILED {failure} (no figure)")
    payload = {
        "command": command(args),
        "speed": speed,
        "seed": args.seed,
        "quick": args.quick,
        "replicas": REPLICAS,
        "exit_code": exit_code,
        "runs": results,
        "checks": targets,
        "table": {"headers": list(HEADERS), "rows": rows if not failures else []},
    }
    save(NAME, payload, args.out, failures, exit_code)
    return payload


def command(args: argparse.Namespace) -> str:
    parts = [f"python -m bench {NAME}"]
    if args.quick:
        parts.append("--quick")
    if getattr(args, "accounts_speed", None):
        parts.append(f"--accounts-speed {args.accounts_speed:g}")
    if getattr(args, "runs", ""):
        parts.append(f"--runs {args.runs}")
    return " ".join(parts)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", default="", help="accounts: comma-separated subset of steady,revoke,backlog,adopt"
    )
    parser.add_argument(
        "--accounts-speed", type=float, default=None, help="accounts: time scale (default 10, --quick 20)"
    )
