"""``harvester run``: wires the pool, API client, limiter, worker, health server and systemd notify.

Migrations are applied at start (idempotent, under the advisory lock), new jobs wake the worker by
LISTEN/NOTIFY, and side tasks (heartbeat, housekeeping, listener, watchdog) live in one TaskGroup that
ends with the worker.
"""

from __future__ import annotations

import asyncio
import contextlib
import time

import asyncpg

from harvester import db, logs, migrate, notify, server
from harvester.client import SpiderIQ
from harvester.config import Config, require_token
from harvester.discovery import Discovery
from harvester.errors import DatabaseError, HarvesterError
from harvester.limiter import SharedLimiter
from harvester.metrics import Metrics
from harvester.worker import Worker

log = logs.get("harvester.daemon")
CHANNEL = "harvester_jobs"


async def listen_for_jobs(dsn: str, worker: Worker, done: asyncio.Event) -> None:
    """Wake the worker on every insert; reconnect when the connection drops."""
    while not done.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            await conn.add_listener(CHANNEL, lambda *_: worker.wake())
            worker.wake()  # catch anything inserted while we were not listening
            while not done.is_set() and not conn.is_closed():
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(done.wait(), timeout=2.0)
        except db.DB_OR_SQL_ERRORS as exc:
            log.debug("listener_reconnect", error=str(exc))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=1.0)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)


async def watchdog(worker: Worker, done: asyncio.Event) -> None:
    """WATCHDOG=1 from the loop's own liveness, at half systemd's interval."""
    interval = notify.watchdog_interval()
    if not interval:
        return
    while not done.is_set():
        stale = time.monotonic() - worker.last_tick
        if stale < interval:
            notify.notify("WATCHDOG=1")
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(done.wait(), timeout=interval / 2)


async def migrate_with_retry(dsn: str, wait_s: float = 10.0) -> None:
    """Apply migrations, waiting up to ``wait_s`` for the database to come up; a connection lost
    while migrating (a server restart) is retried like a failed connect, not a crash at start-up.
    Longer outages are for the supervisor (systemd, Docker) to ride out by restarting us."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                await migrate.apply(conn)
                return
            finally:
                with contextlib.suppress(*db.DB_ERRORS):
                    await conn.close(timeout=5)
        except db.DB_ERRORS as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseError(f"cannot migrate {db.describe_dsn(dsn)}: {exc}") from exc
            log.warning("db_unavailable", error=str(exc), retry_in_s=round(min(1.0, remaining), 2),
                        gives_up_in_s=round(remaining, 1))
            await asyncio.sleep(min(1.0, remaining))


async def run(cfg: Config, stop: asyncio.Event, *, drain: bool = False,
              max_seconds: float | None = None) -> int:
    token = require_token(cfg)
    logs.register_secret(token)
    await migrate_with_retry(cfg.database.dsn, cfg.database.startup_wait_s)
    pool = await db.open_pool(cfg.database)
    client = SpiderIQ(
        cfg.api.base_url, token,
        connect_timeout_s=cfg.api.connect_timeout_s, read_timeout_s=cfg.api.read_timeout_s,
        total_timeout_s=cfg.api.total_timeout_s, verify_tls=cfg.api.verify_tls,
        user_agent=cfg.api.user_agent, allow_insecure=cfg.api.allow_insecure,
        time_scale=cfg.speed,
    )
    limiter = SharedLimiter(
        pool, token=token, requests_per_minute=cfg.rate_limit.requests_per_minute,
        burst=cfg.rate_limit.burst, window_s=cfg.rate_limit.window_s,
        default_pause_s=cfg.rate_limit.default_pause_s,
    )
    metrics = Metrics()
    worker = Worker(cfg, pool, client, limiter, observer=metrics)
    if cfg.polling.discovery == "list":
        worker.discovery = Discovery(cfg, pool, client, worker, token, clock=time.monotonic)
    server_handle: server.ServerHandle | None = None
    try:
        if cfg.server.enabled:
            server_handle = await _start_server(cfg, metrics, worker, limiter, pool)
        notify.notify("READY=1")
        log.info("daemon_started", worker_id=cfg.worker.worker_id, base_url=cfg.api.base_url,
                 speed=cfg.speed, discovery=cfg.polling.discovery,
                 listen=None if server_handle is None else server_handle.port)
        done = asyncio.Event()
        async with asyncio.TaskGroup() as group:
            group.create_task(listen_for_jobs(cfg.database.dsn, worker, done))
            group.create_task(worker.heartbeat(done))
            group.create_task(worker.housekeeping(done))
            group.create_task(watchdog(worker, done))
            if worker.discovery is not None:
                group.create_task(worker.discovery.run(done))
            if max_seconds is not None:
                group.create_task(_stop_after(stop, max_seconds))
            try:
                await worker.run(stop, drain=drain)
            finally:
                stop.set()
                done.set()
    except* HarvesterError as group_error:
        raise group_error.exceptions[0] from None
    finally:
        notify.notify("STOPPING=1")
        if server_handle is not None:
            await server_handle.close()
        await client.close()
        await pool.close()
    log.info("daemon_stopped", harvested=worker.harvested)
    return 0


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    stop.set()


async def _start_server(cfg: Config, metrics: Metrics, worker: Worker, limiter: SharedLimiter,
                        pool: asyncpg.Pool) -> server.ServerHandle:
    refresh_jobs = server.QueueRefresher(pool, metrics, min_interval_s=10.0)

    async def refresh() -> None:
        """Gauges read at scrape time: queue counts, limiter, pauses."""
        metrics.set_breaker_open(worker.breaker.is_open(worker.clock()))
        metrics.set_auth_paused(worker.auth_failed)
        with contextlib.suppress(*db.DB_OR_SQL_ERRORS, DatabaseError):
            state = await limiter.state()
            metrics.set_limiter(state.tokens, state.paused)
        await refresh_jobs()

    # A loop iteration ends at least every idle_poll_s; allow for a slow store on top.
    stale_after = max(15.0, cfg.worker.idle_poll_s * 3)
    return await server.start_server(cfg.server.listen, metrics, server.WorkerHealth(worker, pool),
                                     stale_after_s=stale_after, refresh=refresh)


