"""The change feed end to end: two ``harvester run`` processes harvest from the simulator while a
consumer process (tests/support/feed_consumer.py) is killed with SIGKILL and restarted ten times;
it still reads every change exactly once, in order."""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from pathlib import Path

import asyncpg
import pytest

from harvester.db import feed
from harvester.sim import SimServer
from tests.support.e2e import ROOT, TOKEN, daemon_env, enqueue, sim_jobs, start_daemon, wait_for

pytestmark = pytest.mark.slow
SPEED = 30.0
KILLS = 10


async def start_consumer(dsn: str, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.feed_consumer",
            dsn,
            cwd=str(ROOT),
            stdout=out,
            stderr=asyncio.subprocess.STDOUT,
        )


async def test_a_consumer_killed_ten_times_reads_every_change_once(db_dsn: str, tmp_path: Path) -> None:
    rng = random.Random(15)
    conn = await asyncpg.connect(db_dsn)
    log = tmp_path / "consumer.log"
    try:
        async with SimServer(speed=SPEED, seed=15, tokens=[TOKEN]) as sim:
            ids = await sim_jobs(sim, 150, "spiderSite", duration_s=[1, 20])
            ids += await sim_jobs(sim, 40, "spiderMaps", duration_s=[1, 20])
            await enqueue(db_dsn, ids)
            daemons = [
                await start_daemon(daemon_env(db_dsn, sim, SPEED, f"r{n}"), tmp_path, "--drain")
                for n in (1, 2)
            ]
            consumer = await start_consumer(db_dsn, log)
            kills_mid_harvest = 0
            try:
                for _ in range(KILLS):
                    before = int(await conn.fetchval("SELECT count(*) FROM harvester.changes"))

                    async def moved(before: int = before) -> bool:
                        now = int(await conn.fetchval("SELECT count(*) FROM harvester.changes"))
                        return now > before or all(d.proc.returncode is not None for d in daemons)

                    await wait_for(moved, 60, "new changes")
                    await asyncio.sleep(rng.uniform(0.05, 0.4))
                    consumer.kill()
                    await consumer.wait()
                    if await conn.fetchval("SELECT count(*) FROM harvester.jobs WHERE state = 'pending'"):
                        kills_mid_harvest += 1
                    consumer = await start_consumer(db_dsn, log)
                codes = [await asyncio.wait_for(d.proc.wait(), 120) for d in daemons]
                assert codes == [0, 0], "\n".join(d.log_tail() for d in daemons)
                total = int(await conn.fetchval("SELECT count(*) FROM harvester.changes"))

                async def caught_up() -> bool:
                    if await conn.fetchval("SELECT to_regclass('sink.cursor')") is None:
                        return False
                    return int(await conn.fetchval("SELECT last_change FROM sink.cursor")) == total

                await wait_for(caught_up, 30, "the consumer to catch up")
            finally:
                if consumer.returncode is None:
                    consumer.kill()
                    await consumer.wait()
                for d in daemons:
                    await d.stop()
        seen = [int(r["change_id"]) for r in await conn.fetch("SELECT change_id FROM sink.seen")]
        finished = int(await conn.fetchval("SELECT count(*) FROM harvester.jobs WHERE state <> 'pending'"))
        harvested = int(await conn.fetchval("SELECT count(*) FROM harvester.jobs WHERE state = 'harvested'"))
        consumer_runs = int(await conn.fetchval("SELECT count(DISTINCT pid) FROM sink.seen"))
        declared = await feed.jumps(conn)
        rows = await conn.fetch("SELECT change_id FROM harvester.changes ORDER BY change_id")
        numbered = [int(r["change_id"]) for r in rows]
    finally:
        await conn.close()
    duplicates = sum(n - 1 for n in Counter(seen).values())
    # no gap except a declared one, in what the server numbered and in what the consumer read
    gaps = len(feed.undeclared_gaps(numbered, declared)) + len(set(numbered) - set(seen))
    assert finished == len(ids)
    assert total >= finished
    assert (gaps, duplicates) == (0, 0)
    assert seen == sorted(seen)
    assert kills_mid_harvest >= KILLS // 2, "the kills should fall while jobs are still pending"
    print(
        f"\n[e2e feed] jobs {len(ids)}, harvested {harvested}, finished {finished}, changes {total}; "
        f"consumer killed {KILLS} times ({kills_mid_harvest} mid-harvest), {consumer_runs} runs read "
        f"{len(seen)} changes: gaps {gaps}, duplicates {duplicates}"
    )
