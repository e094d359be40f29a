"""The operations HTTP server: ``/metrics``, ``/healthz`` and ``/readyz`` on ``[server] listen``.

It reads the daemon only through the ``HealthSource`` seam (the loop's last tick, whether the
credential is accepted, why polling is paused, whether the database answers) and the ``Metrics``
registry, so it can be served from a fake in tests. ``/healthz`` is liveness: the loop ticked
recently. ``/readyz`` is readiness: database reachable, credential accepted and polling not paused,
with a JSON body naming each check. Before each scrape an optional ``refresh`` coroutine updates the
gauges that mirror the database; a failing refresh never fails the scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

from harvester import logs
from harvester.daemon.metrics import Metrics
from harvester.db import DB_OR_SQL_ERRORS, Pool, admin, session
from harvester.errors import HarvesterError

log = logs.get("harvester.daemon.health")

DEFAULT_STALE_AFTER_S = 15.0  # 3x the default worker.idle_poll_s
DB_CHECK_TIMEOUT_S = 2.0
REFRESH_TIMEOUT_S = 5.0
# What a check or a refresh may fail with; anything else is a bug and should surface.
FAILURES: tuple[type[BaseException], ...] = (*DB_OR_SQL_ERRORS, TimeoutError, HarvesterError)

Refresh = Callable[[], Awaitable[None]]
# Pending jobs per account that no configuration of this process names: {account: jobs}.
UnknownAccounts = Callable[[], Awaitable[dict[str, int]]]


class LoopState(Protocol):
    """What the running daemon exposes about its loop (``harvester.daemon.liveness.Liveness``
    fits)."""

    @property
    def last_tick(self) -> float: ...  # time.monotonic() of the loop's last iteration
    @property
    def auth_ok(self) -> bool: ...
    @property
    def paused_reason(self) -> str | None: ...
    @property
    def discovery_detail(self) -> str | None: ...  # how finished jobs are found (never a failure)


class HealthSource(LoopState, Protocol):
    """Everything the health endpoints read."""

    async def db_ok(self) -> bool: ...


class PoolHealth:
    """The database check: ``SELECT 1`` through the pool, within a short timeout."""

    def __init__(self, pool: Pool, timeout_s: float = DB_CHECK_TIMEOUT_S) -> None:
        self.pool = pool
        self.timeout_s = timeout_s

    async def db_ok(self) -> bool:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await session.answers(self.pool)
        except FAILURES:
            return False


class QueueRefresher:
    """A ``refresh`` for ``start_server``: jobs per state and the oldest pending age.

    Counting scans the jobs table, so a result is reused for ``min_interval_s``.
    """

    def __init__(
        self,
        pool: Pool,
        metrics: Metrics,
        min_interval_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
        accounts: Sequence[str] | None = None,
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.accounts = accounts  # configured accounts: the others' pending jobs are a gauge
        self.min_interval_s = min_interval_s
        self.clock = clock
        self._last = float("-inf")

    async def __call__(self) -> None:
        now = self.clock()
        if now - self._last < self.min_interval_s:
            return
        status = await admin.status(self.pool, recent=0)
        self.metrics.set_job_counts(status.counts, status.oldest_pending_age_s)
        if self.accounts is not None:
            pending = await admin.pending_by_account(self.pool)
            self.metrics.set_unknown_accounts(admin.unknown_accounts(pending, self.accounts))
        self._last = now


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ok": self.ok}
        if self.detail is not None:
            out["detail"] = self.detail
        return out


async def readiness(health: HealthSource, accounts: UnknownAccounts | None = None) -> list[Check]:
    """The readiness checks, in a fixed order: database, credential, polling, discovery (how
    finished jobs are found: the stream, the list; informative, it never fails readiness), then
    (with several accounts in play) which jobs wait for an account this process is not configured
    for; those wait, never polled with another account's token, and do not make the process
    unready."""
    try:
        db = await asyncio.wait_for(health.db_ok(), timeout=DB_CHECK_TIMEOUT_S * 2)
    except FAILURES:
        db = False
    reason = health.paused_reason
    refused = getattr(health, "credential_detail", None) or "credential refused"
    checks = [
        Check("database", db, None if db else "SELECT 1 failed or timed out"),
        Check("credential", health.auth_ok, None if health.auth_ok else refused),
        Check("polling", reason is None, reason),
        *([Check("discovery", True, health.discovery_detail)] if health.discovery_detail else []),
    ]
    if accounts is not None and db:
        try:
            waiting = await asyncio.wait_for(accounts(), timeout=DB_CHECK_TIMEOUT_S)
        except FAILURES:
            waiting = {}
        detail = "; ".join(
            f"{count} pending job(s) wait for unknown account {name!r}" for name, count in waiting.items()
        )
        checks.append(Check("accounts", True, detail or None))
    return checks


@dataclass(frozen=True, slots=True)
class Handlers:
    metrics: Metrics
    health: HealthSource
    stale_after_s: float
    refresh: Refresh | None
    clock: Callable[[], float]
    accounts: UnknownAccounts | None = None

    async def get_metrics(self, _: web.Request) -> web.Response:
        if self.refresh is not None:
            try:
                await asyncio.wait_for(self.refresh(), timeout=REFRESH_TIMEOUT_S)
            except FAILURES as exc:
                self.metrics.error("metrics_refresh")
                log.warning("metrics_refresh_failed", error=type(exc).__name__)
        self.metrics.set_auth_paused(not self.health.auth_ok)
        response = web.Response(body=self.metrics.render())
        # Set the header whole: aiohttp's content_type would drop the version parameter.
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    async def get_healthz(self, _: web.Request) -> web.Response:
        age = max(0.0, self.clock() - self.health.last_tick)
        alive = age <= self.stale_after_s
        body = {"alive": alive, "last_tick_age_s": round(age, 3), "stale_after_s": self.stale_after_s}
        return web.json_response(body, status=200 if alive else 503)

    async def get_readyz(self, _: web.Request) -> web.Response:
        checks = await readiness(self.health, self.accounts)
        ready = all(check.ok for check in checks)
        body = {"ready": ready, "checks": {check.name: check.as_json() for check in checks}}
        return web.json_response(body, status=200 if ready else 503)


class ServerHandle:
    """A running server: the bound port (useful with port 0) and ``close()``."""

    def __init__(self, runner: web.AppRunner, site: web.TCPSite, host: str, port: int) -> None:
        self._runner = runner
        self._site = site
        self.host = host
        self.port = port

    async def close(self) -> None:
        with contextlib.suppress(RuntimeError):  # already closed
            await self._runner.cleanup()


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` (IPv6 as ``[::1]:9187``) → (host, port)."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise HarvesterError(f"server.listen: expected HOST:PORT, got {listen!r}")
    return host.strip("[]"), int(port)


def make_app(
    metrics: Metrics,
    health: HealthSource,
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    refresh: Refresh | None = None,
    clock: Callable[[], float] = time.monotonic,
    accounts: UnknownAccounts | None = None,
) -> web.Application:
    handlers = Handlers(metrics, health, stale_after_s, refresh, clock, accounts)
    app = web.Application()
    app.router.add_get("/metrics", handlers.get_metrics)
    app.router.add_get("/healthz", handlers.get_healthz)
    app.router.add_get("/readyz", handlers.get_readyz)
    return app


async def start_server(
    listen: str,
    metrics: Metrics,
    health: HealthSource,
    *,
    stale_after_s: float = DEFAULT_STALE_AFTER_S,
    refresh: Refresh | None = None,
    clock: Callable[[], float] = time.monotonic,
    accounts: UnknownAccounts | None = None,
) -> ServerHandle:
    """Serve the endpoints on ``listen`` until ``close()``; port 0 picks a free port."""
    host, port = parse_listen(listen)
    app = make_app(
        metrics, health, stale_after_s=stale_after_s, refresh=refresh, clock=clock, accounts=accounts
    )
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise HarvesterError(f"server.listen: cannot listen on {listen}: {exc.strerror}") from exc
    bound = int(runner.addresses[0][1]) if runner.addresses else port
    log.info("server_listening", host=host, port=bound)
    return ServerHandle(runner, site, host, bound)
