"""Completion discovery: learn which jobs finished from ``/jobs/list`` pages, not per-job polls.

One page sorted by ``updated_at`` descending tells the status of up to 100 jobs. A pass reads pages
back to the shared watermark (minus an overlap), marks our pending jobs that the list shows finished
as due at once (so their results are fetched exactly once) and defers direct polls of jobs it shows
still running. Jobs the list never shows keep their direct-poll schedule, so nothing is stranded;
after repeated list failures the gate hears that discovery is unhealthy and the worker falls back
to plain polling until a pass succeeds again. Only one process per account reads the list at a
time (a lease on the account's discovery row).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from harvester import lifetime, logs
from harvester.api import outcomes
from harvester.config import DEFAULT_ACCOUNT, Config
from harvester.ports import Adopter, DiscoveryLease, DiscoveryStore, Listed
from harvester.scheduling import policy
from harvester.scheduling.gate import Gate

log = logs.get("harvester.discovery.listing")
PAGE_SIZE = 100
UNHEALTHY_AFTER = 3
BACKFILL_PRIORITY = -1  # adopted old jobs wait behind every live job
QUEUED_SCAN_MIN = 5  # queued defers running out before a pass lists SpiderIQ's queue again...
QUEUED_SCAN_AHEAD = 0.2  # ...within this share of the queued defer, at most once that often
# A scan reads the whole queue, past list_max_pages: each page renews 100 defers that would each
# cost a direct poll answered 202 (a CSV of 5,000 sites is 50 pages every 12 minutes, where the
# polls would be 5,000). The cap only bounds one pass's time.
QUEUED_SCAN_MAX_PAGES = 200
RATE_WEIGHT = 0.3  # of the newest pass in the learned completion rate


class ListClient(Protocol):
    async def list_jobs(
        self,
        *,
        page: int,
        page_size: int = 100,
        sort_by: str = "updated_at",
        sort_order: str = "desc",
        status_filter: str | None = None,
    ) -> outcomes.JobPage | outcomes.Outcome: ...


class LeaseLost(Exception):
    """Another process took this pass's lease over (this one stalled past it): stop reading."""


@dataclass(frozen=True, slots=True)
class PassResult:
    pages: int
    finished: int
    running: int
    ok: bool


