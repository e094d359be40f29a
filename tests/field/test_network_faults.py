"""Networks that fail without saying so, between the daemon and PostgreSQL or SpiderIQ.

A TCP proxy (tests/support/proxy.py) sits on the path and delays, black-holes (bytes taken, nothing
answered, no reset) or resets. Cases:

- a demoted node behind one address (a virtual IP): the old primary turns read-only while the
  daemon's connections still reach it, the standby is promoted and the address moves; every write on
  the old connections fails with 25006 until the pool leaves the node, which it names;
- every open database connection black-holed for good (new ones pass): the pool's statements time
  out and the LISTEN connection's check notices its silence, each within a bounded time;
- the API black-holed, then reset, with the event stream on.

Each says what happened to every job, and how long each side took to notice.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from harvester.db import DB_OR_SQL_ERRORS, migrate
from harvester.sim import SimServer
from tests.support.cluster import Cluster, cluster
from tests.support.e2e import (
    TOKEN,
    Daemon,
    daemon_env,
    enqueue,
    fetch_jobs,
    max_burst,
    mismatched_states,
    sim_jobs,
    start_daemon,
    wait_for,
    worst_window,
)
from tests.support.proxy import FaultyProxy

pytestmark = pytest.mark.slow

SPEED = 10.0
LISTEN_CHECK_S = 15.0 / SPEED  # database.listen_check_s, scaled


async def finished_jobs(dsn: str) -> int:
    try:
        conn = await asyncpg.connect(dsn, timeout=2)
    except DB_OR_SQL_ERRORS:
        return -1
    try:
        return int(await conn.fetchval("SELECT count(*) FROM harvester.jobs WHERE state <> 'pending'"))
    finally:
        await conn.close()


async def listeners(dsn: str, since: float | None = None) -> int:
    """LISTEN harvester_jobs sessions on this server (started after ``since``, a unix time)."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE query ILIKE 'LISTEN%harvester_jobs%' "
                "AND ($1::float8 IS NULL OR backend_start > to_timestamp($1))",
                since,
            )
        )
    finally:
        await conn.close()


def log_events(daemon: Daemon, name: str) -> list[dict[str, Any]]:
    found = []
    for line in daemon.log_path.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found.append(event)
    return found


async def stop(daemon: Daemon) -> int:
    if daemon.proc.returncode is None:
        daemon.proc.terminate()
    try:
        return await daemon.exit_code(within_s=30)
    finally:
        await daemon.stop()


@pytest.fixture
async def pair() -> AsyncIterator[Cluster]:
    with cluster() as running:
        conn = await asyncpg.connect(running.primary_dsn())
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()
        yield running


async def test_a_pool_on_a_demoted_node_behind_one_address_leaves_it_and_names_it(
    pair: Cluster, tmp_path: Path
) -> None:
    async with FaultyProxy(pair.primary.port) as vip, SimServer(speed=SPEED, seed=8, tokens=[TOKEN]) as sim:
        dsn = f"postgresql://postgres@127.0.0.1:{vip.port}/postgres?target_session_attrs=read-write"
        ids = await sim_jobs(sim, 90)
        await enqueue(pair.primary_dsn(), ids)
        daemon = await start_daemon(daemon_env(dsn, sim, SPEED, "vip"), tmp_path)
        try:
            await wait_for(lambda: _at_least(pair.primary_dsn(), 25), 60, "stores on the first primary")
            old = await asyncpg.connect(pair.primary_dsn())
            try:  # demoted: it still answers, and refuses every write
                await old.execute("ALTER SYSTEM SET default_transaction_read_only = on")
                await old.execute("SELECT pg_reload_conf()")
            finally:
                await old.close()
            await pair.wait_replayed()
            pair.promote()
            moved_wall = time.time()
            vip.retarget(pair.standby.port)  # the address moves; open connections stay where they were
            moved_at = time.monotonic()
            resumed = await wait_for(lambda: _stored_since(pair.standby_dsn(), moved_wall), 30, "a new store")
            await wait_for(
                lambda: _positive(listeners(pair.standby_dsn(), moved_wall)), 10, "LISTEN on the new primary"
            )
            relistened = time.monotonic() - moved_at
            await wait_for(lambda: _at_least(pair.standby_dsn(), len(ids)), 90, "every job finished")
        finally:
            code = await stop(daemon)
        stats = sim.stats(per_job=True)
        jobs = await fetch_jobs(pair.standby_dsn())
    named = log_events(daemon, "database_read_only")
    print(
        f"\ndemoted node: stores resumed {resumed:.1f} s after the address moved, LISTEN followed within "
        f"{relistened:.1f} s; reported {[e['node'] for e in named]}; "
        f"{stats['requests_total']} requests for {len(ids)} jobs, worst window {worst_window(stats)}"
    )
    assert code == 0, daemon.log_tail()
    assert mismatched_states(sim, jobs) == []
    assert named and named[0]["node"].startswith(f"127.0.0.1:{pair.primary.port}")
    assert resumed < 10
    assert worst_window(stats) <= 100 and max_burst(stats) <= 20


