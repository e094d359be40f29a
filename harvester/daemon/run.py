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
import os
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

import asyncpg
import structlog

from harvester import db, lifetime, logs
from harvester.config import Config, require_tokens
from harvester.daemon import health, sd_notify, wakeup
from harvester.daemon.lanes import Lane, build_lanes, reread_tokens
from harvester.daemon.metrics import Metrics
from harvester.db import admin, migrate
from harvester.errors import DatabaseError, HarvesterError

log = logs.get("harvester.daemon.run")
POOL_CLOSE_TIMEOUT_S = 1.0
TOKEN_CHECK_S = 2.0  # how often token files are looked at for a change (real seconds)


class Source(Protocol):
    """A discovery source (the list, the event stream): runs beside the worker until stopped."""

    async def run(self, stop: asyncio.Event) -> None: ...


class Reload:
    """Requests to re-read the tokens: ``request()`` from the SIGHUP handler, ``take()`` here."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self._asked = False

    def request(self) -> None:
        self._asked = True
        self.event.set()

    def take(self) -> bool:
        asked, self._asked = self._asked, False
        return asked


class DaemonError(HarvesterError):
    """The daemon ended because of an error; each one was logged."""


async def watchdog(last_tick: Callable[[], float], stop: asyncio.Event) -> None:
    """WATCHDOG=1 from the loop's own liveness, at half systemd's interval."""
    interval = sd_notify.watchdog_interval()
    if not interval:
        return
    while not stop.is_set():
        if time.monotonic() - last_tick() < interval:
            sd_notify.notify("WATCHDOG=1")
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


class Liveness(health.PoolHealth):
    """What the health endpoints read: the loops' last ticks, each account's brakes, the database."""

    def __init__(self, lanes: Sequence[Lane], pool: asyncpg.Pool) -> None:
        super().__init__(pool)
        self._lanes = lanes

    @property
    def last_tick(self) -> float:
        return min(lane.worker.last_tick for lane in self._lanes)  # the stalest loop

    @property
    def auth_ok(self) -> bool:
        return not any(lane.gate.brakes.auth_failed for lane in self._lanes)

    @property
    def credential_detail(self) -> str | None:
        refused = [lane.name for lane in self._lanes if lane.gate.brakes.auth_failed]
        return f"credential refused for account(s) {', '.join(refused)}" if refused else None

    @property
    def paused_reason(self) -> str | None:
        reasons = [(lane.name, lane.gate.paused_reason()) for lane in self._lanes]
        paused = [(name, why) for name, why in reasons if why is not None]
        if not paused:
            return None
        if len(self._lanes) == 1:
            return paused[0][1]
        return "; ".join(f"{name}: {why}" for name, why in paused)

    @property
    def discovery_detail(self) -> str | None:
        if len(self._lanes) == 1:
            return self._lanes[0].gate.discovery_detail()
        return "; ".join(f"{lane.name}: {lane.gate.discovery_detail()}" for lane in self._lanes)


async def run(
    cfg: Config,
    stop: asyncio.Event,
    *,
    drain: bool = False,
    max_seconds: float | None = None,
    reload: Reload | None = None,
) -> int:
    """The daemon, one lane per account. ``reload`` (SIGHUP) re-reads every token."""
    for token in require_tokens(cfg).values():
        logs.register_secret(token)
    await migrate_with_retry(
        cfg.database.direct_dsn, cfg.database.startup_wait_s, apply=cfg.database.migrate_on_start
    )
    async with contextlib.AsyncExitStack() as resources:
        pool = await db.open_pool(cfg.database)
        resources.push_async_callback(_close_pool, pool)
        metrics = Metrics(accounts=cfg.account_names)
        lanes = build_lanes(cfg, pool, metrics)
        for lane in lanes:
            resources.push_async_callback(lane.client.close)
        if cfg.server.enabled:
            handle = await _start_server(cfg, metrics, Liveness(lanes, pool), lanes, pool)
            resources.push_async_callback(handle.close)
            listening: int | None = handle.port
        else:
            listening = None
        resources.callback(sd_notify.notify, "STOPPING=1")
        sd_notify.notify("READY=1")
        log.info(
            "daemon_started",
            worker_id=cfg.worker.worker_id,
            base_url=cfg.api.base_url,
            speed=cfg.speed,
            discovery=cfg.polling.discovery,
            events=cfg.polling.events,
            listen=listening,
            accounts=list(cfg.account_names),
        )
        with _reported():
            await _run_tasks(cfg, lanes, stop, drain, max_seconds, reload)
    log.info("daemon_stopped", harvested=sum(lane.worker.harvested for lane in lanes))
    return 0


def _sources(lane: Lane) -> list[Source]:
    """What tells a lane's gate which jobs finished, beside direct polls."""
    found: list[Source] = []
    if lane.discovery is not None:
        found.append(lane.discovery)
    if lane.stream is not None:
        found.append(lane.stream)
    return found


