"""``harvester run``: builds the parts from config, runs them, and owns their lifetime.

The daemon builds what the worker and discovery share (the limiter, the gate with its brakes and
learned durations, the metrics) and hands it to each; nothing is assigned after construction.
Resources (pool, API client, health server) live on one ``AsyncExitStack``; side tasks (listener,
heartbeat, housekeeping, discovery, watchdog, the ``--max-seconds`` timer) live in one
``TaskGroup`` and are cancelled once the worker has stopped. A side task's database error is
retried with backoff (``lifetime.keep_running``) and never ends the daemon; every error that does
end it is logged, each of them, before the run fails.

At start it checks that no migration is pending, or applies them when ``database.migrate_on_start``
(``run --migrate``) asks: the daemon's role may have no right to create anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterator
from typing import Protocol

import asyncpg

from harvester import db, lifetime, logs, migrate, notify, server
from harvester.client import SpiderIQ
from harvester.config import Config, require_token
from harvester.discovery import Discovery
from harvester.errors import DatabaseError, HarvesterError
from harvester.events import EventStream
from harvester.gate import Gate
from harvester.limiter import SharedLimiter
from harvester.metrics import Metrics
from harvester.queue import PgQueue
from harvester.worker import Worker

log = logs.get("harvester.daemon")
CHANNEL = "harvester_jobs"
POOL_CLOSE_TIMEOUT_S = 1.0


class Source(Protocol):
    """A discovery source (the list, the event stream): runs beside the worker until stopped."""

    async def run(self, stop: asyncio.Event) -> None: ...


class DaemonError(HarvesterError):
    """The daemon ended because of an error; each one was logged."""


async def listen_for_jobs(dsn: str, nudge: Callable[[], None], stop: asyncio.Event) -> None:
    """Nudge the worker on every insert; reconnect with backoff when the connection drops."""
    backoff = lifetime.Backoff(0.5, 30.0)
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            await conn.add_listener(CHANNEL, lambda *_: nudge())
            nudge()  # catch anything inserted while we were not listening
            backoff.reset()
            while not conn.is_closed() and not await lifetime.wait(stop, 2.0):
                pass
        except db.DB_OR_SQL_ERRORS as exc:
            delay = backoff.next()
            log.debug("listener_reconnect", error=str(exc), retry_in_s=round(delay, 2))
            await lifetime.wait(stop, delay)
        finally:
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await conn.close(timeout=2)


async def watchdog(last_tick: Callable[[], float], stop: asyncio.Event) -> None:
    """WATCHDOG=1 from the loop's own liveness, at half systemd's interval."""
    interval = notify.watchdog_interval()
    if not interval:
        return
    while not stop.is_set():
        if time.monotonic() - last_tick() < interval:
            notify.notify("WATCHDOG=1")
        await lifetime.wait(stop, interval / 2)


async def migrate_with_retry(dsn: str, wait_s: float = 10.0, *, apply: bool = True) -> None:
    """Apply migrations (or, with ``apply=False``, only check that none is pending: a
    ``SchemaError`` otherwise), waiting up to ``wait_s`` for the database to come up; a connection
    lost while migrating (a server restart) is retried like a failed connect, not a crash at
    start-up. Longer outages are for the supervisor (systemd, Docker) to ride out by restarting us."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=5)
            try:
                if apply:
                    await migrate.apply(conn)
                else:
                    await migrate.require_current(conn)
                return
            finally:
                with contextlib.suppress(*db.DB_ERRORS):
                    await conn.close(timeout=5)
        except db.DB_ERRORS as exc:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise DatabaseError(f"cannot migrate {db.describe_dsn(dsn)}: {exc}") from exc
            log.warning(
                "db_unavailable",
                error=str(exc),
                retry_in_s=round(min(1.0, remaining), 2),
                gives_up_in_s=round(remaining, 1),
            )
            await asyncio.sleep(min(1.0, remaining))