async def test_black_holed_database_connections_are_noticed_and_replaced(
    pair: Cluster, tmp_path: Path
) -> None:
    """Every connection open at that moment goes silent for good, as in a network partition; new
    ones pass. A second later the server's side of each is closed, as the server's keepalives would
    (its transactions roll back, their locks go). The daemon hears nothing: its statements time out
    (``database.statement_timeout_s``) and the connection is cut, the listener's check
    (``database.listen_check_s``) notices the silent LISTEN connection, and nothing is lost."""
    async with FaultyProxy(pair.primary.port) as proxy, SimServer(speed=SPEED, seed=9, tokens=[TOKEN]) as sim:
        dsn = f"postgresql://postgres@127.0.0.1:{proxy.port}/postgres"
        ids = await sim_jobs(sim, 80)
        await enqueue(pair.primary_dsn(), ids)
        daemon = await start_daemon(daemon_env(dsn, sim, SPEED, "holes"), tmp_path)
        try:
            await wait_for(lambda: _at_least(pair.primary_dsn(), 20), 60, "first stores")
            await wait_for(lambda: _positive(listeners(pair.primary_dsn())), 10, "the listener")
            holed_at, holed_wall = time.monotonic(), time.time()
            proxy.blackhole(new=False)
            await asyncio.sleep(1.0)
            proxy.sever()
            noticed = await wait_for(
                lambda: _positive(listeners(pair.primary_dsn(), holed_wall)),
                4 * LISTEN_CHECK_S + 5,
                "a new LISTEN",
            )
            await wait_for(lambda: _at_least(pair.primary_dsn(), len(ids)), 90, "every job finished")
            finished_after = time.monotonic() - holed_at
        finally:
            code = await stop(daemon)
        jobs = await fetch_jobs(pair.primary_dsn())
    print(
        f"\nblack-holed database connections: LISTEN replaced after {noticed:.1f} s "
        f"(bound {2 * LISTEN_CHECK_S:.1f} s + reconnect); every job finished {finished_after:.1f} s after; "
        f"{proxy.connections} connections through the proxy"
    )
    assert code == 0, daemon.log_tail()
    assert mismatched_states(sim, jobs) == []
    assert noticed <= 2 * LISTEN_CHECK_S + 2


async def test_a_black_holed_then_reset_api_loses_no_job(db_dsn: str, tmp_path: Path) -> None:
    """The API goes silent (every connection, old and new) for 8 s, 80 s of API time, longer than
    the event stream may be quiet; then every connection is reset. Requests time out
    (``api.total_timeout_s``), the stream is found dead by its silence, and every job is harvested."""
    async with SimServer(speed=SPEED, seed=10, tokens=[TOKEN]) as sim:
        sim_port = int(sim.url.rsplit(":", 1)[1].split("/")[0])
        async with FaultyProxy(sim_port) as proxy:
            ids = await sim_jobs(sim, 80)
            await enqueue(db_dsn, ids)
            env = daemon_env(db_dsn, sim, SPEED, "api-holes")
            env["HARVESTER_API_BASE_URL"] = f"http://127.0.0.1:{proxy.port}"
            daemon = await start_daemon(env, tmp_path)
            try:
                await wait_for(lambda: _at_least(db_dsn, 20), 60, "first stores")
                await wait_for(lambda: _stream_open(daemon), 30, "the stream open")
                holed_at = time.time()
                proxy.blackhole()
                await asyncio.sleep(8.0)
                proxy.reset()
                proxy.heal()
                healed_at = time.monotonic()
                await wait_for(lambda: _at_least(db_dsn, len(ids)), 90, "every job finished")
                took = time.monotonic() - healed_at
            finally:
                code = await stop(daemon)
        stats = sim.stats(per_job=True)
        jobs = await fetch_jobs(db_dsn)
    silent = [_unix(e["timestamp"]) - holed_at for e in log_events(daemon, "stream_silent")]
    print(
        f"\nblack-holed then reset API: the stream was found silent "
        f"{', '.join(f'{s:.1f}' for s in silent) or 'never'} s after the hole opened; every job "
        f"finished {took:.1f} s after the reset; {stats['requests_total']} requests for {len(ids)} jobs"
    )
    assert code == 0, daemon.log_tail()
    assert mismatched_states(sim, jobs) == []
    # twice the documented heartbeat, scaled, after the last byte heard before the hole
    assert silent and 0 < silent[0] <= 2 * 30 / SPEED + 1, daemon.log_tail(60)


def _unix(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


async def _stream_open(daemon: Daemon) -> bool:
    """Whether the daemon's log says its event stream is connected now."""
    kinds = ("stream_connected", "stream_silent", "stream_ended", "stream_malformed", "stream_lease_lost")
    said = [e["event"] for e in _all_events(daemon) if e.get("event") in kinds]
    return bool(said) and said[-1] == "stream_connected"


def _all_events(daemon: Daemon) -> list[dict[str, Any]]:
    """The daemon's JSON log lines so far (a line still being written is left for the next read)."""
    lines = daemon.log_path.read_text(errors="replace").splitlines()
    return [json.loads(line) for line in lines if line.startswith("{") and line.endswith("}")]


async def _at_least(dsn: str, n: int) -> bool:
    return await finished_jobs(dsn) >= n


async def _stored_since(dsn: str, unix: float) -> bool:
    """Whether a result was stored after ``unix`` (server clock; one machine here)."""
    conn = await asyncpg.connect(dsn)
    try:
        return bool(
            await conn.fetchval(
                "SELECT count(*) FROM harvester.results WHERE fetched_at > to_timestamp($1)", unix
            )
        )
    finally:
        await conn.close()


async def _positive(count: Any) -> bool:
    return bool(await count)
