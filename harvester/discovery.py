"""Completion discovery: learn which jobs finished from ``/jobs/list`` pages, not per-job polls.

One page sorted by ``updated_at`` descending tells the status of up to 100 jobs. A pass reads pages
back to the shared watermark (minus an overlap), marks our pending jobs that the list shows finished
as due at once (so their results are fetched exactly once) and defers direct polls of jobs it shows
still running. Jobs the list never shows keep their direct-poll schedule, so nothing is stranded;
after repeated list failures the worker falls back to plain polling until a pass succeeds again.
Only one process per credential reads the list at a time (a lease on the discovery row).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import asyncpg

from harvester import logs, policy
from harvester.client import SpiderIQ
from harvester.config import Config
from harvester.db import DB_ERRORS, DB_OR_SQL_ERRORS
from harvester.errors import DatabaseError
from harvester.outcomes import JobPage
from harvester.queries import query

log = logs.get("harvester.discovery")
PAGE_SIZE = 100
UNHEALTHY_AFTER = 3


class Host(Protocol):
    """What discovery needs from the worker it serves."""

    limiter: Any
    durations: policy.DurationModel

    def wake(self) -> None: ...
    def report(self, endpoint: str, outcome: Any, waited_s: float) -> None: ...
    def paused(self) -> bool: ...


def fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class PassResult:
    pages: int
    finished: int
    running: int
    ok: bool


class Discovery:
    def __init__(self, cfg: Config, pool: asyncpg.Pool, client: SpiderIQ, host: Host,
                 token: str, *, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.pool = pool
        self.client = client
        self.host = host
        self.key = fingerprint(token)
        self.clock = clock
        self.failures = 0
        self.passes = 0

    @property
    def healthy(self) -> bool:
        """While the list works, direct polls of unseen jobs are rarer (``list_poll_factor``)."""
        return self.failures < UNHEALTHY_AFTER

    async def run(self, done: asyncio.Event) -> None:
        cfg = self.cfg.polling
        try:
            await self.ensure()
        except DB_ERRORS as exc:
            log.warning("discovery_unavailable", error=str(exc))
        tick = min(cfg.list_interval_s, 1.0 / self.cfg.speed) / 2
        while not done.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=tick)
            if done.is_set() or self.host.paused():
                continue
            try:
                await self.maybe_pass()
            except DatabaseError as exc:
                log.warning("discovery_db_unavailable", error=str(exc))
            except DB_OR_SQL_ERRORS as exc:
                log.warning("discovery_db_unavailable", error=str(exc))

    async def ensure(self) -> None:
        """Create this credential's discovery row (watermark, lease) if it is not there yet."""
        await self.pool.execute(query("ensure_discovery"), self.key)

    async def maybe_pass(self) -> PassResult | None:
        need = await self.pool.fetchval(query("discovery_need"))
        if not need:
            return None
        budget = await self.host.limiter.state()
        interval = policy.list_retry_interval(
            policy.list_pass_interval(budget.in_window, budget.limit, budget.window_s,
                                      self.cfg.polling),
            self.failures, self.cfg.polling)
        owner = self.cfg.worker.worker_id
        row = await self.pool.fetchrow(query("claim_discovery"), self.key, owner, interval,
                                       self.cfg.worker.lease_s)
        if row is None:
            return None
        result = PassResult(0, 0, 0, False)
        newest: datetime | None = None
        try:
            result, newest = await self._read_pages(row["watermark"], row["oldest_pending"])
        finally:
            await self.pool.execute(query("finish_discovery"), self.key, owner, newest,
                                    result.pages, result.finished)
        if not result.ok and self.failures + 1 == UNHEALTHY_AFTER:
            log.warning("discovery_unhealthy", failures=UNHEALTHY_AFTER,
                        detail="list pages keep failing; direct polls carry every job meanwhile")
        elif result.ok and not self.healthy:
            log.info("discovery_restored")
        self.failures = 0 if result.ok else self.failures + 1
        self.passes += 1
        if result.finished:
            self.host.wake()
        log.debug("discovery_pass", pages=result.pages, finished=result.finished,
                  running=result.running, ok=result.ok)
        return result

    async def _read_pages(self, watermark: datetime | None, oldest_pending: datetime | None
                          ) -> tuple[PassResult, datetime | None]:
        cfg = self.cfg.polling
        reference = watermark or oldest_pending
        stop_at = policy.list_stop_at(None if reference is None else reference.timestamp(), cfg,
                                      self.cfg.speed)
        pages = finished = running = 0
        newest: datetime | None = None
        page_no = 1
        while True:
            started = self.clock()
            await self.host.limiter.acquire()
            waited = self.clock() - started
            page = await self.client.list_jobs(page=page_no, page_size=PAGE_SIZE,
                                               sort_by="updated_at", sort_order="desc")
            self.host.report("list", page, waited)
            if not isinstance(page, JobPage):
                return PassResult(pages, finished, running, False), newest
            pages += 1
            stamps = [j.updated_at for j in page.jobs if j.updated_at is not None]
            if stamps and (newest is None or max(stamps) > newest):
                newest = max(stamps)
            done_count, running_count = await self._apply(page)
            finished += done_count
            running += running_count
            oldest = min(stamps).timestamp() if stamps else None
            if not policy.list_should_continue(page_no, page.total_pages, oldest, stop_at, cfg):
                return PassResult(pages, finished, running, True), newest
            page_no += 1

    async def _apply(self, page: JobPage) -> tuple[int, int]:
        done_ids, done_status, done_types = [], [], []
        run_ids, run_status, run_types, run_defer = [], [], [], []
        for job in page.jobs:
            status = (job.status or "").lower()
            if status in policy.TERMINAL_UPSTREAM:
                done_ids.append(job.job_id)
                done_status.append(status)
                done_types.append(job.job_type)
            else:
                run_ids.append(job.job_id)
                run_status.append(status or None)
                run_types.append(job.job_type)
                learned = self.host.durations.get(job.job_type)
                run_defer.append(policy.running_defer(job.job_type, self.cfg.polling, learned))
        marked: list[Any] = []
        try:
            if done_ids:
                marked = await self.pool.fetch(query("mark_jobs_finished"), done_ids,
                                               done_status, done_types)
            if run_ids:
                await self.pool.execute(query("defer_running_jobs"), run_ids, run_status,
                                        run_types, run_defer)
        except DB_ERRORS as exc:
            raise DatabaseError(f"database unavailable: {exc}") from exc
        return len(marked), len(run_ids)
