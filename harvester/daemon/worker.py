"""The harvest loop: claim due jobs, spend one rate-limited request on each, apply the decision.

It only sequences I/O between the job store (``ports.JobStore``), the gate (budget and brakes), the
API client and the policy; every rule lives in ``policy`` and ``brakes``. An unexpected error is
contained to its job, which is released with a fault backoff. On stop it claims nothing more, hands
back at once every job still waiting for a request slot, lets requests in flight finish within the
grace period, then releases whatever is left.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Protocol
from uuid import UUID

from harvester import lifetime, logs
from harvester.api import outcomes
from harvester.config import DEFAULT_ACCOUNT, Config
from harvester.errors import DatabaseError
from harvester.ports import ClaimedJob, Finish, JobStore, Reschedule, StoreOutcome
from harvester.scheduling import policy
from harvester.scheduling.gate import Gate
from harvester.scheduling.slots import Slots

log = logs.get("harvester.daemon.worker")

EXPIRE_BATCH = 1000  # jobs per expiry statement (see sql/queries/jobs.sql expire_stale_jobs)
# Expiry statements at once: two keep a two-core server busy through each other's commit; a
# million stale jobs then expire in half a minute (bench/expiry.py).
EXPIRE_LANES = 2
EXPIRE_FINISH_S = 5.0  # a batch under way when the daemon stops may finish (and be counted) this long
RELEASE_TIMEOUT_S = 0.5  # what handing back leases may take at the end of a shutdown


def latency_s(completed_at: datetime | None, now_unix: float) -> float | None:
    """Seconds from the API's completion time to now, when the clocks make that meaningful."""
    if completed_at is None or completed_at.tzinfo is None:
        return None
    latency = now_unix - completed_at.timestamp()
    return latency if 0 <= latency < 86400 else None


class ResultsClient(Protocol):
    async def fetch_result(self, job_id: UUID) -> outcomes.Outcome: ...


