"""The worker on the fake seam: every outcome of a results request, and the loop around them.

No database and no HTTP: ``tests.support.fakes`` stands in for the job store, the limiter and the
API, so each row of SPEC section 4 is one case here. The same loop runs against PostgreSQL and
the simulator in tests/integration and tests/e2e.
"""

from __future__ import annotations

import asyncio
import random
from uuid import UUID, uuid4

import pytest

from harvester import config
from harvester.api.outcomes import (
    AuthFailed,
    Completed,
    Gone,
    NotFound,
    Outcome,
    Pending,
    RateLimited,
    Transient,
    Unreadable,
)
from harvester.daemon.worker import Worker
from harvester.scheduling import brakes
from harvester.scheduling.gate import Gate
from tests.support import configs, fakes

CFG = configs.loaded(
    {
        "worker.shutdown_grace_s": 1.0,
        "worker.idle_poll_s": 0.05,
    },
)
DAY = 86400.0
OLD = 8 * DAY  # past give_up_after_s (7 days)


class Parts:
    def __init__(self, limiter: fakes.FakeLimiter | None = None, cfg: config.Config = CFG) -> None:
        self.store = fakes.FakeStore()
        self.api = fakes.FakeApi()
        self.limiter = limiter or fakes.FakeLimiter()
        self.gate = Gate(cfg, self.limiter)
        self.worker = Worker(cfg, self.store, self.api, self.gate, rng=random.Random(1))

    async def poll_once(self, job_id: UUID) -> None:
        [job] = await self.store.claim(self.worker.owner, 1, 30.0)
        assert job.job_id == job_id
        self.worker.in_flight[job.job_id] = job
        self.gate.in_flight += 1
        await self.worker._handle(job, asyncio.Event())


def body(job_id: UUID) -> Completed:
    doc = {
        "job_id": str(job_id),
        "type": "spiderSite",
        "status": "completed",
        "processing_time_seconds": 12.5,
        "data": {},
    }
    return Completed(body=b"{...}", doc=doc)


@pytest.mark.parametrize(
    ("answer", "age_s", "state", "polls", "errors"),
    [
        (lambda j: body(j), 3600.0, "harvested", 1, None),
        (lambda j: Completed(body=b"<html>", doc=Unreadable("not JSON")), 3600.0, "rejected", 1, "not JSON"),
        (lambda j: Gone(body=b"{}", doc={}, upstream_status="cancelled"), 3600.0, "cancelled", 1, None),
        (
            lambda j: Gone(body=b"{}", doc={}, upstream_status="failed", error_message="crawl failed"),
            3600.0,
            "failed",
            1,
            "crawl failed",
        ),
        (lambda j: Pending(upstream_status="processing"), 3600.0, "pending", 1, None),
        (lambda j: Pending(upstream_status="processing"), OLD, "expired", 1, "gave up: still not finished"),
        (lambda j: NotFound(), 3600.0, "pending", 1, "404: job not found (yet)"),
        (lambda j: NotFound(), OLD, "expired", 1, "gave up: 404: job not found"),
        (
            lambda j: Transient(reason="server error http 503", http_status=503),
            3600.0,
            "pending",
            1,
            "server error http 503",
        ),
        (lambda j: Transient(reason="timeout"), OLD, "expired", 1, "gave up: timeout"),
        (lambda j: AuthFailed(detail="bad key", http_status=401), 3600.0, "pending", 1, "401: bad key"),
        (lambda j: RateLimited(retry_after_s=30.0), 3600.0, "pending", 1, "429: rate limited"),
    ],
)
async def test_each_answer_ends_in_its_state(
    answer: object, age_s: float, state: str, polls: int, errors: str | None
) -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id, age_s=age_s)
    parts.api.answer(job_id, answer(job_id))  # type: ignore[operator]
    await parts.poll_once(job_id)
    row = parts.store.rows[job_id]
    assert (row.state, row.polls, row.last_error) == (state, polls, errors)
    assert row.lease_owner is None
    assert parts.limiter.granted == 1 and parts.api.fetched == [job_id]


async def test_a_404_that_persists_ends_not_found() -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id, not_found_count=CFG.polling.not_found_retries)
    parts.api.answer(job_id, NotFound())
    await parts.poll_once(job_id)
    assert parts.store.rows[job_id].state == "not_found"


async def test_a_harvest_teaches_the_typical_duration() -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id)
    parts.api.answer(job_id, body(job_id))
    await parts.poll_once(job_id)
    assert parts.gate.durations.get("spiderSite") == pytest.approx(12.5)
    assert parts.worker.harvested == 1


async def test_a_refused_credential_pauses_without_changing_the_job() -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id)
    parts.api.answer(job_id, AuthFailed(detail="revoked", http_status=401))
    await parts.poll_once(job_id)
    row = parts.store.rows[job_id]
    assert (row.state, row.not_found_count, row.fault_count) == ("pending", 0, 0)
    assert parts.gate.brakes.auth_failed
    assert row.next_poll_at - parts.store.clock() == pytest.approx(CFG.polling.auth_recheck_s, abs=1)
    assert parts.gate.claim_budget(8) == 0 and parts.gate.paused_reason() == "credential refused"


async def test_a_junk_retry_after_parks_neither_the_job_nor_the_limiter_for_days() -> None:
    """The 429 pause has one rule with one cap: a 10-day Retry-After is 26 h for both."""
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id)
    parts.api.answer(job_id, RateLimited(retry_after_s=10 * DAY))
    await parts.poll_once(job_id)
    wait = parts.store.rows[job_id].next_poll_at - parts.store.clock()
    assert wait == pytest.approx(brakes.MAX_RATE_PAUSE_S, abs=1)
    assert parts.limiter.pauses == [brakes.MAX_RATE_PAUSE_S]
    assert wait < CFG.polling.give_up_after_s  # polled again before it could expire
    assert "rate limited" in (parts.gate.paused_reason() or "")


