"""``make chaos``: harvest under crashes, database restarts and API faults, and prove nothing is lost.

One throwaway PostgreSQL (durable commits, so a restart loses nothing that was committed) holds two
databases. First a clean run: one ``harvester run --drain`` against a fault-free simulator. Then
the chaos run against a fresh simulator with the same seed and the same jobs: three ``harvester
run`` processes on one credential, SIGKILLed at random moments and restarted, PostgreSQL restarted
(fast and immediate), and the simulator answering 5xx, hanging, truncating bodies, storming 429s,
refusing the budget with a long Retry-After and revoking the token for a while. Afterwards every
job's state is checked against the simulator's truth, every output table against the clean run,
the simulator's counters for 429s and rolling windows, and every byte the processes wrote (plus
``status`` output, metrics and stored errors) for the token.

    python -m bench.chaos                      # the full run (~2,000 jobs, >= 100 kills)
    python -m bench.chaos --jobs 300 --kill-interval 2 --pg-restarts fast --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from bench.chaos.checks import diff, find_secrets, judge_states, read_logs, snapshot
from bench.chaos.fleet import Fleet, daemon_env, harvester_command
from harvester.daemon.run import migrate_with_retry
from harvester.db import DB_OR_SQL_ERRORS
from harvester.pgtemp import TempPostgres, free_port
from harvester.sim import SimServer, submit_mix
from harvester.sim.clock import SimClock

TOKEN = "chaos_client:sk_chaos_5Rq2vX9d:Zt7pLw3mQk8nHy4c"  # the simulator's own credential, not a secret
EPOCH = 1761559200.0  # 2025-10-27T10:00:00Z: the same body timestamps in both runs
RESULTS = Path(__file__).resolve().parent / "results" / "chaos.json"
RATE_LIMIT = 100


@dataclass(frozen=True)
class Params:
    jobs: int = 2000
    speed: float = 20.0
    seed: int = 11
    processes: int = 3
    kill_interval_s: float = 0.5
    pg_restarts: tuple[str, ...] = ("fast", "immediate", "fast")
    fault_5xx: float = 0.10
    fault_hang: float = 0.05
    fault_truncate: float = 0.02
    hang_s: float = 4.0
    storm_s: float = 30.0  # simulated seconds of "every request is a 429"
    long_retry_after_s: int = 120  # simulated seconds asked by one budget refusal
    revoke_s: float = 3.0  # real seconds the token stays revoked
    max_seconds: float = 1200.0
    recovery_limit_s: float = 10.0
    out: str = str(RESULTS)
    keep_logs: bool = False


@dataclass
class Run:
    """What happened during the chaos run, filled in as it goes."""

    started: float = field(default_factory=time.monotonic)
    events: list[dict[str, Any]] = field(default_factory=list)
    pg_restarts: list[dict[str, Any]] = field(default_factory=list)
    captured: list[tuple[str, bytes]] = field(default_factory=list)

    def note(self, what: str, **fields: Any) -> None:
        entry = {"at_s": round(time.monotonic() - self.started, 2), "event": what, **fields}
        self.events.append(entry)
        print(f"  [{entry['at_s']:7.2f}s] {what} {json.dumps(fields) if fields else ''}", flush=True)


# ------------------------------------------------------------------ database helpers


def dsn_for(server_dsn: str, name: str) -> str:
    return server_dsn.rsplit("/", 1)[0] + "/" + name


async def create_database(server_dsn: str, name: str) -> str:
    conn = await asyncpg.connect(server_dsn)
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    dsn = dsn_for(server_dsn, name)
    await migrate_with_retry(dsn)
    return dsn


async def fetchval(dsn: str, sql: str, *args: Any) -> Any:
    """One query on a fresh connection; ``None`` while the database is away (it restarts). A
    connection the server drops mid-statement can also fail as the driver's "another operation is
    in progress" (``InternalClientError``): ``DB_OR_SQL_ERRORS`` names it, as the daemon's do."""
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except DB_OR_SQL_ERRORS:
        return None
    try:
        return await conn.fetchval(sql, *args, timeout=5)
    except DB_OR_SQL_ERRORS:
        return None
    finally:
        with contextlib.suppress(Exception):
            await conn.close(timeout=2)


