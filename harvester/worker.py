"""The harvest loop: claim due jobs, spend one rate-limited request on each, apply the decision.

It only sequences I/O between the queue, the limiter, the API client, the policy and the store;
every rule lives in ``policy``. An unexpected error is contained to its job, which is released with
a fault backoff. On stop it claims nothing more, lets in-flight jobs finish within the grace
period, then releases whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import asyncpg

from harvester import logs, outcomes, policy, queue, store
from harvester.client import SpiderIQ
from harvester.config import Config
from harvester.errors import DatabaseError
from harvester.queue import ClaimedJob

if TYPE_CHECKING:
    from harvester.discovery import Discovery

log = logs.get("harvester.worker")


def _latency(completed_at: datetime | None) -> float | None:
    """Seconds from the API's completion time to now, when the clocks make that meaningful."""
    if completed_at is None or completed_at.tzinfo is None:
        return None
    latency = time.time() - completed_at.timestamp()
    return latency if 0 <= latency < 86400 else None


class Limiter(Protocol):
    async def acquire(self) -> None: ...
    async def pause(self, *, retry_after_s: float | None, reset_at: float | None, reason: str) -> float: ...
    async def available_slots(self, horizon_s: float) -> int: ...


class Observer(Protocol):
    """Where the loop reports what happened (metrics); every method must be cheap and never raise."""

    def request_done(self, endpoint: str, status: int | str, wait_s: float) -> None: ...
    def job_finished(self, state: str, polls: int, latency_s: float | None) -> None: ...
    def store_done(self, seconds: float) -> None: ...
    def error(self, kind: str) -> None: ...


class NullObserver:
    def request_done(self, endpoint: str, status: int | str, wait_s: float) -> None:
        pass

    def job_finished(self, state: str, polls: int, latency_s: float | None) -> None:
        pass

    def store_done(self, seconds: float) -> None:
        pass

    def error(self, kind: str) -> None:
        pass