class Discovery:
    def __init__(
        self,
        cfg: Config,
        store: DiscoveryStore,
        client: ListClient,
        gate: Gate,
        account: str = DEFAULT_ACCOUNT,
        *,
        adopter: Adopter | None = None,
        adopt_since: datetime | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.client = client
        self.gate = gate
        self.key = account  # the account's discovery row: its watermark and lease
        self.clock = clock
        self.failures = 0
        self.passes = 0
        self._ensured = False
        self._queued_scanned_at = float("-inf")
        self._reveal_rate: float | None = None  # our jobs seen finished per second, learned
        self._last_pass_at: float | None = None
        self._renew_at = float("inf")  # when the lease of the pass being read is renewed
        # Adopt mode: every job a page shows that the queue lacks is queued; a backfill reads the
        # account's jobs back to adopt_since, one page per pass, at a priority below live jobs.
        self.adopter = adopter
        self.adopt_since = adopt_since
        self.backfill_page: int | None = 1 if adopter is not None and adopt_since is not None else None
        self.adopted = 0
        # Jobs created before this process started are backlog, whichever page shows them first:
        # they wait behind the live ones.
        self.live_since = datetime.now(UTC)

    @property
    def healthy(self) -> bool:
        return self.failures < UNHEALTHY_AFTER

    async def run(self, stop: asyncio.Event) -> None:
        """Passes whenever one is due, until stopped; database errors back off (``keep_running``)."""
        backoff = lifetime.Backoff(0.5, self.cfg.polling.max_interval_s)
        await lifetime.keep_running("discovery", self.step, stop, backoff=backoff)

    async def step(self) -> float:
        """One look: run a pass if one is due; returns the pause before the next look."""
        if not self._ensured:
            await self.store.ensure_discovery(self.key)
            self._ensured = True
        if not self.gate.side_requests_paused():
            await self.maybe_pass()
        return self.cfg.polling.list_tick_s

    async def maybe_pass(self) -> PassResult | None:
        state = await self.store.discovery_state(self.key)
        self.gate.stream_up = state.stream_up
        if not state.needed and self.adopter is None:
            if state.stream_up and state.reconcile_pending:
                await self.store.note_nothing_to_reconcile(self.key)
            return None
        cfg = self.cfg.polling
        usage = await self.gate.limiter.usage()
        paced = policy.list_pass_interval(usage.in_window, usage.limit, usage.window_s, cfg)
        if not state.stream_up:
            paced = max(
                paced, policy.list_info_interval(self._reveal_rate, state.waiting, cfg, state.youngest_s)
            )
        interval = policy.list_retry_interval(paced, self.failures, cfg)
        # While the event stream is up the list only reconciles what it may have lost: after every
        # (re)connect (the stream asks for that pass) and every list_reconcile_s.
        reconcile = policy.list_retry_interval(cfg.list_reconcile_s, self.failures, cfg)
        if self.backfill_page is not None:  # an adopt backfill pages on at the list's own pace
            reconcile = interval
        owner = self.cfg.worker.worker_id
        lease = await self.store.claim_discovery(
            self.key, owner, interval, reconcile, self.cfg.worker.lease_s
        )
        if lease is None:
            return None
        self._renew_at = self.clock() + self.cfg.worker.lease_s / 3
        result = PassResult(0, 0, 0, False)
        newest: datetime | None = None
        try:
            result, newest = await self._read_pages(lease)
            if result.ok and lease.gap_since is None and await self._queued_scan_due():
                result = await self._scan_queued(result)
            if result.ok and self.backfill_page is not None:
                result = await self._backfill(result)
        except LeaseLost:
            log.warning("discovery_lease_lost", detail="a pass outlasted its lease; another process reads on")
            return None
        finally:
            self._renew_at = float("inf")
            await self.store.finish_discovery(
                self.key, owner, newest, result.pages, result.finished, full=lease.gap_since is None
            )
        await self._record(result)
        if result.ok and lease.gap_since is None:
            self._learn_rate(result.finished)
        if result.finished:
            self.gate.nudge()
        log.debug(
            "discovery_pass",
            pages=result.pages,
            finished=result.finished,
            running=result.running,
            ok=result.ok,
        )
        return result

    def _learn_rate(self, finished: int) -> None:
        """The completion rate the pages reveal (an average over the last passes)."""
        now = self.clock()
        if self._last_pass_at is not None and now > self._last_pass_at:
            rate = finished / (now - self._last_pass_at)
            last = self._reveal_rate
            self._reveal_rate = rate if last is None else last + RATE_WEIGHT * (rate - last)
        self._last_pass_at = now

    async def _record(self, result: PassResult) -> None:
        if not result.ok and self.failures + 1 == UNHEALTHY_AFTER:
            log.warning(
                "discovery_unhealthy",
                failures=UNHEALTHY_AFTER,
                detail="list pages keep failing; direct polls carry every job meanwhile",
            )
            if not self.gate.stream_up:  # nothing announces the starts now: poll the queued ones
                await self._spread_queued_defers()
        elif result.ok and not self.healthy:
            log.info("discovery_restored")
        self.failures = 0 if result.ok else self.failures + 1
        self.passes += 1
        self.gate.discovery_healthy = self.healthy

    async def _queued_scan_due(self) -> bool:
        """A job waiting in SpiderIQ's queue does not change, so its ``updated_at`` stays old and
        the newest-first pages stop showing it: the queued defer it got is then all that keeps it
        from direct polls that would answer 202. When enough of those defers run out soon, one
        pass lists the queued jobs (``status_filter=queued``) and renews them: a page of 100 for
        what would otherwise be 100 polls."""
        ahead = QUEUED_SCAN_AHEAD * policy.queued_defer(self.cfg.polling)
        if self.clock() - self._queued_scanned_at < ahead:
            return False
        return await self.store.queued_expiring(self.key, ahead) >= QUEUED_SCAN_MIN

    async def _scan_queued(self, result: PassResult) -> PassResult:
        """Pages of ``status_filter=queued``: each job on them gets the queued defer again."""
        self._queued_scanned_at = self.clock()
        pages, running = result.pages, result.running
        defer = policy.queued_defer(self.cfg.polling)
        for page_no in range(1, QUEUED_SCAN_MAX_PAGES + 1):
            page = await self._list(page_no, sort_by="updated_at", status_filter="queued")
            if not isinstance(page, outcomes.JobPage):
                break
            pages += 1
            queued = [
                Listed(job.job_id, "queued", job.job_type, defer)
                for job in page.jobs
                if (job.status or "queued").lower() == "queued"
            ]
            running += len(await self.store.defer_running(queued))
            if page_no >= page.total_pages or len(page.jobs) < PAGE_SIZE:
                break
        return PassResult(pages, result.finished, running, result.ok)

    async def _list(
        self, page_no: int, *, sort_by: str, status_filter: str | None = None
    ) -> outcomes.JobPage | outcomes.Outcome:
        """One list page, newest first: a request slot, the request, and the gate hears the answer."""
        await self._keep_lease()
        started = self.clock()
        await self.gate.limiter.acquire()
        waited = self.clock() - started
        await self._keep_lease()  # the slot may have been a pause away
        sent_with = self.gate.rotations
        page = await self.client.list_jobs(
            page=page_no,
            page_size=PAGE_SIZE,
            sort_by=sort_by,
            sort_order="desc",
            status_filter=status_filter,
        )
        await self.gate.observe("list", page, waited, sent_with)
        return page

    async def _keep_lease(self) -> None:
        """Renew the pass's lease once a third of it has gone (a queue scan may read 200 pages,
        minutes at the limit); ``LeaseLost`` when another process has taken it over."""
        now = self.clock()
        if now < self._renew_at:
            return
        lease_s = self.cfg.worker.lease_s
        self._renew_at = now + lease_s / 3
        if not await self.store.renew_discovery(self.key, self.cfg.worker.worker_id, lease_s):
            raise LeaseLost

    async def _read_pages(self, lease: DiscoveryLease) -> tuple[PassResult, datetime | None]:
        cfg = self.cfg.polling
        reference = lease.gap_since or lease.watermark or lease.oldest_pending
        stop_at = policy.list_stop_at(None if reference is None else reference.timestamp(), cfg)
        seen = lease.gap_since or lease.watermark  # read back from by an earlier pass
        seen_up_to = None if seen is None else seen.timestamp()
        pages = finished = running = 0
        newest: datetime | None = None
        page_no = 1
        while True:
            page = await self._list(page_no, sort_by="updated_at")
            if not isinstance(page, outcomes.JobPage):
                return PassResult(pages, finished, running, False), newest
            pages += 1
            stamps = [j.updated_at for j in page.jobs if j.updated_at is not None]
            if stamps and (newest is None or max(stamps) > newest):
                newest = max(stamps)
            done_count, running_count = await self._apply(page)
            finished += done_count
            running += running_count
            oldest = min(stamps).timestamp() if stamps else None
            if not policy.list_should_continue(page_no, page.total_pages, oldest, stop_at, cfg, seen_up_to):
                if policy.list_cut_short(page_no, page.total_pages, oldest, stop_at, cfg, seen_up_to):
                    await self._cut_short(page_no)
                return PassResult(pages, finished, running, True), newest
            page_no += 1

    async def _cut_short(self, pages: int) -> None:
        """More changed than ``list_max_pages`` pages hold: the starts on the pages left unread are
        seen by no pass, so without the stream the queued defers must not be trusted."""
        log.warning("discovery_pass_cut_short", pages=pages, detail="raise polling.list_max_pages")
        if not self.gate.stream_up:
            await self._spread_queued_defers()

    async def _spread_queued_defers(self) -> None:
        """Direct polls for the jobs known queued, spread over the next ``max_interval_s``."""
        spread = self.cfg.polling.max_interval_s
        moved = await self.store.spread_queued_defers(self.key, spread)
        if moved:
            log.info("queued_defers_spread", jobs=moved, within_s=round(spread, 1))

    async def _backfill(self, result: PassResult) -> PassResult:
        """One page of the adopt backfill: the account's jobs by ``created_at``, newest first.

        New jobs push older ones to later pages, never earlier, so a page read twice costs a
        request but skips nothing. Done at the first page reaching back past ``adopt_since``."""
        assert self.backfill_page is not None and self.adopter is not None
        page_no = self.backfill_page
        page = await self._list(page_no, sort_by="created_at")
        if not isinstance(page, outcomes.JobPage):
            return result
        done, running = await self._apply(page, backfill=True)
        created = [j.created_at for j in page.jobs if j.created_at is not None]
        reached = bool(created) and self.adopt_since is not None and min(created) < self.adopt_since
        if reached or page_no >= page.total_pages or len(page.jobs) < PAGE_SIZE:
            log.info("adopt_backfill_done", pages=page_no, adopted=self.adopted)
            self.backfill_page = None
        else:
            self.backfill_page = page_no + 1
        return PassResult(result.pages + 1, result.finished + done, result.running + running, True)

    async def _adopt(self, page: outcomes.JobPage, backfill: bool) -> None:
        """Queue the page's jobs of this account (created since ``adopt_since``) that we lack:
        those created since this process started at priority 0, older ones below every live job."""
        if self.adopter is None:
            return
        since = self.adopt_since
        wanted = [j for j in page.jobs if since is None or j.created_at is None or j.created_at >= since]
        live = [j for j in wanted if j.created_at is None or j.created_at >= self.live_since]
        old = [j for j in wanted if j not in live]
        for jobs, priority in ((live, 0), (old, BACKFILL_PRIORITY)):
            added = await self.adopter.adopt(
                [Listed(j.job_id, (j.status or "").lower() or None, j.job_type) for j in jobs], priority
            )
            if added:
                self.adopted += len(added)
                log.info("jobs_adopted", count=len(added), backfill=backfill, priority=priority)

    def _running_defer(self, job_type: str | None) -> float:
        """A job a page shows running: with the stream up its end is announced, and it is polled
        when that end is overdue (as if the stream had shown the start now, the latest it can
        have been); without it, when the pages have had long enough to show its end."""
        if self.gate.stream_up:
            return policy.started_defer(job_type, self.cfg.polling, self.gate.durations, self.gate.clock())
        return policy.running_defer(job_type, self.cfg.polling, self.gate.durations.get(job_type))

    async def _apply(self, page: outcomes.JobPage, *, backfill: bool = False) -> tuple[int, int]:
        await self._adopt(page, backfill)
        done: list[Listed] = []
        running: list[Listed] = []
        defers: dict[str | None, float] = {}  # per type, once a page
        durations, now = self.gate.durations, self.gate.clock()
        for job in page.jobs:
            status = (job.status or "").lower()
            if status in outcomes.TERMINAL_UPSTREAM:
                durations.ended(job.job_id)
                done.append(Listed(job.job_id, status, job.job_type))
            elif status == "queued":  # its start is announced, or shows on the next pages
                running.append(
                    Listed(job.job_id, status, job.job_type, policy.queued_defer(self.cfg.polling))
                )
            else:
                durations.seen_running(job.job_id, job.job_type, now)
                if job.job_type not in defers:
                    defers[job.job_type] = self._running_defer(job.job_type)
                running.append(Listed(job.job_id, status or None, job.job_type, defers[job.job_type]))
        marked = await self.store.mark_finished(done)
        # With the stream up, a job it showed started keeps the due time its start gave (its end
        # is overdue then); a page showing it running again must not push that back.
        await self.store.defer_running(running, keep_started=self.gate.stream_up)
        return len(marked), len(running)