async def job_states(dsn: str) -> dict[str, str]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT job_id::text, state FROM harvester.jobs")
    finally:
        await conn.close()
    return {r["job_id"]: r["state"] for r in rows}


async def stored_text(dsn: str) -> bytes:
    """Errors and reasons the daemons wrote to the database, for the token check."""
    conn = await asyncpg.connect(dsn)
    try:
        parts = [
            await conn.fetchval("SELECT string_agg(coalesce(last_error, ''), E'\\n') FROM harvester.jobs"),
            await conn.fetchval("SELECT string_agg(reason, E'\\n') FROM harvester.rejects"),
            await conn.fetchval("SELECT string_agg(to_jsonb(l)::text, E'\\n') FROM harvester.rate_limits l"),
        ]
    finally:
        await conn.close()
    return "\n".join(p or "" for p in parts).encode()


# ------------------------------------------------------------------ simulator helpers


class StartGate(SimClock):
    """Simulated time that stands still until ``release``.

    Every job is then created at instant 0 in both runs, so each has the same timeline and body
    timestamps; with a running clock, creating 2,000 jobs takes a few simulated seconds that
    differ from run to run, and which of two searches finished last could differ too.
    """

    def __init__(self, speed: float, epoch: float) -> None:
        super().__init__(speed, epoch)
        self._held = True

    def now(self) -> float:
        return 0.0 if self._held else super().now()

    def release(self) -> None:
        self._t0 = time.monotonic()
        self._real_wall0 = time.time()
        self._held = False


def new_sim(p: Params) -> tuple[SimServer, StartGate]:
    gate = StartGate(p.speed, EPOCH)
    sim = SimServer(
        speed=p.speed, seed=p.seed, tokens=[TOKEN], epoch=EPOCH, clock=gate, faults={"hang_s": p.hang_s}
    )
    return sim, gate