class Worker:
    def __init__(
        self, cfg: Config, pool: asyncpg.Pool, client: SpiderIQ, limiter: Limiter, *,
        observer: Observer | None = None, rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.pool = pool
        self.client = client
        self.limiter = limiter
        self.observer: Observer = observer or NullObserver()
        self.rng = rng or random.Random()
        self.clock = clock
        self.owner = cfg.worker.worker_id
        self.in_flight: dict[UUID, ClaimedJob] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.breaker = policy.Breaker()
        self.auth_failed = False
        self.auth_paused_until = 0.0
        self.rate_paused_until = 0.0  # clock() time a 429 seen here pauses the limiter until
        self.last_tick = clock()
        self.harvested = 0
        self.durations = policy.DurationModel()
        self.discovery: Discovery | None = None
        self._wake = asyncio.Event()
        self._slot_freed = asyncio.Event()

    # ------------------------------------------------------------ health
    @property
    def auth_ok(self) -> bool:
        return not self.auth_failed

    @property
    def paused_reason(self) -> str | None:
        now = self.clock()
        if self.auth_failed:
            return "credential refused"
        if self.breaker.is_open(now):
            return "circuit breaker open"
        if now < self.rate_paused_until:
            return f"rate limited (429): paused for {self.rate_paused_until - now:.0f} s more"
        return None

    def wake(self) -> None:
        """Called when new jobs were inserted (LISTEN/NOTIFY)."""
        self._wake.set()

    # ------------------------------------------------------------ loop
    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> None:
        try:
            await self._claim_loop(stop, drain)
        finally:
            await self._shutdown()

    async def _claim_loop(self, stop: asyncio.Event, drain: bool) -> None:
        cfg = self.cfg
        db_backoff = 0.5
        while not stop.is_set():
            self.last_tick = self.clock()
            limit = self._claim_budget()
            if limit <= 0:  # wake at least every idle_poll_s so the loop stays visibly alive
                pause = min(self._hold_back() or 0.5, cfg.worker.idle_poll_s)
                await self._wait(stop, pause, self._slot_freed)
                continue
            try:
                horizon = cfg.worker.lease_s / 3
                limit = min(limit, max(1, await self.limiter.available_slots(horizon)))
                jobs = await queue.claim(self.pool, self.owner, limit, cfg.worker.lease_s)
            except DatabaseError as exc:
                self.observer.error("database")
                log.warning("db_unavailable", error=str(exc), retry_in_s=db_backoff)
                await self._wait(stop, db_backoff)
                db_backoff = min(5.0, db_backoff * 2)
                continue
            db_backoff = 0.5
            for job in jobs:
                self.in_flight[job.job_id] = job
                task = asyncio.create_task(self._handle(job, stop), name=f"job-{job.job_id}")
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
            if jobs:
                continue
            try:
                if drain and not self.in_flight and not await queue.any_pending(self.pool):
                    log.info("queue_drained", harvested=self.harvested)
                    return
                due_in = await queue.next_due_in(self.pool)
            except DatabaseError as exc:
                log.warning("db_unavailable", error=str(exc))
                due_in = None
            timeout = cfg.worker.idle_poll_s if due_in is None else due_in
            await self._wait(stop, min(max(timeout, 0.02), cfg.worker.idle_poll_s), self._wake)

    def _claim_budget(self) -> int:
        """How many jobs may be claimed now: free in-flight slots, one probe while paused."""
        now = self.clock()
        free = self.cfg.rate_limit.max_in_flight - len(self.in_flight)
        if self.auth_failed:
            if now < self.auth_paused_until or self.in_flight:
                return 0
            return 1  # one slow re-check of the credential
        if self.breaker.is_open(now):
            return 0
        if self.breaker.failures >= self.cfg.polling.breaker_threshold:
            return 0 if self.in_flight else 1  # half-open: one probe
        return free

    async def _wait(self, stop: asyncio.Event, seconds: float, *events: asyncio.Event) -> None:
        waiters = [asyncio.ensure_future(e.wait()) for e in (stop, *events)]
        try:
            await asyncio.wait(waiters, timeout=max(0.0, seconds), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            for event in events:
                event.clear()

    # ------------------------------------------------------------ one job
    async def _handle(self, job: ClaimedJob, stop: asyncio.Event) -> None:
        structlog_ctx = {"job_id": str(job.job_id)}
        view = policy.JobView(job.job_type, job.polls, job.not_found_count, job.fault_count, job.age_s,
                              job.upstream_status)
        try:
            hold = policy.first_poll_wait(view, self.cfg.polling, self._poll_factor())
            if hold > 0:
                await queue.reschedule(
                    self.pool, job, delay_s=hold, polls_spent=0, http_status=None,
                    upstream_status=None, job_type=None, not_found_count=job.not_found_count,
                    fault_count=job.fault_count, error=None,
                )
                return
            started = self.clock()
            if not stop.is_set():
                await self.limiter.acquire()
            if stop.is_set():  # shutting down: hand the job back without spending a request
                await queue.release(self.pool, self.owner, [job.job_id], 0.0)
                return
            held = self._hold_back()
            if held is not None:  # a pause began while this job waited for its slot
                await queue.release(self.pool, self.owner, [job.job_id], held)
                return
            waited = self.clock() - started
            outcome = await self.client.fetch_result(job.job_id)
            await self.observe("results", outcome, waited)
            await self._apply(job, view, outcome, stop)
        except asyncio.CancelledError:
            raise
        except DatabaseError as exc:  # the database went away (limiter, queue): not a bug
            self.observer.error("database")
            log.warning("db_unavailable", **structlog_ctx, error=str(exc))
            await self._release_after_fault(job)
        except Exception as exc:  # contained to this job
            self.observer.error("unexpected")
            log.error("job_error", **structlog_ctx, error=logs.scrub(repr(exc)), exc_info=True)
            await self._release_after_fault(job)
        finally:
            self.in_flight.pop(job.job_id, None)
            self._slot_freed.set()

    async def _release_after_fault(self, job: ClaimedJob) -> None:
        """Hand the job back with a fault backoff; if even that fails, its lease runs out."""
        with contextlib.suppress(Exception):
            await queue.release(self.pool, self.owner, [job.job_id],
                                policy.fault_delay(job.fault_count + 1, self.cfg.polling, self.rng))

    def _hold_back(self) -> float | None:
        """Seconds a claimed job must wait instead of being sent now, None to send it.

        Jobs claimed before a refused credential or an opened breaker still queue for a limiter
        slot; sending them once the pause is known would spend requests the pause exists to save.
        The one probe that tests the pause is claimed only after it ends, so it is never held.
        """
        now = self.clock()
        if self.auth_failed and now < self.auth_paused_until:
            return self.auth_paused_until - now
        if self.breaker.is_open(now):
            return self.breaker.open_until - now
        return None

    async def observe(self, endpoint: str, outcome: Any, waited_s: float) -> None:
        """Process-wide consequences of any response: metrics, 429 pause, credential, breaker."""
        status = getattr(outcome, "http_status", None)
        self.observer.request_done(endpoint, status if status is not None else "error", waited_s)
        cfg = self.cfg.polling
        now = self.clock()
        if isinstance(outcome, outcomes.RateLimited):
            pause = await self.limiter.pause(
                retry_after_s=outcome.retry_after_s, reset_at=outcome.reset_at,
                reason=outcome.detail,
            )
            self.rate_paused_until = max(self.rate_paused_until, now + pause)
            self.observer.error("rate_limited")
            log.warning("api_rate_limited", endpoint=endpoint, pause_s=round(pause, 3))
        elif isinstance(outcome, outcomes.AuthFailed):
            self.auth_failed = True
            self.auth_paused_until = now + cfg.auth_recheck_s
            self.observer.error("auth")
            log.error("api_auth_failed", endpoint=endpoint, http_status=status,
                      detail=logs.scrub(outcome.detail), recheck_in_s=cfg.auth_recheck_s)
        elif isinstance(outcome, outcomes.Transient):
            was_open = self.breaker.is_open(now)
            self.breaker = self.breaker.record_failure(now, cfg)
            self.observer.error("transient")
            if self.breaker.is_open(now) and not was_open:
                log.warning("breaker_opened", failures=self.breaker.failures,
                            pause_s=cfg.breaker_pause_s, reason=outcome.reason)
        else:
            self.breaker = self.breaker.record_success()
            if self.auth_failed:
                self.auth_failed = False
                log.info("api_auth_restored")

    def paused(self) -> bool:
        """Whether side requests (list pages) must hold off.

        While the credential is refused, the worker's one probe per ``auth_recheck_s`` is the
        only request allowed: a list page sent beside it would be a second probe.
        """
        if self.auth_failed:
            return self.clock() < self.auth_paused_until or bool(self.in_flight)
        return self._claim_budget() == 0 and not self.in_flight

    def report(self, endpoint: str, outcome: Any, waited_s: float) -> None:
        task = asyncio.create_task(self.observe(endpoint, outcome, waited_s))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    def _poll_factor(self) -> float:
        healthy = self.discovery is not None and self.discovery.healthy
        return self.cfg.polling.list_poll_factor if healthy else 1.0

    async def _apply(self, job: ClaimedJob, view: policy.JobView, outcome: Any,
                     stop: asyncio.Event) -> None:
        cfg = self.cfg.polling
        status = outcome.http_status
        if isinstance(outcome, outcomes.Completed):
            await self._store(job, stop, lambda: store.store_result(
                self.pool, outcome.body, outcome.doc, expected_job_id=job.job_id,
                fence=store.Fence(job.job_id, job.lease_token), http_status=status or 200,
            ))
        elif isinstance(outcome, outcomes.Gone):
            await self._store(job, stop, lambda: store.store_failure(
                self.pool, outcome.body, outcome.doc, job_id=job.job_id,
                fence=store.Fence(job.job_id, job.lease_token), http_status=status or 410,
            ))
        elif isinstance(outcome, outcomes.Pending):
            job_type = outcome.job_type or job.job_type
            decision = policy.on_pending(view, cfg, self.rng, self.durations.get(job_type),
                                         self._poll_factor())
            await self._decide(job, decision, status, outcome.upstream_status, outcome.job_type)
        elif isinstance(outcome, outcomes.NotFound):
            await self._decide(job, policy.on_not_found(view, cfg, self.rng), status, None, None)
        elif isinstance(outcome, outcomes.AuthFailed):
            await self._keep(job, cfg.auth_recheck_s, status, f"{status}: {outcome.detail}")
        elif isinstance(outcome, outcomes.RateLimited):
            await self._keep(job, max(self.cfg.polling.min_interval_s, self._limiter_pause(outcome)),
                             status, "429: rate limited")
        elif isinstance(outcome, outcomes.Transient):
            await self._decide(job, policy.on_fault(view, outcome.reason, cfg, self.rng),
                               status, None, None)
        else:  # pragma: no cover - the api module returns only the kinds above
            raise TypeError(f"unknown outcome {type(outcome).__name__}")

    def _limiter_pause(self, outcome: Any) -> float:
        return policy.rate_limit_pause(outcome.retry_after_s, outcome.reset_at, time.time(),
                                       self.cfg.rate_limit.default_pause_s)

    async def _keep(self, job: ClaimedJob, delay: float, status: int | None, error: str) -> None:
        """Count the request but leave the job exactly as it was otherwise (pauses)."""
        await queue.reschedule(
            self.pool, job, delay_s=delay, polls_spent=1, http_status=status, upstream_status=None,
            job_type=None, not_found_count=job.not_found_count, fault_count=job.fault_count,
            error=error,
        )

    async def _decide(
        self, job: ClaimedJob, decision: policy.Decision, status: int | None,
        upstream_status: str | None, job_type: str | None,
    ) -> None:
        if decision.state is None:
            await queue.reschedule(
                self.pool, job, delay_s=decision.delay_s, polls_spent=1, http_status=status,
                upstream_status=upstream_status, job_type=job_type,
                not_found_count=decision.not_found_count, fault_count=decision.fault_count,
                error=decision.error,
            )
            log.debug("job_polled", job_id=str(job.job_id), http_status=status, polls=job.polls + 1,
                      next_poll_in_s=round(decision.delay_s, 2))
            return
        if await queue.finish(
            self.pool, job, state=decision.state, polls_spent=1, http_status=status,
            not_found_count=decision.not_found_count, fault_count=decision.fault_count,
            error=decision.error,
        ):
            self.observer.job_finished(decision.state, job.polls + 1, None)
            log.info(f"job_{decision.state}", job_id=str(job.job_id), http_status=status,
                     polls=job.polls + 1, error=decision.error)

    async def _store(self, job: ClaimedJob, stop: asyncio.Event,
                     attempt: Callable[[], Any]) -> None:
        """Store a fetched body; keep retrying while the database is away (the body is paid for)."""
        backoff = 0.25
        give_up_at: float | None = None
        while True:
            started = self.clock()
            try:
                outcome: store.StoreOutcome = await attempt()
                break
            except DatabaseError as exc:
                self.observer.error("database")
                now = self.clock()
                if stop.is_set():
                    give_up_at = give_up_at or now + self.cfg.worker.shutdown_grace_s / 2
                    if now >= give_up_at:
                        log.error("store_abandoned", job_id=str(job.job_id), error=str(exc))
                        return
                log.warning("db_unavailable", job_id=str(job.job_id), error=str(exc),
                            retry_in_s=backoff)
                await asyncio.sleep(backoff)
                backoff = min(2.0, backoff * 2)
                with contextlib.suppress(DatabaseError):
                    await queue.extend_leases(self.pool, self.owner, [job.job_id],
                                              self.cfg.worker.lease_s)
        self.observer.store_done(self.clock() - started)
        if outcome.kind == "fenced":
            log.warning("job_lease_lost", job_id=str(job.job_id))
            return
        if outcome.kind == "harvested":
            self.harvested += 1
        if outcome.processing_s is not None:  # API seconds; the schedule runs in scaled seconds
            self.durations.observe(outcome.job_type, outcome.processing_s / self.cfg.speed)
        self.observer.job_finished(outcome.kind, job.polls + 1, _latency(outcome.completed_at))
        log.info(f"job_{outcome.kind}", job_id=str(job.job_id), polls=job.polls + 1,
                 reason=outcome.reason)

    # ------------------------------------------------------------ side duties
    async def heartbeat(self, done: asyncio.Event) -> None:
        while not done.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=self.cfg.worker.heartbeat_s)
            if self.in_flight:
                try:
                    await queue.extend_leases(self.pool, self.owner, list(self.in_flight),
                                              self.cfg.worker.lease_s)
                except DatabaseError as exc:
                    log.warning("heartbeat_failed", error=str(exc))

    async def housekeeping(self, done: asyncio.Event) -> None:
        interval = min(60.0 / self.cfg.speed, self.cfg.polling.give_up_after_s / 10)
        while not done.is_set():
            try:
                expired = await queue.expire(self.pool, self.cfg.polling.give_up_after_s)
                if expired:
                    log.info("jobs_expired", count=expired)
            except DatabaseError as exc:
                log.warning("housekeeping_failed", error=str(exc))
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(done.wait(), timeout=interval)

    async def _shutdown(self) -> None:
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=self.cfg.worker.shutdown_grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=5)
        leftover = list(self.in_flight)
        if leftover:
            try:
                await queue.release(self.pool, self.owner, leftover, 0.0)
                log.info("jobs_released", count=len(leftover))
            except DatabaseError as exc:
                log.warning("release_failed", error=str(exc), count=len(leftover))
