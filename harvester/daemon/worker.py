"""The harvest loop: claim due jobs, spend one rate-limited request on each, apply the decision.

It only sequences I/O between the job store (``ports.JobStore``), the gate (budget and brakes), the
API client and the rules: what an answer means for its job is ``scheduling.answers``, what it means
for the whole process ``scheduling.brakes`` (through the gate), what the runs teach
``scheduling.durations``. It keeps the leases of its jobs in flight alive (``heartbeat``); expiring
stale jobs is ``daemon.expiry``. An unexpected error is contained to its job, which is released
with a fault backoff. On stop it claims nothing more, hands back at once every job still waiting
for a request slot, lets requests in flight finish within the grace period, then releases whatever
is left.
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
from harvester.ports import ClaimedJob, JobStore, StoreOutcome
from harvester.scheduling import answers, policy
from harvester.scheduling.gate import Gate
from harvester.scheduling.slots import Slots

log = logs.get("harvester.daemon.worker")

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
        # Set when the claim loop ends: slot waiters give up, an expiry sweep stops after its batches.
        self.stopping = asyncio.Event()

    # ------------------------------------------------------------ loop
    async def run(self, stop: asyncio.Event, *, drain: bool = False) -> None:
        try:
            await self._claim_loop(stop, drain)
        finally:
            self.stopping.set()
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
        view = answers.view(job)
        try:
            hold = answers.first_poll(view, self.cfg.polling, self._situation())
            if hold is not None:
                await self.store.reschedule(job, hold)
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
            step = answers.after(view, outcome, self.cfg.polling, self.rng, self._situation())
            await self._apply(job, step, stop)
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

    def _situation(self) -> answers.Situation:
        """What the gate knows beside the job, read now (a pause or the stream may have changed
        while the request was out)."""
        gate = self.gate
        return answers.Situation(
            poll_factor=gate.poll_factor(),
            stream_up=gate.stream_up,
            durations=gate.durations,
            now_unix=gate.wall(),
            default_pause_s=gate.default_pause_s,
        )

    async def _slot(self) -> bool:
        """Wait for a request slot; False when the loop stopped first (nothing was sent).

        A slot may be hours away (a 429 pause): a stop must not wait for it.
        """
        if self.stopping.is_set():
            return False
        acquire = asyncio.ensure_future(self.gate.limiter.acquire())
        stopping = asyncio.ensure_future(self.stopping.wait())
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
        return not self.stopping.is_set()

    async def _release_after_fault(self, job: ClaimedJob) -> None:
        """Hand the job back with a fault backoff; if even that fails, its lease runs out."""
        with contextlib.suppress(DatabaseError):
            await self.store.release(
                self.owner, [job.job_id], policy.fault_delay(job.fault_count + 1, self.cfg.polling, self.rng)
            )

    async def _apply(self, job: ClaimedJob, step: answers.Step, stop: asyncio.Event) -> None:
        """Write what the answer led to (``answers.after``)."""
        if isinstance(step, answers.Store):
            body = step.outcome
            if isinstance(body, outcomes.Completed):
                await self._store(job, stop, lambda: self.store.store_result(job, body))
            else:
                await self._store(job, stop, lambda: self.store.store_failure(job, body))
        elif isinstance(step, answers.Paused):
            await self.store.reschedule(job, step.change)
        elif isinstance(step, answers.Again):
            await self.store.reschedule(job, step.change)
            log.debug(
                "job_polled",
                job_id=str(job.job_id),
                http_status=step.change.http_status,
                polls=job.polls + 1,
                next_poll_in_s=round(step.change.delay_s, 2),
            )
        elif await self.store.finish(job, step.change):
            end = step.change
            self.gate.observer.job_finished(end.state, job.polls + 1, None)
            log.info(
                f"job_{end.state}",
                job_id=str(job.job_id),
                http_status=end.http_status,
                polls=job.polls + 1,
                error=end.error,
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
        # The results report API seconds; the schedule runs in scaled seconds.
        ran_s = None if outcome.processing_s is None else self.cfg.local_s(outcome.processing_s)
        self.gate.durations.ran(job.job_id, outcome.job_type, ran_s)
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