class Worker:
    def __init__(
        self,
        cfg: Config,
        store: JobStore,
        client: ResultsClient,
        gate: Gate,
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        account: str = DEFAULT_ACCOUNT,
        slots: Slots | None = None,
        drained: Callable[[], Awaitable[bool]] | None = None,
        claim_horizon_s: float | None = None,
    ) -> None:
        self.cfg = cfg
        self.account = account
        self.slots = slots
        # How far ahead claims may fill the shared limiter's slots: a lease's third, at most the
        # time max_in_flight requests take at the account's rate.
        self.claim_horizon_s = claim_horizon_s or cfg.worker.lease_s / 3
        # --drain: whether nothing is left to wait for; by default this store's own pending jobs
        # (with several accounts, every configured account's, so no lane stops while work arrives)
        self._drained = drained
        self.store = store
        self.client = client
        self.gate = gate
        self.rng = rng or random.Random()
        self.clock = clock
        self.owner = cfg.worker.worker_id
        self.in_flight: dict[UUID, ClaimedJob] = {}
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_tick = clock()
        self.harvested = 0
        self._slot_freed = asyncio.Event()
        self._stopping = asyncio.Event()  # set when the claim loop ends: slot waiters give up

    # ------------------------------------------------------------ loop
    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> None:
        try:
            await self._claim_loop(stop, drain)
        finally:
            self._stopping.set()
            await self._shutdown()

    async def _claim_loop(self, stop: asyncio.Event, drain: bool) -> None:
        cfg = self.cfg
        backoff = lifetime.Backoff(0.5, 5.0, rng=self.rng)
        while not stop.is_set():
            self.last_tick = self.clock()
            limit = self.gate.claim_budget(self._free_slots())
            if limit <= 0:  # wake at least every idle_poll_s so the loop stays visibly alive
                pause = min(self.gate.hold_back() or 0.5, cfg.worker.idle_poll_s)
                await lifetime.wait(stop, pause, *self._freed_events())
                continue
            try:
                # Claim no more than the shared budget can send soon: every replica's claimed jobs
                # queue for the same slots, and a job claimed early waits behind all of them (a
                # live job behind a backlog, too). With nothing in flight one job is claimed anyway,
                # so a stale reading cannot stall the loop.
                available = await self.gate.limiter.available_slots(self.claim_horizon_s)
                if available <= 0 and self.in_flight:
                    await lifetime.wait(stop, self.claim_horizon_s / 4, *self._freed_events())
                    continue
                limit = min(limit, max(1, available))
                limit = self.gate.claim_limit(limit)
                jobs = await self.store.claim(self.owner, limit, cfg.worker.lease_s)
                if self.slots is not None:  # a full claim: more is due than we took
                    self.slots.want(self.account, len(jobs) >= limit)
            except DatabaseError as exc:
                self.gate.observer.error("database")
                delay = backoff.next()
                log.warning("db_unavailable", error=str(exc), retry_in_s=round(delay, 2))
                await lifetime.wait(stop, delay)
                continue
            backoff.reset()
            for job in jobs:
                self._start(job, stop)
            if jobs:
                continue
            try:
                if drain and not self.in_flight and await self._nothing_pending():
                    log.info("queue_drained", harvested=self.harvested)
                    return
                due_in = await self.store.next_due_in()
            except DatabaseError as exc:
                log.warning("db_unavailable", error=str(exc))
                due_in = None
            timeout = cfg.worker.idle_poll_s if due_in is None else due_in
            await lifetime.wait(stop, min(max(timeout, 0.02), cfg.worker.idle_poll_s), self.gate.work)

    async def _nothing_pending(self) -> bool:
        if self._drained is not None:
            return await self._drained()
        return not await self.store.any_pending()

    def _free_slots(self) -> int:
        if self.slots is None:
            return self.cfg.rate_limit.max_in_flight - len(self.in_flight)
        return self.slots.free_for(self.account)

    def _freed_events(self) -> list[asyncio.Event]:
        if self.slots is None:
            return [self._slot_freed]
        return [self._slot_freed, self.slots.freed(self.account)]

    def _start(self, job: ClaimedJob, stop: asyncio.Event) -> None:
        self.in_flight[job.job_id] = job
        self.gate.in_flight += 1
        if self.slots is not None:
            self.slots.took(self.account)
        task = asyncio.create_task(self._handle(job, stop), name=f"job-{job.job_id}")
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # ------------------------------------------------------------ one job
    async def _handle(self, job: ClaimedJob, stop: asyncio.Event) -> None:
        view = policy.JobView(
            job.job_type, job.polls, job.not_found_count, job.fault_count, job.age_s, job.upstream_status
        )
        try:
            hold = policy.first_poll_wait(
                view, self.cfg.polling, self.gate.poll_factor(), stream_up=self.gate.stream_up
            )
            if hold > 0:
                await self.store.reschedule(
                    job,
                    Reschedule(
                        delay_s=hold,
                        polls_spent=0,
                        http_status=None,
                        not_found_count=job.not_found_count,
                        fault_count=job.fault_count,
                        error=None,
                    ),
                )
                return
            started = self.clock()
            if not await self._slot():  # shutting down: hand the job back without spending a request
                await self.store.release(self.owner, [job.job_id], 0.0)
                return
            held = self.gate.hold_back()
            if held is not None:  # a pause began while this job waited for its slot
                await self.store.release(self.owner, [job.job_id], held)
                return
            waited = self.clock() - started
            sent_with = self.gate.rotations
            outcome = await self.client.fetch_result(job.job_id)
            await self.gate.observe("results", outcome, waited, sent_with)
            await self._apply(job, view, outcome, stop)
        except asyncio.CancelledError:
            raise
        except DatabaseError as exc:  # the database went away (limiter, queue): not a bug
            self.gate.observer.error("database")
            log.warning("db_unavailable", job_id=str(job.job_id), error=str(exc))
            await self._release_after_fault(job)
        except Exception as exc:  # contained to this job
            self.gate.observer.error("unexpected")
            log.error("job_error", job_id=str(job.job_id), error=logs.scrub(repr(exc)), exc_info=True)
            await self._release_after_fault(job)
        finally:
            self.in_flight.pop(job.job_id, None)
            self.gate.in_flight -= 1
            if self.slots is not None:
                self.slots.gave_back(self.account)
            self._slot_freed.set()

    async def _slot(self) -> bool:
        """Wait for a request slot; False when the loop stopped first (nothing was sent).

        A slot may be hours away (a 429 pause): a stop must not wait for it.
        """
        if self._stopping.is_set():
            return False
        acquire = asyncio.ensure_future(self.gate.limiter.acquire())
        stopping = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({acquire, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
            if not acquire.done():
                acquire.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acquire
        if acquire.cancelled():
            return False
        acquire.result()  # a DatabaseError from the limiter surfaces here
        return not self._stopping.is_set()

    async def _release_after_fault(self, job: ClaimedJob) -> None:
        """Hand the job back with a fault backoff; if even that fails, its lease runs out."""
        with contextlib.suppress(DatabaseError):
            await self.store.release(
                self.owner, [job.job_id], policy.fault_delay(job.fault_count + 1, self.cfg.polling, self.rng)
            )

    async def _apply(
        self, job: ClaimedJob, view: policy.JobView, outcome: outcomes.Outcome, stop: asyncio.Event
    ) -> None:
        cfg = self.cfg.polling
        status = outcome.http_status
        if isinstance(outcome, outcomes.Completed):
            await self._store(job, stop, lambda: self.store.store_result(job, outcome))
        elif isinstance(outcome, outcomes.Gone):
            await self._store(job, stop, lambda: self.store.store_failure(job, outcome))
        elif isinstance(outcome, outcomes.Pending):
            job_type = outcome.job_type or job.job_type
            decision = policy.on_pending(
                view,
                cfg,
                self.rng,
                self.gate.durations.get(job_type),
                self.gate.poll_factor(),
                stream_up=self.gate.stream_up,
                upstream_status=outcome.upstream_status,
            )
            await self._decide(job, decision, status, outcome.upstream_status, outcome.job_type)
        elif isinstance(outcome, outcomes.NotFound):
            await self._decide(job, policy.on_not_found(view, cfg, self.rng), status, None, None)
        elif isinstance(outcome, outcomes.AuthFailed):
            await self._keep(job, cfg.auth_recheck_s, status, f"{status}: {outcome.detail}")
        elif isinstance(outcome, outcomes.RateLimited):
            await self._keep(
                job, max(cfg.min_interval_s, self.gate.rate_pause_s(outcome)), status, "429: rate limited"
            )
        elif isinstance(outcome, outcomes.Transient):
            await self._decide(job, policy.on_fault(view, outcome.reason, cfg, self.rng), status, None, None)
        else:  # pragma: no cover - classification returns only the kinds above
            raise TypeError(f"unknown outcome {type(outcome).__name__}")

    async def _keep(self, job: ClaimedJob, delay: float, status: int | None, error: str) -> None:
        """Count the request but leave the job exactly as it was otherwise (pauses)."""
        await self.store.reschedule(
            job,
            Reschedule(
                delay_s=delay,
                polls_spent=1,
                http_status=status,
                not_found_count=job.not_found_count,
                fault_count=job.fault_count,
                error=error,
            ),
        )

    async def _decide(
        self,
        job: ClaimedJob,
        decision: policy.Decision,
        status: int | None,
        upstream_status: str | None,
        job_type: str | None,
    ) -> None:
        if decision.state is None:
            await self.store.reschedule(
                job,
                Reschedule(
                    delay_s=decision.delay_s,
                    polls_spent=1,
                    http_status=status,
                    upstream_status=upstream_status,
                    job_type=job_type,
                    not_found_count=decision.not_found_count,
                    fault_count=decision.fault_count,
                    error=decision.error,
                ),
            )
            log.debug(
                "job_polled",
                job_id=str(job.job_id),
                http_status=status,
                polls=job.polls + 1,
                next_poll_in_s=round(decision.delay_s, 2),
            )
            return
        if await self.store.finish(
            job,
            Finish(
                state=decision.state,
                polls_spent=1,
                http_status=status,
                not_found_count=decision.not_found_count,
                fault_count=decision.fault_count,
                error=decision.error,
            ),
        ):
            self.gate.observer.job_finished(decision.state, job.polls + 1, None)
            log.info(
                f"job_{decision.state}",
                job_id=str(job.job_id),
                http_status=status,
                polls=job.polls + 1,
                error=decision.error,
            )

    async def _store(
        self, job: ClaimedJob, stop: asyncio.Event, attempt: Callable[[], Awaitable[StoreOutcome]]
    ) -> None:
        """Store a fetched body; keep retrying while the database is away (the body is paid for)."""
        backoff = lifetime.Backoff(0.25, 2.0, jitter=0.0)
        give_up_at: float | None = None
        while True:
            started = self.clock()
            try:
                outcome = await attempt()
                break
            except DatabaseError as exc:
                self.gate.observer.error("database")
                now = self.clock()
                if stop.is_set():
                    give_up_at = give_up_at or now + self.cfg.worker.shutdown_grace_s / 2
                    if now >= give_up_at:
                        log.error("store_abandoned", job_id=str(job.job_id), error=str(exc))
                        return
                delay = backoff.next()
                log.warning("db_unavailable", job_id=str(job.job_id), error=str(exc), retry_in_s=delay)
                await asyncio.sleep(delay)
                with contextlib.suppress(DatabaseError):
                    await self.store.extend_leases(self.owner, [job.job_id], self.cfg.worker.lease_s)
        self.gate.observer.store_done(self.clock() - started)
        if outcome.kind == "fenced":
            log.warning("job_lease_lost", job_id=str(job.job_id))
            return
        if outcome.kind == "harvested":
            self.harvested += 1
        self.gate.durations.ended(job.job_id)
        if outcome.processing_s is not None:  # API seconds; the schedule runs in scaled seconds
            self.gate.durations.observe(outcome.job_type, outcome.processing_s / self.cfg.speed)
        self.gate.observer.job_finished(
            outcome.kind, job.polls + 1, latency_s(outcome.completed_at, time.time())
        )
        log.info(f"job_{outcome.kind}", job_id=str(job.job_id), polls=job.polls + 1, reason=outcome.reason)

    # ------------------------------------------------------------ side duties
    async def heartbeat(self) -> float:
        """Extend the leases of the jobs in flight; returns the pause before the next round."""
        if self.in_flight:
            await self.store.extend_leases(self.owner, list(self.in_flight), self.cfg.worker.lease_s)
        return self.cfg.worker.heartbeat_s

    async def housekeeping(self) -> float:
        """Expire jobs pending longer than ``give_up_after_s``, in bounded batches.

        What was expired is logged even when the daemon stops in the middle of a long backlog: the
        side tasks are cancelled then, possibly while a batch commits, so a batch in progress is
        let finish (it is bounded by the statement timeout) and counted before the log line.
        ``EXPIRE_LANES`` batches run at once (``SKIP LOCKED`` keeps them apart): a batch's own
        statement and its commit, where the change feed numbers it under one lock, overlap.
        """
        expired = [0]
        batches: set[asyncio.Future[int]] = set()
        try:
            async with asyncio.TaskGroup() as lanes:
                for _ in range(EXPIRE_LANES):
                    lanes.create_task(self._expire_batches(expired, batches))
        except* DatabaseError as failed:  # the caller retries a database error, one like any other
            raise failed.exceptions[0] from None
        finally:
            try:
                if batches:  # stopped mid-batch: each commits or fails on its own, and counts itself
                    await asyncio.wait(set(batches), timeout=EXPIRE_FINISH_S)
            finally:
                if expired[0]:
                    log.info("jobs_expired", count=expired[0])
        return self.cfg.worker.housekeeping_s

    async def _expire_batches(self, expired: list[int], batches: set[asyncio.Future[int]]) -> None:
        """Expire batch after batch until one comes back short. Each batch adds its own count to
        ``expired[0]`` when it ends, whoever still waits for it: a cancelled wait leaves the batch
        running (it is never cancelled: its commit may already be on the way)."""

        def counted(batch: asyncio.Future[int]) -> None:
            batches.discard(batch)
            if not batch.cancelled() and batch.exception() is None:
                expired[0] += batch.result()

        while True:
            batch = asyncio.ensure_future(self.store.expire(self.cfg.polling.give_up_after_s, EXPIRE_BATCH))
            batches.add(batch)
            batch.add_done_callback(counted)
            count = await asyncio.shield(batch)
            if count < EXPIRE_BATCH or self._stopping.is_set():
                return
            await asyncio.sleep(0)  # let the loop breathe between batches

    async def _shutdown(self) -> None:
        """Let requests in flight finish within the grace period, then hand back what is left."""
        grace = max(0.0, self.cfg.worker.shutdown_grace_s - RELEASE_TIMEOUT_S)
        leftover: list[UUID] = []
        if self.tasks:
            _, pending = await asyncio.wait(set(self.tasks), timeout=grace)
            # Read before cancelling: a cancelled job leaves in_flight on its way out. Releasing a
            # job that finished meanwhile changes nothing (only pending rows under our lease).
            leftover = list(self.in_flight)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=RELEASE_TIMEOUT_S / 2)
        leftover = list(dict.fromkeys([*leftover, *self.in_flight]))
        if leftover:
            try:
                async with asyncio.timeout(RELEASE_TIMEOUT_S):
                    await self.store.release(self.owner, leftover, 0.0)
                log.info("jobs_released", count=len(leftover))
            except (DatabaseError, TimeoutError) as exc:
                log.warning("release_failed", error=str(exc), count=len(leftover))
