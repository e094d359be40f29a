"""The daemon with the event stream against the simulator: requests spent, and nothing lost.

With a healthy stream every job costs its one results fetch and the list only reconciles; with a
stream that loses events and is cut, every job is still stored and fetched once after it ended.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bench.chaos.checks import secret_forms
from harvester.daemon import run as daemon
from harvester.sim import SimServer
from tests.support.e2e import TOKEN, daemon_config, daemon_env, enqueue, sim_admin, sim_jobs, start_daemon

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
            while (seen := await states(dsn)).get("pending", 0) or sum(seen.values()) < count:  # noqa: ASYNC110 - polling the database
                await asyncio.sleep(0.2)
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
        stats = await harvest(db_dsn, sim, 40, events_lost=0.3, stream_cut_s=10)
    assert await states(db_dsn) == {"harvested": 40}
    fetches = stats["result_fetches"]
    assert fetches["jobs_fetched_more_than_once_after_done"] == 0
    assert stats["events"]["events_lost"] > 0 and stats["events"]["streams_cut"] >= 1, stats["events"]
    used = stats["requests_by_endpoint"]
    print(
        f"\n[stream, 30 % lost, cut every 10 s] 40 jobs: {fetches['total']} fetches, "
        f"{sum(used.get('events_stream', {}).values())} streams, "
        f"{sum(used.get('list', {}).values())} list pages"
    )


async def test_the_token_in_the_stream_url_never_reaches_any_output(db_dsn: str, tmp_path: Path) -> None:
    """Cuts, 429 and 503 refusals and a revoked token: aiohttp errors name URLs, ours never do."""
    token = "cli_leakcheck:sk_leakcheck_key:secret_leakcheck_value"
    async with SimServer(speed=SPEED, seed=63, tokens=[token], fail_rate=0.0, cancel_rate=0.0) as sim:
        env = daemon_env(
            db_dsn,
            sim,
            SPEED,
            "leak",
            {
                "HARVESTER_API_TOKEN": token,
                "HARVESTER_LOG_LEVEL": "debug",
                "HARVESTER_SERVER__ENABLED": "true",
                "HARVESTER_SERVER__LISTEN": "127.0.0.1:0",
            },
        )
        await sim_admin(sim, "faults", {"stream_cut_s": 10})
        proc = await start_daemon(env, tmp_path, "--max-seconds", "12")
        try:
            async with asyncio.timeout(10):  # the faults start once the stream is open (and cut)
                while proc.log_path.read_text(errors="replace").count('"stream_connected"') < 2:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            for faults in ({"stream_refuse": "429"}, {"stream_refuse": "503"}, {"stream_refuse": None}):
                await asyncio.sleep(1.5)
                await sim_admin(sim, "faults", faults)
            await sim_admin(sim, "tokens", {"token": token, "action": "revoke"})
            await asyncio.sleep(1.0)
            await sim_admin(sim, "tokens", {"token": token, "action": "restore"})
            assert await proc.exit_code(within_s=30) == 0, proc.log_tail()
        finally:
            await proc.stop()
    status = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harvester",
        "status",
        "--json",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    printed, _ = await asyncio.wait_for(status.communicate(), 60)
    outputs = proc.log_path.read_text(errors="replace") + printed.decode(errors="replace")
    assert outputs.count('"stream_connected"') >= 2 and "stream_refused" in outputs
    for form, secret in secret_forms(token).items():
        assert secret not in outputs, f"the token leaked as {form}"