async def _run_tasks(
    cfg: Config,
    lanes: Sequence[Lane],
    stop: asyncio.Event,
    drain: bool,
    max_seconds: float | None,
    reload: Reload | None,
) -> None:
    """The workers in front, their side tasks beside them; side tasks end when every worker has."""
    side_stop = asyncio.Event()  # set only once every worker has let go of every job

    def nudge() -> None:
        for lane in lanes:
            lane.gate.nudge()

    async with asyncio.TaskGroup() as group:
        side = [
            group.create_task(wakeup.listen_for_jobs(cfg.database, nudge, side_stop)),
            group.create_task(
                lifetime.keep_running(  # one sweep covers every account's jobs
                    "housekeeping",
                    lanes[0].worker.housekeeping,
                    side_stop,
                    backoff=lifetime.Backoff(1.0, 300.0),
                )
            ),
            group.create_task(watchdog(lambda: min(lane.worker.last_tick for lane in lanes), side_stop)),
            group.create_task(watch_tokens(cfg, lanes, side_stop, reload)),
        ]
        workers = []
        for lane in lanes:
            with structlog.contextvars.bound_contextvars(account=lane.name):
                side.append(
                    group.create_task(
                        lifetime.keep_running(
                            "heartbeat",
                            lane.worker.heartbeat,
                            side_stop,
                            backoff=lifetime.Backoff(1.0, cfg.worker.heartbeat_s),
                        )
                    )
                )
                if not (drain and await _nothing_to_drain(lane)):  # a drain of nothing sends nothing
                    side += [group.create_task(source.run(side_stop)) for source in _sources(lane)]
                workers.append(group.create_task(lane.worker.run(stop, drain=drain)))
        if max_seconds is not None:
            side.append(group.create_task(_stop_after(stop, max_seconds)))
        try:
            await asyncio.wait(workers)  # each drained or stopped; a failing one fails the group
        finally:
            stop.set()
            await asyncio.gather(*workers, return_exceptions=True)  # each lets go of its jobs
            side_stop.set()
            for task in side:  # a side task may be waiting for a slot or on the API: no waiting
                task.cancel()


async def watch_tokens(
    cfg: Config, lanes: Sequence[Lane], stop: asyncio.Event, reload: Reload | None
) -> None:
    """Re-read the tokens on SIGHUP (``reload``) and whenever a token file changes."""
    files = {lane.account.token_file for lane in lanes if lane.account.token_file}
    seen = {path: _stat(path) for path in files}
    while not stop.is_set():
        hup = await _signalled(reload, stop, TOKEN_CHECK_S)
        changed = {path for path in files if _stat(path) != seen[path]}
        if not changed and not hup:
            continue
        seen.update({path: _stat(path) for path in changed})
        rotated = await reread_tokens(lanes)
        log.info("tokens_reread", rotated=rotated, trigger="sighup" if hup else "file")


async def _signalled(reload: Reload | None, stop: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds``; True when a reload was asked for meanwhile."""
    if reload is None:
        await lifetime.wait(stop, seconds)
        return False
    await lifetime.wait(stop, seconds, reload.event)
    return reload.take()


def _stat(path: str) -> tuple[float, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_mtime, info.st_size


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


async def _nothing_to_drain(lane: Lane) -> bool:
    """Whether ``--drain`` finds nothing of this account's pending (then its stream and list
    discovery are not started: they would only spend requests on the way out)."""
    try:
        return not await lane.store.any_pending()
    except DatabaseError:
        return False  # the worker reports the database; the sources start as usual


async def _close_pool(pool: asyncpg.Pool) -> None:
    """Close the pool; a database that went away cannot hold up the exit."""
    try:
        await asyncio.wait_for(pool.close(), POOL_CLOSE_TIMEOUT_S)
    except db.DB_ERRORS:  # TimeoutError is one of them
        pool.terminate()


async def _start_server(
    cfg: Config, metrics: Metrics, liveness: Liveness, lanes: Sequence[Lane], pool: asyncpg.Pool
) -> health.ServerHandle:
    refresh_jobs = health.QueueRefresher(pool, metrics, min_interval_s=10.0, accounts=cfg.account_names)

    async def refresh() -> None:
        """Gauges read at scrape time: the loop's tick, queue counts, each account's list health,
        limiter and pauses."""
        metrics.set_loop_tick(time.time() - max(0.0, time.monotonic() - liveness.last_tick))
        for lane in lanes:
            brakes = lane.gate.brakes
            metrics.set_list_healthy(lane.gate.discovery_healthy, lane.name)
            metrics.set_breaker_open(brakes.breaker.is_open(lane.gate.clock()), lane.name)
            metrics.set_auth_paused(brakes.auth_failed, lane.name)
            with contextlib.suppress(DatabaseError):
                state = await lane.limiter.state()
                metrics.set_limiter(state.tokens, state.paused, lane.name)
        await refresh_jobs()

    # A loop iteration ends at least every idle_poll_s; allow for a slow store on top.
    stale_after = max(15.0, cfg.worker.idle_poll_s * 3)

    async def accounts() -> dict[str, int]:
        return admin.unknown_accounts(await admin.pending_by_account(pool), cfg.account_names)

    return await health.start_server(
        cfg.server.listen, metrics, liveness, stale_after_s=stale_after, refresh=refresh, accounts=accounts
    )
