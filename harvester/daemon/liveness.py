"""What the outside sees of the running daemon: systemd's watchdog and the health server.

``Liveness`` reads the lanes for the health endpoints (the stalest loop's last tick, each
account's brakes, how finished jobs are found) and the database through the pool. ``watchdog``
sends systemd ``WATCHDOG=1`` from the loops' own liveness. ``serve`` starts the health server with
the gauges that are read at scrape time (the loop's tick, queue counts, each account's list health,
limiter and pauses).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Sequence

from harvester import db, lifetime
from harvester.config import Config
from harvester.daemon import health, sd_notify
from harvester.daemon.lanes import Lane
from harvester.daemon.metrics import Metrics
from harvester.db import admin
from harvester.errors import DatabaseError

QUEUE_REFRESH_S = 10.0  # queue counts scan the jobs table: a scrape reuses them this long


class Liveness(health.PoolHealth):
    """What the health endpoints read: the loops' last ticks, each account's brakes, the database."""

    def __init__(self, lanes: Sequence[Lane], pool: db.Pool) -> None:
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


async def watchdog(last_tick: Callable[[], float], stop: asyncio.Event) -> None:
    """WATCHDOG=1 from the loop's own liveness, at half systemd's interval."""
    interval = sd_notify.watchdog_interval()
    if not interval:
        return
    while not stop.is_set():
        if time.monotonic() - last_tick() < interval:
            sd_notify.notify("WATCHDOG=1")
        await lifetime.wait(stop, interval / 2)


async def serve(
    cfg: Config, metrics: Metrics, liveness: Liveness, lanes: Sequence[Lane], pool: db.Pool
) -> health.ServerHandle:
    """Start the health server on ``server.listen``."""
    refresh_jobs = health.QueueRefresher(
        pool, metrics, min_interval_s=QUEUE_REFRESH_S, accounts=cfg.account_names
    )

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