async def test_repeated_faults_open_the_breaker_and_hold_claimed_jobs() -> None:
    parts = Parts()
    for _ in range(CFG.polling.breaker_threshold):
        job_id = uuid4()
        parts.store.add(job_id)
        parts.api.answer(job_id, Transient(reason="reset"))
        await parts.poll_once(job_id)
    assert parts.gate.paused_reason() == "circuit breaker open"
    held = uuid4()
    parts.store.add(held)
    [job] = await parts.store.claim(parts.worker.owner, 1, 30.0)
    parts.worker.in_flight[held] = job
    parts.gate.in_flight += 1
    await parts.worker._handle(job, asyncio.Event())
    assert parts.api.fetched.count(held) == 0  # no request while the breaker is open
    assert parts.store.rows[held].polls == 0 and parts.store.rows[held].lease_owner is None


async def test_a_young_job_waits_for_its_first_poll_without_a_request() -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id, age_s=0.0)
    await parts.poll_once(job_id)
    row = parts.store.rows[job_id]
    assert parts.api.fetched == [] and row.polls == 0
    assert row.next_poll_at > parts.store.clock()


async def test_a_lost_lease_changes_nothing() -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id)
    [job] = await parts.store.claim(parts.worker.owner, 1, 30.0)
    parts.store.rows[job_id].lease_token += 1  # another process took it over
    parts.api.answer(job_id, body(job_id))
    parts.worker.in_flight[job_id] = job
    parts.gate.in_flight += 1
    await parts.worker._handle(job, asyncio.Event())
    assert parts.store.rows[job_id].state == "pending" and parts.worker.harvested == 0


async def test_a_database_failure_while_storing_is_retried_until_it_returns() -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id)
    parts.api.answer(job_id, body(job_id))
    parts.store.failing.add("store_result")
    task = asyncio.create_task(parts.poll_once(job_id))
    await asyncio.sleep(0.6)
    assert parts.store.calls.count("store_result") >= 2 and not task.done()
    parts.store.failing.clear()
    await asyncio.wait_for(task, 5)
    assert parts.store.rows[job_id].state == "harvested"
    assert parts.api.fetched == [job_id]  # the body was paid for once


async def test_the_loop_drains_a_mixed_queue() -> None:
    quick = configs.loaded(
        {
            "polling.min_interval_s": 0.01,
            "worker.idle_poll_s": 0.05,
        },
    )
    parts = Parts(cfg=quick)
    answers: dict[UUID, list[Outcome]] = {}
    for _ in range(20):
        job_id = uuid4()
        parts.store.add(job_id)
        answers[job_id] = [Pending(), body(job_id)]
    gone = uuid4()
    parts.store.add(gone)
    answers[gone] = [Gone(body=b"{}", doc={}, upstream_status="failed")]
    for job_id, script in answers.items():
        parts.api.answer(job_id, *script)
    for row in parts.store.rows.values():  # the second poll comes at once, not after minutes
        row.job_type = "spiderSite"
    parts.gate.durations.observe("spiderSite", 0.01)
    await asyncio.wait_for(parts.worker.run(asyncio.Event(), drain=True), 30)
    assert set(fakes.states(parts.store).values()) == {"harvested", "failed"}
    assert len(parts.api.fetched) == 41  # 20 times (202, 200) and one 410


async def test_a_stop_while_waiting_hours_for_a_slot_hands_the_job_back_at_once() -> None:
    parts = Parts(fakes.FakeLimiter(blocked=True))
    job_id = uuid4()
    parts.store.add(job_id)
    stop = asyncio.Event()
    run = asyncio.create_task(parts.worker.run(stop))
    await asyncio.sleep(0.2)
    assert parts.worker.in_flight  # claimed, waiting for its slot
    started = asyncio.get_running_loop().time()
    stop.set()
    await asyncio.wait_for(run, 5)
    assert asyncio.get_running_loop().time() - started < 0.5  # not the grace period, not the pause
    row = parts.store.rows[job_id]
    assert (row.state, row.polls, row.lease_owner) == ("pending", 0, None)
    assert parts.api.fetched == []


async def test_claims_that_fail_back_off_and_recover() -> None:
    parts = Parts()
    job_id = uuid4()
    parts.store.add(job_id)
    parts.api.answer(job_id, body(job_id))
    parts.store.failing.add("claim")
    stop = asyncio.Event()
    run = asyncio.create_task(parts.worker.run(stop, drain=True))
    await asyncio.sleep(2.0)
    attempts = parts.store.calls.count("claim")
    assert 2 <= attempts <= 5  # 0.5 s, 1 s, 2 s ... not a tight loop
    parts.store.failing.clear()
    await asyncio.wait_for(run, 10)
    assert parts.store.rows[job_id].state == "harvested"


async def test_with_no_slot_soon_the_worker_claims_no_more_than_the_one_it_holds() -> None:
    """Every replica's claimed jobs queue for the same slots: a backlog claimed early would hold
    later (live) jobs back. With the budget taken, one job in flight and nothing more."""

    class Taken(fakes.FakeLimiter):
        async def available_slots(self, horizon_s: float) -> int:
            return 0

    parts = Parts(Taken(blocked=True))
    for _ in range(5):
        parts.store.add(uuid4())
    stop = asyncio.Event()
    run = asyncio.create_task(parts.worker.run(stop))
    await asyncio.sleep(0.3)
    assert len(parts.worker.in_flight) == 1
    stop.set()
    await asyncio.wait_for(run, 5)
