"""An idle daemon claims a newly inserted job on the insert's NOTIFY, not at its next idle poll."""

from __future__ import annotations

import asyncio
import time

import pytest

from harvester.daemon import run as daemon
from harvester.sim import SimServer
from tests.support.e2e import TOKEN, all_claimed, daemon_config, enqueue, listening, sim_jobs, wait_for

pytestmark = pytest.mark.slow
SPEED = 20.0
IDLE_POLL_S = 30.0  # real seconds: far longer than the wake-up may take


async def test_insert_wakes_an_idle_daemon_well_before_its_idle_poll(db_dsn: str) -> None:
    async with SimServer(speed=SPEED, seed=41, tokens=[TOKEN]) as sim:
        cfg = daemon_config(db_dsn, sim, SPEED, **{"worker.idle_poll_s": IDLE_POLL_S * SPEED})
        stop = asyncio.Event()
        task = asyncio.create_task(daemon.run(cfg, stop, max_seconds=IDLE_POLL_S * 2))
        try:
            await wait_for(lambda: listening(db_dsn), 30, "the daemon to LISTEN")
            await asyncio.sleep(0.5)  # let the first, empty claim pass settle into the idle wait
            ids = await sim_jobs(sim, 1, "spiderSite")
            inserted_at = time.monotonic()
            await enqueue(db_dsn, ids)
            await wait_for(
                lambda: all_claimed(db_dsn), IDLE_POLL_S / 3, "the new job to be claimed", interval=0.02
            )
            woke_s = time.monotonic() - inserted_at
        finally:
            stop.set()
            assert await asyncio.wait_for(task, timeout=30) == 0
        print(f"\n[e2e wake-up] claimed {woke_s:.3f} s after the insert (idle poll {IDLE_POLL_S:.0f} s)")
