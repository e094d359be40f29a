"""Process-wide pauses end to end: a revoked credential and a 429 with a long Retry-After.

Both must stop polling without changing any job, then resume on their own and finish the work.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest

from harvester.config import Config
from harvester.daemon import run as daemon
from harvester.sim import SimServer
from tests.support.e2e import (
    TOKEN,
    RequestLog,
    daemon_config,
    enqueue,
    fetch_jobs,
    mismatched_states,
    sim_admin,
    sim_jobs,
    state_counts,
    wait_for,
)

pytestmark = pytest.mark.slow
SPEED = 40.0
ON_THE_WIRE_S = 0.1  # the answers to requests sent before the first 401 came back


@contextlib.asynccontextmanager
async def running(cfg: Config) -> AsyncIterator[asyncio.Task[int]]:
    """The daemon in this process, draining the queue; stopped if the test leaves early."""
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(cfg, stop, drain=True, max_seconds=90.0))
    try:
        yield task
    finally:
        stop.set()
        with contextlib.suppress(Exception, asyncio.CancelledError):
            await asyncio.wait_for(task, timeout=30)


async def _harvested_at_least(dsn: str, count: int) -> bool:
    return (await state_counts(dsn)).get("harvested", 0) >= count


async def test_revoked_credential_changes_no_job_until_restored(db_dsn: str) -> None:
    recheck_s = 1.0  # real seconds between probes of the refused credential
    async with SimServer(speed=SPEED, seed=21, tokens=[TOKEN]) as sim:
        requests = RequestLog()
        requests.attach(sim)
        ids = await sim_jobs(sim, 140, "spiderSite")
        ids += await sim_jobs(sim, 20, "spiderSite", outcome="failed")
        await enqueue(db_dsn, ids)
        cfg = daemon_config(db_dsn, sim, SPEED, **{"polling.auth_recheck_s": recheck_s * SPEED})
        async with running(cfg) as task:
            await wait_for(lambda: _harvested_at_least(db_dsn, 30), 60, "30 jobs harvested")
            await sim_admin(sim, "tokens", {"token": TOKEN, "action": "revoke", "status": 401})
            await wait_for(
                lambda: requests.first("401") is not None, 30, "the daemon to meet the revoked credential"
            )
            refused_at = requests.first("401")
            assert refused_at is not None
            await asyncio.sleep(0.5)  # answers already on the wire land first
            after_refusal = requests.between(refused_at, refused_at + 0.5)
            before = {j: r["state"] for j, r in (await fetch_jobs(db_dsn)).items()}
            window_start = time.monotonic()
            await asyncio.sleep(4 * recheck_s)
            after = {j: r["state"] for j, r in (await fetch_jobs(db_dsn)).items()}
            sent = requests.between(window_start, time.monotonic())

            print(
                f"\n[e2e 401] {len(after_refusal)} requests in the 0.5 s after the first 401, "
                f"{len(sent)} (all 401) in the next {4 * recheck_s:.0f} s"
            )
            assert after == before
            # Requests already sent when the first 401 was answered cannot be recalled: up to
            # max_in_flight of them, answered within moments of it (8 within 5 ms in one run,
            # after an idle spell left the limiter its burst). Once the daemon has read the 401,
            # nothing more goes out before the recheck probe, a second away, but for a list page
            # that was already waiting for its slot.
            in_flight = cfg.rate_limit.max_in_flight
            late = requests.between(refused_at + ON_THE_WIRE_S, refused_at + 0.5)
            assert len(after_refusal) <= in_flight + 1, f"{len(after_refusal)} requests after the first 401"
            assert len(late) <= 1, f"{len(late)} requests sent after the daemon had the 401"
            assert "pending" in after.values()
            assert {outcome for _, _, outcome in sent} <= {"401"}
            # one probe per recheck interval (the window's two ends included); a list page that
            # was already waiting for its slot when the probe went out may ride along
            probes = 4 + 1
            assert len(sent) <= 2 * probes, f"{len(sent)} requests while the credential was refused"

            await sim_admin(sim, "tokens", {"token": TOKEN, "action": "restore"})
            assert await asyncio.wait_for(task, timeout=60) == 0
        jobs = await fetch_jobs(db_dsn)
        assert mismatched_states(sim, jobs) == []
        assert sim.stats(per_job=False)["served_429"] == 0


async def test_long_retry_after_holds_every_request_until_it_expires(db_dsn: str) -> None:
    retry_after_sim_s = 160  # 4 real seconds at this speed
    pause_s = retry_after_sim_s / SPEED
    async with SimServer(speed=SPEED, seed=22, tokens=[TOKEN]) as sim:
        requests = RequestLog()
        requests.attach(sim)
        ids = await sim_jobs(sim, 150, "spiderSite", duration_s=[5, 40])
        await enqueue(db_dsn, ids)
        cfg = daemon_config(db_dsn, sim, SPEED)
        async with running(cfg) as task:
            await wait_for(lambda: _harvested_at_least(db_dsn, 30), 60, "30 jobs harvested")
            await sim_admin(
                sim, "faults", {"long_retry_after_s": retry_after_sim_s, "next": ["long_retry_after"]}
            )
            await wait_for(lambda: requests.first("429") is not None, 30, "the 429")
            refused_at = requests.first("429")
            assert refused_at is not None
            await asyncio.sleep(pause_s + 1.0)
            on_the_wire = requests.between(refused_at, refused_at + 0.25)
            during = requests.between(refused_at + 0.25, refused_at + pause_s * 0.95)
            resumed_at = next((at for at, _, _ in requests.entries if at > refused_at + 0.25), None)

            assert len(on_the_wire) <= cfg.rate_limit.max_in_flight + 2
            assert during == [], f"{len(during)} requests sent during the {pause_s:.1f} s pause"
            assert await asyncio.wait_for(task, timeout=60) == 0
        assert resumed_at is not None and resumed_at < refused_at + pause_s + 5
        print(
            f"\n[e2e retry-after] pause {pause_s:.1f} s: {len(on_the_wire)} answers already on "
            f"the wire, 0 sent during it, first new request after {resumed_at - refused_at:.2f} s"
        )
        jobs = await fetch_jobs(db_dsn)
        assert mismatched_states(sim, jobs) == []
        assert sim.stats(per_job=False)["served_429"] == 1