async def enqueue(dsn: str, ids: list[str]) -> None:
    """What a producer does: a plain insert, nothing else."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[]) ON CONFLICT DO NOTHING", ids
        )
    finally:
        await conn.close()


async def sim_admin(sim: SimServer, path: str, body: dict[str, Any]) -> None:
    async with aiohttp.ClientSession() as session, session.post(f"{sim.url}{path}", json=body) as resp:
        resp.raise_for_status()


def truth(sim: SimServer, ids: list[str]) -> dict[str, str]:
    now = sim.state.clock.now()
    return {job_id: sim.state.jobs[job_id].status_at(now) for job_id in ids}


# ------------------------------------------------------------------ the clean run


async def clean_run(p: Params, server_dsn: str, log_dir: Path) -> dict[str, Any]:
    dsn = await create_database(server_dsn, "chaos_clean")
    sim, gate = new_sim(p)
    async with sim:
        ids = await submit_mix(sim.url, TOKEN, p.jobs)
        await enqueue(dsn, ids)
        gate.release()
        started = time.monotonic()
        env = daemon_env(dsn, sim.url, TOKEN, p.speed, f"127.0.0.1:{free_port()}")
        fleet = Fleet(
            env,
            log_dir,
            1,
            [free_port()],
            random.Random(0),
            extra_args=("--drain", "--max-seconds", str(p.max_seconds)),
        )
        fleet.slots[0].log_path = log_dir / "clean.log"
        await fleet.start_all()
        proc = fleet.slots[0].process
        assert proc is not None
        code = await proc.wait()
        fleet.close()
        seconds = time.monotonic() - started
        stats = sim.stats(per_job=False)
    return {
        "dsn": dsn,
        "ids": ids,
        "exit_code": code,
        "seconds": round(seconds, 1),
        "requests": stats["requests_total"],
        "states": await job_states(dsn),
    }


# ------------------------------------------------------------------ the chaos run


async def progress(dsn: str, total: int) -> float | None:
    done = await fetchval(dsn, "SELECT count(*) FROM harvester.jobs WHERE state <> 'pending'")
    return None if done is None else done / max(total, 1)


async def wait_progress(dsn: str, total: int, fraction: float, stop: asyncio.Event) -> None:
    while not stop.is_set():
        done = await progress(dsn, total)
        if done is not None and done >= fraction:
            return
        await asyncio.sleep(0.3)


async def restart_postgres(pg: TempPostgres, mode: str, dsn: str, run: Run, p: Params) -> None:
    """Restart the server, then measure how long until some daemon writes a poll again."""
    down = time.monotonic()
    await asyncio.to_thread(pg.restart, mode)
    up = time.monotonic()
    reference = None
    while reference is None:
        reference = await fetchval(dsn, "SELECT now()")
    recovery: float | None = None
    give_up = up + max(60.0, p.recovery_limit_s * 6)
    while time.monotonic() < give_up:
        worked = await fetchval(
            dsn,
            "SELECT count(*) FROM harvester.jobs WHERE last_polled_at > $1 OR finished_at > $1",
            reference,
        )
        if worked:
            recovery = time.monotonic() - up
            break
        await asyncio.sleep(0.1)
    entry = {
        "mode": mode,
        "down_s": round(up - down, 2),
        "recovery_s": None if recovery is None else round(recovery, 2),
    }
    run.pg_restarts.append(entry)
    run.note("postgres_restarted", **entry)


def script(
    p: Params, pg: TempPostgres, dsn: str, sim: SimServer, run: Run
) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
    """The disturbances, in order; each starts once a further share of the jobs is done."""

    async def storm() -> None:
        await sim_admin(sim, "/_sim/faults", {"storm_s": p.storm_s})
        run.note("storm_started", storm_s=p.storm_s)

    async def long_retry() -> None:
        await sim_admin(
            sim, "/_sim/faults", {"long_retry_after_s": p.long_retry_after_s, "next": ["long_retry_after"]}
        )
        run.note("long_retry_after_armed", retry_after_s=p.long_retry_after_s)

    async def revoke() -> None:
        await sim_admin(sim, "/_sim/tokens", {"token": TOKEN, "action": "revoke", "status": 401})
        run.note("token_revoked")
        await asyncio.sleep(p.revoke_s)
        await sim_admin(sim, "/_sim/tokens", {"token": TOKEN, "action": "restore"})
        run.note("token_restored")

    def pg_step(mode: str) -> tuple[str, Callable[[], Awaitable[None]]]:
        return f"postgres_{mode}", lambda: restart_postgres(pg, mode, dsn, run, p)

    restarts = [pg_step(mode) for mode in p.pg_restarts]
    faults: list[tuple[str, Callable[[], Awaitable[None]]]] = [
        ("storm", storm),
        ("long_retry_after", long_retry),
        ("revoke", revoke),
    ]
    steps: list[tuple[str, Callable[[], Awaitable[None]]]] = []
    while restarts or faults:  # alternate, so a recovery is never measured inside a pause
        if restarts:
            steps.append(restarts.pop(0))
        if faults:
            steps.append(faults.pop(0))
    return steps


async def run_script(
    steps: list[tuple[str, Callable[[], Awaitable[None]]]], dsn: str, total: int, stop: asyncio.Event
) -> None:
    for n, (_, step) in enumerate(steps, 1):
        await wait_progress(dsn, total, 0.6 * n / (len(steps) + 1), stop)
        if stop.is_set():
            return
        await step()


async def killer(fleet: Fleet, p: Params, rng: random.Random, stop: asyncio.Event, run: Run) -> None:
    """SIGKILL a random daemon at random moments; start again whoever died on its own."""
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=rng.uniform(0.3, 1.7) * p.kill_interval_s)
        if stop.is_set():
            return
        exited = len(fleet.unexpected_exits)
        await fleet.revive_exited()
        if len(fleet.unexpected_exits) > exited:
            run.note("daemon_exited_by_itself", codes=fleet.unexpected_exits[exited:])
        await fleet.kill_one()


async def observer(fleet: Fleet, dsn: str, stop: asyncio.Event, run: Run) -> None:
    """Collect what an operator would see: /metrics of each daemon and ``harvester status``."""
    env = dict(fleet.base_env)
    rounds = 0
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as session:
        while not stop.is_set():
            for slot in fleet.slots:
                with contextlib.suppress(aiohttp.ClientError, TimeoutError, OSError):
                    async with session.get(f"http://{slot.listen}/metrics") as resp:
                        run.captured.append((f"metrics-{slot.index}", await resp.read()))
            if rounds % 3 == 0:
                await capture_status(env, run)
            rounds += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=2.0)


async def capture_status(env: dict[str, str], run: Run) -> None:
    for args in (("status",), ("status", "--json")):
        proc = await asyncio.create_subprocess_exec(
            *harvester_command(),
            *args,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
        run.captured.append((" ".join(args), out))


async def until_drained(dsn: str, deadline: float, script_task: asyncio.Task[None]) -> bool:
    while time.monotonic() < deadline:
        pending = await fetchval(dsn, "SELECT count(*) FROM harvester.jobs WHERE state = 'pending'")
        if pending == 0 and script_task.done():
            return True
        await asyncio.sleep(0.5)
    return False


async def chaos_run(p: Params, pg: TempPostgres, log_dir: Path, ids_clean: list[str]) -> dict[str, Any]:
    dsn = await create_database(pg.dsn, "chaos_run")
    run = Run()
    rng = random.Random(p.seed)
    sim, gate = new_sim(p)
    async with sim:
        ids = await submit_mix(sim.url, TOKEN, p.jobs)
        if ids != ids_clean:
            raise SystemExit("the simulator did not reproduce the clean run's job ids")
        await enqueue(dsn, ids)
        gate.release()
        await sim_admin(
            sim, "/_sim/faults", {"5xx": p.fault_5xx, "hang": p.fault_hang, "truncate": p.fault_truncate}
        )
        env = daemon_env(dsn, sim.url, TOKEN, p.speed, "")
        fleet = Fleet(env, log_dir, p.processes, [free_port() for _ in range(p.processes)], rng)
        run.started = time.monotonic()
        run.note("fleet_started", processes=p.processes, jobs=len(ids))
        try:
            await fleet.start_all()
            stop = asyncio.Event()
            script_task = asyncio.create_task(run_script(script(p, pg, dsn, sim, run), dsn, len(ids), stop))
            side = [
                asyncio.create_task(killer(fleet, p, rng, stop, run)),
                asyncio.create_task(observer(fleet, dsn, stop, run)),
            ]
            drained = await until_drained(dsn, run.started + p.max_seconds, script_task)
            stop.set()
            await asyncio.gather(script_task, *side)
            run.note("drained" if drained else "deadline_reached", kills=fleet.kills)
            exit_codes = await fleet.stop_all()
        except BaseException:
            fleet.kill_all()  # a failed driver leaves no daemon behind, polling a database that is gone
            raise
        finally:
            fleet.close()
        await capture_status(env, run)
        seconds = time.monotonic() - run.started
        stats = sim.stats(per_job=False)
        real = truth(sim, ids)
    return {
        "dsn": dsn,
        "run": run,
        "fleet": fleet,
        "stats": stats,
        "truth": real,
        "seconds": round(seconds, 1),
        "drained": drained,
        "exit_codes": exit_codes,
        "states": await job_states(dsn),
        "stored_text": await stored_text(dsn),
    }


# ------------------------------------------------------------------ the verdict


def rate_figures(stats: dict[str, Any]) -> dict[str, Any]:
    faults = stats.get("faults_served", {})
    injected = int(faults.get("storm", 0)) + int(faults.get("long_retry_after", 0))
    limits = stats.get("rate_limit", {})
    return {
        "requests": stats["requests_total"],
        "served_429": stats["served_429"],
        "injected_429": injected,
        "own_429": stats["served_429"] - injected,
        "worst_window_60s": max((int(c["max_requests_60s"]) for c in limits.values()), default=0),
        "max_burst": max((float(c["max_burst"]) for c in limits.values()), default=0.0),
        "faults_served": faults,
        "refetched_after_done": stats["result_fetches"]["jobs_fetched_more_than_once_after_done"],
    }


def verdict(p: Params, report: dict[str, Any]) -> list[str]:
    """Every criterion that failed, in words; empty when the run passed."""
    problems = []
    checks = [
        (report["lost"] == 0, f"{report['lost']} rows lost"),
        (report["duplicated"] == 0, f"{report['duplicated']} rows extra or duplicated"),
        (report["states"]["wrong_state"] == 0, f"{report['states']['wrong_state']} jobs in a wrong state"),
        (report["states"]["not_terminal"] == 0, f"{report['states']['not_terminal']} jobs not finished"),
        (report["rate"]["own_429"] == 0, f"{report['rate']['own_429']} 429s from our own rate"),
        (
            report["rate"]["worst_window_60s"] <= RATE_LIMIT,
            f"a 60 s window held {report['rate']['worst_window_60s']} requests",
        ),
        (not report["secret_hits"], f"token found: {report['secret_hits'][:5]}"),
        (report["clean_exit_code"] == 0, "the clean run did not drain"),
        (not report["unexpected_exits"], f"daemons exited by themselves: {report['unexpected_exits']}"),
    ]
    recovery = [r["recovery_s"] for r in report["pg_restarts"]]
    checks.append(
        (
            all(r is not None and r <= p.recovery_limit_s for r in recovery),
            f"recovery after PostgreSQL restarts: {recovery}",
        )
    )
    for ok, message in checks:
        if not ok:
            problems.append(message)
    return problems


def build_report(
    p: Params,
    clean: dict[str, Any],
    chaos: dict[str, Any],
    tables: dict[str, dict[str, Any]],
    secret_hits: list[str],
) -> dict[str, Any]:
    fleet: Fleet = chaos["fleet"]
    run: Run = chaos["run"]
    recoveries = [r["recovery_s"] for r in run.pg_restarts if r["recovery_s"] is not None]
    report: dict[str, Any] = {
        "command": "python -m bench.chaos " + " ".join(sys.argv[1:]),
        "params": asdict(p),
        "jobs": len(clean["ids"]),
        "kills": fleet.kills,
        "daemon_starts": sum(s.starts for s in fleet.slots),
        "unexpected_exits": fleet.unexpected_exits,
        "final_exit_codes": chaos["exit_codes"],
        "pg_restarts": run.pg_restarts,
        "recovery_max_s": max(recoveries) if recoveries else None,
        "lost": sum(t["lost"] for t in tables.values()),
        "duplicated": sum(t["extra"] for t in tables.values()),
        "tables": tables,
        "states": judge_states(chaos["truth"], chaos["states"], clean["states"]),
        "rate": rate_figures(chaos["stats"]),
        "secret_hits": secret_hits,
        "clean_seconds": clean["seconds"],
        "clean_requests": clean["requests"],
        "clean_exit_code": clean["exit_code"],
        "chaos_seconds": chaos["seconds"],
        "drained": chaos["drained"],
        "events": run.events,
    }
    report["failures"] = verdict(p, report)
    report["passed"] = not report["failures"]
    return report


def print_table(report: dict[str, Any]) -> None:
    rate = report["rate"]
    restarts = ", ".join(f"{r['mode']} {r['recovery_s']}s" for r in report["pg_restarts"])
    rows = [
        ("jobs", report["jobs"]),
        (
            "SIGKILLs (restarts)",
            f"{report['kills']} ({report['daemon_starts']} starts, "
            f"{len(report['unexpected_exits'])} exits by itself)",
        ),
        ("PostgreSQL restarts", f"{len(report['pg_restarts'])} ({restarts})"),
        ("rows lost", report["lost"]),
        ("rows duplicated/extra", report["duplicated"]),
        ("jobs in a wrong state", report["states"]["wrong_state"]),
        ("jobs wrongly failed", report["states"]["wrongly_failed"]),
        ("429s (own / injected)", f"{rate['own_429']} / {rate['injected_429']}"),
        ("worst 60 s window", f"{rate['worst_window_60s']} (limit {RATE_LIMIT})"),
        ("recovery after DB back", f"{report['recovery_max_s']} s (worst)"),
        ("bodies re-fetched (kill after fetch)", rate["refetched_after_done"]),
        ("token found in output", len(report["secret_hits"])),
        ("requests (chaos / clean)", f"{rate['requests']} / {report['clean_requests']}"),
        ("seconds (chaos / clean)", f"{report['chaos_seconds']} / {report['clean_seconds']}"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    print(f"| {'check':<{width}} | result |")
    print(f"|{'-' * (width + 2)}|--------|")
    for name, value in rows:
        print(f"| {name:<{width}} | {value} |")
    print()
    print("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))


# ------------------------------------------------------------------ entry point


async def main_async(p: Params) -> dict[str, Any]:
    log_dir = Path(tempfile.mkdtemp(prefix="harvester-chaos-"))
    pg = TempPostgres(settings={"synchronous_commit": "on"})
    await asyncio.to_thread(pg.start)
    try:
        print(f"clean run: {p.jobs} jobs, speed x{p.speed:g}, seed {p.seed}", flush=True)
        clean = await clean_run(p, pg.dsn, log_dir)
        print(f"  drained in {clean['seconds']} s, {clean['requests']} requests", flush=True)
        print(
            f"chaos run: {p.processes} daemons, kill every ~{p.kill_interval_s} s, "
            f"PostgreSQL restarts {list(p.pg_restarts)}",
            flush=True,
        )
        chaos = await chaos_run(p, pg, log_dir, clean["ids"])
        tables = diff(await snapshot(clean["dsn"]), await snapshot(chaos["dsn"]))
        texts = await asyncio.to_thread(read_logs, log_dir) + chaos["run"].captured
        texts.append(("database", chaos["stored_text"]))
        report = build_report(p, clean, chaos, tables, find_secrets(TOKEN, texts))
        report["log_dir"] = str(log_dir) if p.keep_logs else None
    finally:
        await asyncio.to_thread(pg.stop)
        if not p.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
    return report


def parse(argv: list[str] | None) -> Params:
    d = Params()
    ap = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n")[0])
    ap.add_argument("--jobs", type=int, default=d.jobs)
    ap.add_argument("--speed", type=float, default=d.speed)
    ap.add_argument("--seed", type=int, default=d.seed)
    ap.add_argument("--processes", type=int, default=d.processes)
    ap.add_argument(
        "--kill-interval",
        type=float,
        default=d.kill_interval_s,
        help="mean real seconds between two SIGKILLs",
    )
    ap.add_argument(
        "--pg-restarts",
        default=",".join(d.pg_restarts),
        help="comma-separated restart modes (fast, immediate); empty for none",
    )
    ap.add_argument("--max-seconds", type=float, default=d.max_seconds)
    ap.add_argument("--out", default=d.out)
    ap.add_argument("--keep-logs", action="store_true")
    a = ap.parse_args(argv)
    return Params(
        jobs=a.jobs,
        speed=a.speed,
        seed=a.seed,
        processes=a.processes,
        kill_interval_s=a.kill_interval,
        max_seconds=a.max_seconds,
        out=a.out,
        pg_restarts=tuple(m for m in a.pg_restarts.split(",") if m),
        keep_logs=a.keep_logs,
    )


def main(argv: list[str] | None = None) -> int:
    p = parse(argv)
    report = asyncio.run(main_async(p))
    print_table(report)
    out = Path(p.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(f"wrote {out}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
