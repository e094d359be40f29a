"""``harvester run``: builds the parts from config, runs them, and owns their lifetime.

The daemon builds one lane per account (``lanes``: the limiter, the gate with its brakes and
learned durations, the client, the worker, the discovery sources) and hands each what they share
(the pool, the metrics, the in-flight slots); nothing is assigned after construction. Resources
(pool, API clients, health server) live on one ``AsyncExitStack``; side tasks (the wake-up
listener, heartbeats, the expiry sweep, discovery, the watchdog, token watching, the
``--max-seconds`` timer) live in one ``TaskGroup`` and are cancelled once every worker has stopped.
A side task's database error is retried with backoff (``lifetime.keep_running``) and never ends the
daemon; every error that does end it is logged, each of them, before the run fails.

Before anything is built, ``startup`` waits for the database and finds no migration pending (or
applies them when ``database.migrate_on_start``, ``run --migrate``, asks).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Sequence
from typing import Protocol

import structlog

from harvester import db, lifetime, logs
from harvester.config import Config, require_tokens
from harvester.daemon import sd_notify, wakeup
from harvester.daemon.expiry import Expiry
from harvester.daemon.lanes import Lane, build_lanes
from harvester.daemon.liveness import Liveness, serve, watchdog
from harvester.daemon.metrics import Metrics
from harvester.daemon.startup import migrate_with_retry
from harvester.daemon.tokens import Reload, watch_tokens
from harvester.db import session
from harvester.errors import DatabaseError, HarvesterError

# What the commands (run, demo) and the chaos bench use to start the daemon.
__all__ = ["DaemonError", "Reload", "migrate_with_retry", "run"]

log = logs.get("harvester.daemon.run")
POOL_CLOSE_TIMEOUT_S = 1.0


class Source(Protocol):
    """A discovery source (the list, the event stream): runs beside the worker until stopped."""

    async def run(self, stop: asyncio.Event) -> None: ...


class DaemonError(HarvesterError):
    """The daemon ended because of an error; each one was logged."""


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
        resources.push_async_callback(session.close_pool, pool, POOL_CLOSE_TIMEOUT_S)
        metrics = Metrics(accounts=cfg.account_names)
        lanes = build_lanes(cfg, pool, metrics)
        for lane in lanes:
            resources.push_async_callback(lane.client.close)
        if cfg.server.enabled:
            handle = await serve(cfg, metrics, Liveness(lanes, pool), lanes, pool)
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

    # One sweep covers every account's jobs; it stops batching once the first lane stops claiming.
    expiry = Expiry(
        lanes[0].store,
        cfg.polling.give_up_after_s,
        cfg.worker.housekeeping_s,
        stopping=lanes[0].worker.stopping,
    )

    async with asyncio.TaskGroup() as group:
        side = [
            group.create_task(wakeup.listen_for_jobs(cfg.database, nudge, side_stop)),
            group.create_task(
                lifetime.keep_running(
                    "housekeeping",
                    expiry.sweep,
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
