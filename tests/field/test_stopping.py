"""SIGTERM stops ``harvester run`` within ``worker.shutdown_grace_s`` plus a second, in every state.

The daemon is a real subprocess configured only through the environment, at real time (speed 1)
with a 3 s grace, as systemd or Docker would run it with a short stop timeout; the simulator runs
in the test process. Each test brings the daemon into one state (idle, a request on the wire, a
429 pause of hours, a refused credential, PostgreSQL away, a fetched body that cannot be stored),
sends SIGTERM, measures the wall time to the exit and checks that no job was lost: each is pending
or finished, and a pending job holds no lease. Where the database was away when the daemon stopped
it could not hand its leases back, so there a second ``run --drain`` after the database is back
must finish every job once the leases run out. A second signal ends a stop that is still waiting
out its grace period at once.

The outage tests stop a throwaway PostgreSQL of their own, never the suite's server.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from harvester.db import migrate
from harvester.errors import HarvesterError
from harvester.pgtemp import TempPostgres, find_bindir
from harvester.sim import SimServer
from tests.support.e2e import (
    Daemon,
    RequestLog,
    daemon_env,
    fetch_jobs,
    mismatched_states,
    sim_admin,
    sim_jobs,
    start_daemon,
    wait_for,
)

pytestmark = pytest.mark.slow

SPEED = 1.0  # real time: every duration below is what a deployment would configure
GRACE_S = 3.0  # worker.shutdown_grace_s
LIMIT_S = GRACE_S + 1.0  # the contract: SIGTERM → exit within the grace plus one second
LEASE_S = 6.0
HOURS_S = 4 * 3600  # a 429 pause "of hours"
FINISHED = {"harvested", "failed", "cancelled", "not_found", "rejected", "expired"}
READY = {"outcome": "completed", "start_offset_s": 3600}  # a sim job whose result is ready


def stop_env(dsn: str, sim: SimServer, worker_id: str, **extra: str) -> dict[str, str]:
    """A short but realistic configuration: a 3 s grace, first polls at once, direct polling.

    The API read timeout stays far above the grace (as the defaults are: 30 s against 20 s), so a
    hanging request is still on the wire when the grace runs out.
    """
    return dict(
        daemon_env(
            dsn,
            sim,
            SPEED,
            worker_id,
            {
                "HARVESTER_WORKER__SHUTDOWN_GRACE_S": str(GRACE_S),
                "HARVESTER_WORKER__LEASE_S": str(LEASE_S),
                "HARVESTER_WORKER__HEARTBEAT_S": str(LEASE_S / 3),
                "HARVESTER_WORKER__IDLE_POLL_S": "1",
                "HARVESTER_POLLING__DISCOVERY": "poll",
                "HARVESTER_POLLING__FIRST_POLL_SITE_S": "0.1",
                "HARVESTER_POLLING__FIRST_POLL_MAPS_S": "0.1",
                "HARVESTER_POLLING__FIRST_POLL_OTHER_S": "0.1",
                "HARVESTER_API__READ_TIMEOUT_S": "60",
                "HARVESTER_API__TOTAL_TIMEOUT_S": "120",
                **extra,
            },
        )
    )


# ---------------------------------------------------------------- the daemon's log


def events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == name:
            found.append(event)
    return found


async def started(daemon: Daemon) -> None:
    def up() -> bool:
        if daemon.proc.returncode is not None:
            raise AssertionError(f"the daemon exited {daemon.proc.returncode}\n{daemon.log_tail()}")
        return bool(events(daemon, "daemon_started"))

    await wait_for(up, 30, "the daemon to start")


# ---------------------------------------------------------------- stopping


async def stop_timed(daemon: Daemon, case: str, sig: signal.Signals = signal.SIGTERM) -> tuple[int, float]:
    """Send ``sig``, return (exit code, seconds from the signal to the exit).

    Waits a few seconds past the limit, so a late exit is measured, not only flagged; the
    clean-up kills a daemon that is still running after that.
    """
    signalled_at = time.monotonic()
    daemon.proc.send_signal(sig)
    try:
        code = await daemon.exit_code(LIMIT_S + 6)
    except TimeoutError:
        raise AssertionError(
            f"[stop {case}] still running {time.monotonic() - signalled_at:.1f} s "
            f"after {sig.name} (limit {LIMIT_S:.0f} s)\n{daemon.log_tail()}"
        ) from None
    took = time.monotonic() - signalled_at
    print(
        f"\n[stop {case}] {sig.name} → exit {code} after {took:.2f} s "
        f"(grace {GRACE_S:.0f} s, limit {LIMIT_S:.0f} s)"
    )
    return code, took


def assert_stopped_in_time(daemon: Daemon, code: int, took: float) -> None:
    assert took <= LIMIT_S, f"exit {took:.2f} s after SIGTERM (limit {LIMIT_S:.0f} s)\n{daemon.log_tail()}"
    assert code == 0, f"exit code {code}\n{daemon.log_tail()}"
    assert unhandled(daemon) == [], daemon.log_tail()
    assert events(daemon, "daemon_failed") == []


def unhandled(daemon: Daemon) -> list[str]:
    """A traceback Python printed itself (not a library's logged warning, which is a JSON line)."""
    return [
        line
        for line in daemon.log_path.read_text(errors="replace").splitlines()
        if line.startswith("Traceback")
    ]


@pytest.fixture
async def cleanup() -> AsyncIterator[list[Daemon]]:
    """Daemons a test started; killed if a test leaves one running."""
    daemons: list[Daemon] = []
    yield daemons
    for daemon in daemons:
        await daemon.stop()


async def launch(daemons: list[Daemon], env: Mapping[str, str], log_dir: Path, *args: str) -> Daemon:
    daemon = await start_daemon(env, log_dir, *args)
    daemons.append(daemon)
    return daemon


# ---------------------------------------------------------------- the jobs afterwards


async def lost_or_leased(dsn: str, ids: list[UUID]) -> list[str]:
    """Jobs that went missing, are in no known state, or are pending with a lease still held."""
    jobs = await fetch_jobs(dsn)
    wrong = [f"{job_id}: missing" for job_id in ids if job_id not in jobs]
    for job_id, row in jobs.items():
        if row["state"] not in FINISHED | {"pending"}:
            wrong.append(f"{job_id}: state {row['state']}")
        elif row["state"] == "pending" and row["lease_owner"] is not None:
            wrong.append(f"{job_id}: pending, lease still held by {row['lease_owner']}")
    return wrong


def finished_wrongly(sim: SimServer, jobs: Mapping[UUID, asyncpg.Record]) -> list[str]:
    """Finished jobs whose state disagrees with the simulator (pending ones are still to do)."""
    return list(mismatched_states(sim, {j: r for j, r in jobs.items() if r["state"] != "pending"}))


async def assert_nothing_lost(dsn: str, sim: SimServer, ids: list[UUID]) -> None:
    assert await lost_or_leased(dsn, ids) == []
    assert finished_wrongly(sim, await fetch_jobs(dsn)) == []


async def enqueue_ids(dsn: str, ids: list[UUID]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", ids)
    finally:
        await conn.close()


async def leases_held(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM harvester.jobs WHERE state = 'pending' AND lease_owner IS NOT NULL"
            )
        )
    finally:
        await conn.close()


async def drain_finishes_everything(
    daemons: list[Daemon], dsn: str, sim: SimServer, ids: list[UUID], log_dir: Path
) -> float:
    """A second ``run --drain`` finishes every job (after the first run's leases ran out)."""
    began = time.monotonic()
    drain = await launch(daemons, stop_env(dsn, sim, "second"), log_dir, "--drain")
    try:
        code = await drain.exit_code(LEASE_S + 40)
    except TimeoutError:
        raise AssertionError(f"the second run did not drain the queue\n{drain.log_tail()}") from None
    assert code == 0, drain.log_tail()
    jobs = await fetch_jobs(dsn)
    assert set(jobs) == set(ids)
    assert [j for j, row in jobs.items() if row["state"] == "pending"] == []
    assert mismatched_states(sim, jobs) == []
    return time.monotonic() - began


# ---------------------------------------------------------------- a PostgreSQL to stop


class StoppablePostgres(TempPostgres):
    """A throwaway cluster that can be stopped and started again on the same port and data."""

    def resume(self) -> None:
        self._spawn()


def require_postgres() -> None:
    """The server binaries, or a skip (a failure in CI, where they are installed)."""
    try:
        find_bindir()
    except HarvesterError as exc:
        reason = f"a PostgreSQL of the test's own is needed: {exc}"
        if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
            pytest.fail(f"{reason}; CI=true, so this is a failure, not a skip", pytrace=False)
        pytest.skip(reason)


@pytest.fixture
def own_pg() -> Iterator[StoppablePostgres]:
    require_postgres()
    pg = StoppablePostgres()
    with pg:
        yield pg


async def migrated(pg: StoppablePostgres) -> str:
    conn = await asyncpg.connect(pg.dsn)
    try:
        await migrate.apply(conn)
    finally:
        await conn.close()
    return pg.dsn


# ---------------------------------------------------------------- the states


async def test_sigterm_when_idle_exits_at_once(db_dsn: str, tmp_path: Path, cleanup: list[Daemon]) -> None:
    async with SimServer(speed=SPEED, seed=71, tokens=["e2e:key:secret"]) as sim:
        daemon = await launch(cleanup, stop_env(db_dsn, sim, "idle"), tmp_path)
        await started(daemon)
        await asyncio.sleep(0.5)  # into its idle wait
        code, took = await stop_timed(daemon, "idle")
        assert_stopped_in_time(daemon, code, took)
        assert sim.stats(per_job=False)["requests_total"] == 0
        assert await fetch_jobs(db_dsn) == {}


async def test_sigterm_mid_request_exits_within_grace_and_hands_the_jobs_back(
    db_dsn: str, tmp_path: Path, cleanup: list[Daemon]
) -> None:
    async with SimServer(speed=SPEED, seed=72, tokens=["e2e:key:secret"]) as sim:
        requests = RequestLog()
        requests.attach(sim)
        ids = await sim_jobs(sim, 3, "spiderSite", **READY)
        await sim_admin(sim, "faults", {"hang_s": 120, "next": ["hang"] * len(ids)})
        await enqueue_ids(db_dsn, ids)
        daemon = await launch(cleanup, stop_env(db_dsn, sim, "midrequest"), tmp_path)
        await wait_for(
            lambda: sum(o == "hang" for _, _, o in requests.entries) == len(ids),
            30,
            "every results request to hang",
        )
        code, took = await stop_timed(daemon, "mid-request")
        assert_stopped_in_time(daemon, code, took)
        assert took >= GRACE_S - 1.0, "the requests in flight were not given their grace"
        await assert_nothing_lost(db_dsn, sim, ids)
        assert {row["state"] for row in (await fetch_jobs(db_dsn)).values()} == {"pending"}


async def test_sigterm_in_a_429_pause_of_hours_does_not_wait_for_the_pause(
    db_dsn: str, tmp_path: Path, cleanup: list[Daemon]
) -> None:
    async with SimServer(speed=SPEED, seed=73, tokens=["e2e:key:secret"]) as sim:
        requests = RequestLog()
        requests.attach(sim)
        ids = await sim_jobs(sim, 10, "spiderSite", **READY)
        await sim_admin(sim, "faults", {"long_retry_after_s": HOURS_S, "next": ["long_retry_after"]})
        await enqueue_ids(db_dsn, ids)
        # burst 1: the jobs claimed with the one that meets the 429 are still waiting for their
        # slots, which the pause has moved hours away
        env = stop_env(db_dsn, sim, "paused", HARVESTER_RATE_LIMIT__BURST="1")
        daemon = await launch(cleanup, env, tmp_path)

        async def paused_for_hours() -> bool:
            conn = await asyncpg.connect(db_dsn)
            try:
                return bool(
                    await conn.fetchval(
                        "SELECT bool_or(paused_until > now() + interval '1 hour') FROM harvester.rate_limits"
                    )
                )
            finally:
                await conn.close()

        await wait_for(paused_for_hours, 30, "the limiter to pause for hours")
        await asyncio.sleep(1.0)  # the other claimed jobs find their slots moved past the pause
        waiting = await leases_held(db_dsn)
        code, took = await stop_timed(daemon, "429 pause")
        answers = [outcome for _, _, outcome in requests.entries]
        print(f"[stop 429 pause] {waiting} jobs held, waiting for a slot; answers sent: {answers}")
        assert_stopped_in_time(daemon, code, took)
        assert waiting >= 1, "no job was waiting for a slot when the stop came"
        await assert_nothing_lost(db_dsn, sim, ids)


async def test_sigterm_in_an_auth_pause_exits_at_once(
    db_dsn: str, tmp_path: Path, cleanup: list[Daemon]
) -> None:
    async with SimServer(speed=SPEED, seed=74, tokens=["e2e:key:secret"]) as sim:
        requests = RequestLog()
        requests.attach(sim)
        ids = await sim_jobs(sim, 10, "spiderSite", **READY)
        await sim_admin(sim, "tokens", {"token": "e2e:key:secret", "action": "revoke", "status": 401})
        await enqueue_ids(db_dsn, ids)
        daemon = await launch(cleanup, stop_env(db_dsn, sim, "auth"), tmp_path)
        await wait_for(lambda: requests.first("401") is not None, 30, "the daemon to meet the 401")
        await wait_for(lambda: bool(events(daemon, "api_auth_failed")), 10, "the auth pause")
        await asyncio.sleep(1.0)  # settled into the pause (the next probe is auth_recheck_s away)
        code, took = await stop_timed(daemon, "auth pause")
        assert_stopped_in_time(daemon, code, took)
        await assert_nothing_lost(db_dsn, sim, ids)


async def test_sigterm_during_a_database_outage_exits_and_a_later_run_finishes(
    own_pg: StoppablePostgres, tmp_path: Path, cleanup: list[Daemon]
) -> None:
    dsn = await migrated(own_pg)
    async with SimServer(speed=SPEED, seed=75, tokens=["e2e:key:secret"]) as sim:
        ids = await sim_jobs(sim, 6, "spiderSite", duration_s=[3, 5]) + await sim_jobs(
            sim, 4, "spiderSite", **READY
        )
        await enqueue_ids(dsn, ids)
        daemon = await launch(cleanup, stop_env(dsn, sim, "outage"), tmp_path)

        async def settled() -> bool:
            """Every job polled and its answer written: the ready ones harvested, none leased."""
            jobs = (await fetch_jobs(dsn)).values()
            return all(r["polls"] >= 1 and r["lease_owner"] is None for r in jobs)

        await wait_for(settled, 30, "every job polled once and its answer written")
        await asyncio.to_thread(own_pg.halt)
        await wait_for(lambda: bool(events(daemon, "db_unavailable")), 30, "the daemon to meet the outage")
        await asyncio.sleep(1.0)  # into its retries (repeated warnings are rate limited)
        code, took = await stop_timed(daemon, "database outage")
        assert_stopped_in_time(daemon, code, took)

        await nothing_lost_after_the_outage(own_pg, dsn, sim, ids, cleanup, tmp_path, "database outage")


async def nothing_lost_after_the_outage(
    own_pg: StoppablePostgres,
    dsn: str,
    sim: SimServer,
    ids: list[UUID],
    cleanup: list[Daemon],
    tmp_path: Path,
    label: str,
) -> None:
    """PostgreSQL back: every job still there, none finished wrongly, and a second run drains
    the queue (the leases the stopped daemon could not hand back run out)."""
    await asyncio.to_thread(own_pg.resume)
    jobs = await fetch_jobs(dsn)
    assert set(jobs) == set(ids)
    assert finished_wrongly(sim, jobs) == []
    held = await leases_held(dsn)
    drained_s = await drain_finishes_everything(cleanup, dsn, sim, ids, tmp_path)
    print(f"[stop {label}] {held} leases left behind; a second run drained the queue in {drained_s:.1f} s")


async def test_sigterm_while_a_store_is_retried_exits_and_a_later_run_finishes(
    own_pg: StoppablePostgres, tmp_path: Path, cleanup: list[Daemon]
) -> None:
    dsn = await migrated(own_pg)
    async with SimServer(speed=SPEED, seed=76, tokens=["e2e:key:secret"]) as sim:
        requests = RequestLog()
        requests.attach(sim)
        ids = await sim_jobs(sim, 2, "spiderSite", **READY)
        # the results requests hang for a moment, long enough to stop PostgreSQL under them
        await sim_admin(sim, "faults", {"hang_s": 2.0, "next": ["hang"] * len(ids)})
        await enqueue_ids(dsn, ids)
        daemon = await launch(cleanup, stop_env(dsn, sim, "store"), tmp_path)
        await wait_for(
            lambda: sum(o == "hang" for _, _, o in requests.entries) == len(ids),
            30,
            "the results requests to hang",
        )
        await asyncio.to_thread(own_pg.halt)

        def store_retried() -> bool:
            return any("job_id" in e and "retry_in_s" in e for e in events(daemon, "db_unavailable"))

        await wait_for(store_retried, 30, "a fetched body's store to be retried")
        code, took = await stop_timed(daemon, "store retried")
        assert_stopped_in_time(daemon, code, took)

        await nothing_lost_after_the_outage(own_pg, dsn, sim, ids, cleanup, tmp_path, "store retried")


@pytest.mark.parametrize("second", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_ends_a_stop_still_in_its_grace_period(
    db_dsn: str, tmp_path: Path, cleanup: list[Daemon], second: signal.Signals
) -> None:
    grace_s = 20.0
    within_s = 1.0
    async with SimServer(speed=SPEED, seed=77, tokens=["e2e:key:secret"]) as sim:
        requests = RequestLog()
        requests.attach(sim)
        ids = await sim_jobs(sim, 2, "spiderSite", **READY)
        await sim_admin(sim, "faults", {"hang_s": 120, "next": ["hang"] * len(ids)})
        await enqueue_ids(db_dsn, ids)
        env = stop_env(db_dsn, sim, "twice", HARVESTER_WORKER__SHUTDOWN_GRACE_S=str(grace_s))
        daemon = await launch(cleanup, env, tmp_path)
        await wait_for(
            lambda: sum(o == "hang" for _, _, o in requests.entries) == len(ids),
            30,
            "every results request to hang",
        )
        daemon.proc.send_signal(signal.SIGTERM)
        await asyncio.sleep(1.0)
        assert daemon.proc.returncode is None, "the first SIGTERM did not wait for the requests"
        signalled_at = time.monotonic()
        daemon.proc.send_signal(second)
        try:
            code = await daemon.exit_code(within_s + 3)
        except TimeoutError:
            raise AssertionError(
                f"still running {time.monotonic() - signalled_at:.1f} s after the "
                f"second signal ({second.name}; grace {grace_s:.0f} s)"
            ) from None
        took = time.monotonic() - signalled_at
        print(
            f"\n[stop twice] SIGTERM, then {second.name} 1 s later → exit {code} after {took:.2f} s "
            f"(grace {grace_s:.0f} s)"
        )
        assert took <= within_s, f"exit {took:.2f} s after the second signal"