class Liveness(server.PoolHealth):
    """What the health endpoints read: the loop's last tick, the brakes, the database check."""

    def __init__(self, worker: Worker, gate: Gate, pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._worker = worker
        self._gate = gate

    @property
    def last_tick(self) -> float:
        return self._worker.last_tick

    @property
    def auth_ok(self) -> bool:
        return not self._gate.brakes.auth_failed

    @property
    def paused_reason(self) -> str | None:
        return self._gate.paused_reason()

    @property
    def discovery_detail(self) -> str | None:
        return self._gate.discovery_detail()


async def run(
    cfg: Config, stop: asyncio.Event, *, drain: bool = False, max_seconds: float | None = None
) -> int:
    token = require_token(cfg)
    logs.register_secret(token)
    await migrate_with_retry(
        cfg.database.direct_dsn, cfg.database.startup_wait_s, apply=cfg.database.migrate_on_start
    )
    async with contextlib.AsyncExitStack() as resources:
        pool = await db.open_pool(cfg.database)
        resources.push_async_callback(_close_pool, pool)
        limiter = SharedLimiter.from_config(pool, token, cfg.rate_limit)
        metrics = Metrics()
        # Per real minute, as rate() over the request counter measures it (scaled by --speed).
        metrics.set_rate_limit(cfg.rate_limit.requests_per_minute, cfg.rate_limit.reserve_per_minute)
        gate = Gate(cfg, limiter, observer=metrics)
        client = SpiderIQ.from_config(cfg.api, token, time_scale=cfg.speed, on_remaining=gate.note_remaining)
        resources.push_async_callback(client.close)
        store = PgQueue(
            pool,
            statement_timeout_s=cfg.database.statement_timeout_s,
            region=cfg.normalize.default_region or None,
        )
        worker = Worker(cfg, store, client, gate)
        sources: list[Source] = []  # what tells the gate which jobs finished, beside direct polls
        if cfg.polling.discovery == "list":
            sources.append(Discovery(cfg, store, client, gate, token))
        if cfg.polling.events == "sse":
            sources.append(EventStream(cfg, store, gate, token))
        if cfg.server.enabled:
            handle = await _start_server(cfg, metrics, Liveness(worker, gate, pool), limiter, gate, pool)
            resources.push_async_callback(handle.close)
            listening: int | None = handle.port
        else:
            listening = None
        resources.callback(notify.notify, "STOPPING=1")
        notify.notify("READY=1")
        log.info(
            "daemon_started",
            worker_id=cfg.worker.worker_id,
            base_url=cfg.api.base_url,
            speed=cfg.speed,
            discovery=cfg.polling.discovery,
            events=cfg.polling.events,
            listen=listening,
        )
        with _reported():
            await _run_tasks(cfg, worker, sources, gate, stop, drain, max_seconds)
    log.info("daemon_stopped", harvested=worker.harvested)
    return 0


async def _run_tasks(
    cfg: Config,
    worker: Worker,
    sources: list[Source],
    gate: Gate,
    stop: asyncio.Event,
    drain: bool,
    max_seconds: float | None,
) -> None:
    """The worker in front, its side tasks beside it; side tasks end when the worker has."""
    side_stop = asyncio.Event()  # set only once the worker has let go of every job
    async with asyncio.TaskGroup() as group:
        side = [
            group.create_task(listen_for_jobs(cfg.database.direct_dsn, gate.nudge, side_stop)),
            group.create_task(
                lifetime.keep_running(
                    "heartbeat",
                    worker.heartbeat,
                    side_stop,
                    backoff=lifetime.Backoff(1.0, cfg.worker.heartbeat_s),
                )
            ),
            group.create_task(
                lifetime.keep_running(
                    "housekeeping", worker.housekeeping, side_stop, backoff=lifetime.Backoff(1.0, 300.0)
                )
            ),
            group.create_task(watchdog(lambda: worker.last_tick, side_stop)),
        ]
        side += [group.create_task(source.run(side_stop)) for source in sources]
        if max_seconds is not None:
            side.append(group.create_task(_stop_after(stop, max_seconds)))
        try:
            await worker.run(stop, drain=drain)
        finally:
            stop.set()
            side_stop.set()
            for task in side:  # a side task may be waiting for a slot or on the API: no waiting
                task.cancel()


@contextlib.contextmanager
def _reported() -> Iterator[None]:
    """Log every error of the task group, then fail the run with all of them in one line."""
    try:
        yield
    except* Exception as failed:
        group: BaseExceptionGroup[Exception] = failed
        errors = _leaves(group)
        for error in errors:
            log.error(
                "daemon_failed",
                error=logs.scrub(f"{type(error).__name__}: {error}"),
                exc_info=None if isinstance(error, HarvesterError) else error,
            )
        summary = "; ".join(logs.scrub(str(e) or type(e).__name__) for e in errors)
        raise DaemonError(summary) from (errors[0] if len(errors) == 1 else group)


def _leaves(group: BaseExceptionGroup[Exception]) -> list[Exception]:
    found: list[Exception] = []
    for error in group.exceptions:
        if isinstance(error, BaseExceptionGroup):
            found.extend(_leaves(error))
        else:
            found.append(error)
    return found


async def _stop_after(stop: asyncio.Event, seconds: float) -> None:
    await lifetime.wait(stop, seconds)
    stop.set()


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool; a database that went away cannot hold up the exit."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)
    except db.DB_ERRORS:  # TimeoutError is one of them
        pool.terminate()


async def _start_server(
    cfg: Config, metrics: Metrics, health: Liveness, limiter: SharedLimiter, gate: Gate, pool: asyncpg.Pool
) -> server.ServerHandle:
    refresh_jobs = server.QueueRefresher(pool, metrics, min_interval_s=10.0)

    async def refresh() -> None:
        """Gauges read at scrape time: loop tick, list health, queue counts, limiter, pauses."""
        metrics.set_loop_tick(time.time() - max(0.0, time.monotonic() - health.last_tick))
        metrics.set_list_healthy(gate.discovery_healthy)
        brakes = gate.brakes
        metrics.set_breaker_open(brakes.breaker.is_open(gate.clock()))
        metrics.set_auth_paused(brakes.auth_failed)
        with contextlib.suppress(DatabaseError):
            state = await limiter.state()
            metrics.set_limiter(state.tokens, state.paused)
        await refresh_jobs()

    # A loop iteration ends at least every idle_poll_s; allow for a slow store on top.
    stale_after = max(15.0, cfg.worker.idle_poll_s * 3)
    return await server.start_server(
        cfg.server.listen, metrics, health, stale_after_s=stale_after, refresh=refresh
    )
