"""The daemon with the event stream against the simulator: requests spent, and nothing lost.

With a healthy stream every job costs its one results fetch and the list only reconciles; with a
stream that loses events and is cut, every job is still stored and fetched once after it ended.
"""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest

from harvester import daemon
from harvester.sim import SimServer
from tests.support.e2e import TOKEN, daemon_config, enqueue, sim_admin, sim_jobs

pytestmark = pytest.mark.slow
SPEED = 30.0


async def states(dsn: str) -> dict[str, int]:
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT state, count(*) AS n FROM harvester.jobs GROUP BY state")
    finally:
        await conn.close()
    return {row["state"]: int(row["n"]) for row in rows}


async def harvest(dsn: str, sim: SimServer, count: int, **faults: Any) -> dict[str, Any]:
    if faults:
        await sim_admin(sim, "faults", faults)
    cfg = daemon_config(dsn, sim, SPEED, **{"polling.events": "sse"})
    stop = asyncio.Event()
    task = asyncio.create_task(daemon.run(cfg, stop))
    try:
        await asyncio.sleep(0.5)  # the stream is open before the jobs are submitted
        ids = await sim_jobs(sim, count, "spiderSite", duration_s=[10, 20], outcome="completed")
        await enqueue(dsn, ids)
        async with asyncio.timeout(60):
            while (seen := await states(dsn)).get("pending", 0) or sum(seen.values()) < count:
                await asyncio.sleep(0.2)  # noqa: ASYNC110 - polling the database, not an event
    finally:
        stop.set()
        assert await asyncio.wait_for(task, timeout=30) == 0
    return sim.stats(per_job=False)


async def test_a_healthy_stream_costs_one_fetch_per_job(db_dsn: str) -> None:
    async with SimServer(speed=SPEED, seed=61, tokens=[TOKEN], fail_rate=0.0, cancel_rate=0.0) as sim:
        await sim_admin(sim, "faults", {"stream_noise": 0.05})
        stats = await harvest(db_dsn, sim, 30)
    assert await states(db_dsn) == {"harvested": 30}
    used = stats["requests_by_endpoint"]
    fetches = sum(used.get("results", {}).values())
    streams = sum(used.get("events_stream", {}).values())
    pages = sum(used.get("list", {}).values())
    assert fetches == 30  # each result fetched once, after its completion event
    assert streams == 1
    assert (fetches + streams + pages) / 30 <= 1.1
    assert stats["events"]["events_sent_by_type"].get("job.completed", 0) >= 30
    print(f"\n[stream] 30 jobs: {fetches} fetches, {streams} stream, {pages} list pages")


async def test_lost_events_and_cut_streams_lose_no_job(db_dsn: str) -> None:
    async with SimServer(speed=SPEED, seed=62, tokens=[TOKEN], fail_rate=0.0, cancel_rate=0.0) as sim:
        stats = await harvest(db_dsn, sim, 40, events_lost=0.3, stream_cut_s=60)
    assert await states(db_dsn) == {"harvested": 40}
    fetches = stats["result_fetches"]
    assert fetches["jobs_fetched_more_than_once_after_done"] == 0
    assert stats["events"]["events_lost"] > 0 and stats["events"]["streams_cut"] >= 1
    used = stats["requests_by_endpoint"]
    print(
        f"\n[stream, 30 % lost, cut every 60 s] 40 jobs: {fetches['total']} fetches, "
        f"{sum(used.get('events_stream', {}).values())} streams, "
        f"{sum(used.get('list', {}).values())} list pages"
    )
