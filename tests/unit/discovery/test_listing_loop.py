"""Discovery on the fake seam: what a list pass does to the queue and to the gate."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from harvester.api.outcomes import AuthFailed, JobPage, ListedJob, Outcome, Transient
from harvester.discovery.listing import UNHEALTHY_AFTER, Discovery
from harvester.scheduling import policy
from harvester.scheduling.gate import Gate
from tests.support import configs, fakes

CFG = configs.loaded()
NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)


class Parts:
    def __init__(self) -> None:
        self.store = fakes.FakeStore()
        self.api = fakes.FakeApi()
        self.gate = Gate(CFG, fakes.FakeLimiter())
        self.discovery = Discovery(CFG, self.store, self.api, self.gate, "t:t:t")

    async def pass_now(self) -> None:
        """One look, as if the last pass were long ago."""
        watermark, _, _ = self.store.discovery.get(self.discovery.key, (None, None, None))
        self.store.discovery[self.discovery.key] = (watermark, None, None)
        await self.discovery.step()


def page(*jobs: tuple[UUID, str], total_pages: int = 1) -> JobPage:
    listed = tuple(
        ListedJob(job_id, "spiderSite", status, NOW - timedelta(seconds=n))
        for n, (job_id, status) in enumerate(jobs)
    )
    return JobPage(total=len(jobs), page=1, page_size=100, total_pages=total_pages, jobs=listed)


async def test_a_pass_makes_finished_jobs_due_and_defers_running_ones() -> None:
    parts = Parts()
    done, failed, running, other = uuid4(), uuid4(), uuid4(), uuid4()
    for job_id in (done, failed, running, other):
        parts.store.add(job_id, due_in_s=60.0)
    parts.api.pages = [
        page((done, "completed"), (failed, "failed"), (running, "processing"), (uuid4(), "completed"))
    ]  # a job of someone else's: ignored
    await parts.pass_now()
    rows = parts.store.rows
    now = parts.store.clock()
    assert rows[done].next_poll_at < now and rows[failed].next_poll_at < now
    defer = policy.running_defer("spiderSite", CFG.polling)
    assert rows[running].next_poll_at >= now + defer - 1
    assert rows[other].next_poll_at < now + 61  # the list did not show it: schedule unchanged
    assert parts.gate.work.is_set()  # the worker is nudged
    assert parts.api.listed == 1
    assert parts.store.discovery[parts.discovery.key][0] == NOW  # the watermark moved


async def test_with_the_stream_up_a_page_keeps_a_started_jobs_overdue_time() -> None:
    """The stream showed the job started: it is polled when its end is overdue, counted from its
    start. A page showing it still running must not push that back (a lost end would wait a
    running defer past each page), and a job only the page shows running is overdue as soon."""
    parts = Parts()
    parts.store.stream_up = True
    started, unseen = uuid4(), uuid4()
    parts.store.add(started, upstream_status="processing", due_in_s=30.0)
    parts.store.add(unseen, due_in_s=0.0)
    parts.api.pages = [page((started, "processing"), (unseen, "processing"))]
    await parts.pass_now()
    now = parts.store.clock()
    assert parts.store.rows[started].next_poll_at < now + 30.1
    overdue = policy.started_defer("spiderSite", CFG.polling)
    assert now + overdue - 1 < parts.store.rows[unseen].next_poll_at < now + overdue + 1
    assert overdue < policy.running_defer("spiderSite", CFG.polling)


async def test_with_the_stream_down_each_page_showing_a_job_running_defers_it_again() -> None:
    parts = Parts()
    running = uuid4()
    parts.store.add(running, upstream_status="processing", due_in_s=30.0)
    parts.api.pages = [page((running, "processing"))]
    await parts.pass_now()
    defer = policy.running_defer("spiderSite", CFG.polling)
    assert parts.store.rows[running].next_poll_at >= parts.store.clock() + defer - 1


async def test_nothing_to_learn_means_no_list_request() -> None:
    parts = Parts()
    parts.store.add(uuid4(), upstream_status="completed")  # already known finished
    await parts.pass_now()
    assert parts.api.listed == 0


async def test_a_pass_waits_while_side_requests_are_paused() -> None:
    parts = Parts()
    parts.store.add(uuid4())
    await parts.gate.observe("results", AuthFailed(http_status=401), 0.0)
    await parts.pass_now()
    assert parts.api.listed == 0


async def test_a_failing_list_marks_discovery_unhealthy_and_the_gate_hears_it() -> None:
    parts = Parts()
    parts.store.add(uuid4())
    parts.api.pages = [Transient(reason="server error http 503", http_status=503)]
    assert parts.gate.poll_factor() == CFG.polling.list_poll_factor
    for _ in range(UNHEALTHY_AFTER):
        await parts.pass_now()
    assert not parts.discovery.healthy and not parts.gate.discovery_healthy
    assert parts.gate.poll_factor() == 1.0  # unseen jobs are polled directly again
    parts.api.pages = [page()]
    await parts.pass_now()
    assert parts.gate.discovery_healthy


async def test_a_database_error_in_a_pass_backs_off_and_never_ends_the_loop() -> None:
    parts = Parts()
    parts.store.add(uuid4())
    parts.store.failing.add("discovery_state")
    stop = asyncio.Event()
    run = asyncio.create_task(parts.discovery.run(stop))
    await asyncio.sleep(1.6)
    attempts = parts.store.calls.count("discovery_state")
    assert 1 <= attempts <= 4  # 0.5 s, 1 s, ...: not every tick
    assert not run.done()
    stop.set()
    await asyncio.wait_for(run, 2)


async def test_queued_defers_running_out_are_renewed_by_listing_the_queue() -> None:
    """A job waiting in SpiderIQ's queue never shows on the newest-first pages again: when the
    queued defers of enough of them run out soon, one page of the queue renews them all."""
    parts = Parts()
    defer = policy.queued_defer(CFG.polling)
    waiting = [uuid4() for _ in range(6)]
    for job_id in waiting:
        parts.store.add(job_id, upstream_status="queued", polls=1, due_in_s=0.1 * defer)
    parts.api.pages = [page()]
    parts.api.queued_pages = [page(*((job_id, "queued") for job_id in waiting))]
    await parts.pass_now()
    assert parts.api.filtered == ["queued"]
    now = parts.store.clock()
    assert all(parts.store.rows[j].next_poll_at >= now + defer - 1 for j in waiting)
    for job_id in waiting:  # running out again at once: still not listed again so soon
        parts.store.rows[job_id].next_poll_at = now + 1.0
    await parts.pass_now()
    assert parts.api.filtered == ["queued"]


async def test_the_queue_is_not_listed_while_its_defers_have_long_to_run() -> None:
    for stream_up in (False, True):
        parts = Parts()
        for _ in range(6):
            parts.store.add(
                uuid4(), upstream_status="queued", polls=1, due_in_s=policy.queued_defer(CFG.polling)
            )
        parts.store.stream_up = stream_up
        parts.api.pages = [page()]
        await parts.pass_now()
        assert parts.api.filtered == [], stream_up


async def test_a_few_queued_defers_running_out_are_left_to_direct_polls() -> None:
    parts = Parts()
    for _ in range(4):  # fewer than a page is worth
        parts.store.add(uuid4(), upstream_status="queued", polls=1, due_in_s=5.0)
    parts.api.pages = [page()]
    await parts.pass_now()
    assert parts.api.filtered == []


async def test_with_the_stream_up_running_out_queued_defers_are_renewed_too() -> None:
    parts = Parts()
    parts.store.stream_up = True
    waiting = [uuid4() for _ in range(6)]
    for job_id in waiting:
        parts.store.add(job_id, upstream_status="queued", polls=1, due_in_s=10.0)
    parts.api.pages = [page()]
    parts.api.queued_pages = [page(*((job_id, "queued") for job_id in waiting))]
    await parts.pass_now()
    assert parts.api.filtered == ["queued"]


async def test_with_the_stream_up_a_job_the_list_shows_queued_waits_for_its_announced_start() -> None:
    parts = Parts()
    queued, running = uuid4(), uuid4()
    parts.store.add(queued)
    parts.store.add(running)
    parts.store.stream_up = True
    parts.api.pages = [page((queued, "queued"), (running, "processing"))]
    await parts.pass_now()
    now = parts.store.clock()
    assert parts.store.rows[queued].next_poll_at >= now + policy.queued_defer(CFG.polling) - 1
    assert parts.store.rows[running].next_poll_at < now + policy.queued_defer(CFG.polling) / 2


async def test_without_the_stream_a_bulk_waiting_in_the_queue_pages_by_the_ends_it_shows() -> None:
    """60 fresh jobs known queued, ends seen at 0.25 a second: a page waits for a fifth of the 50
    left (10 ends, 40 s), where a trickle would be listed every list_interval_s."""
    clock = [1000.0]
    parts = Parts()
    parts.store.clock = lambda: clock[0]
    parts.discovery.clock = lambda: clock[0]
    bulk = [uuid4() for _ in range(60)]
    for job_id in bulk:
        parts.store.add(job_id, upstream_status="queued", polls=1, age_s=0.0, due_in_s=900.0)
    parts.api.pages = [page()]
    await parts.pass_now()  # learns nothing yet: the first pass
    clock[0] += 40.0
    parts.api.pages = [page(*((job_id, "completed") for job_id in bulk[:10]))]
    await parts.pass_now()  # 10 ends in 40 s
    listed = parts.api.listed
    clock[0] += CFG.polling.list_max_staleness_s + 1  # even past the staleness bound of a full budget
    assert await parts.discovery.maybe_pass() is None
    assert parts.api.listed == listed
    clock[0] += 40.0 - CFG.polling.list_max_staleness_s
    assert await parts.discovery.maybe_pass() is not None


async def test_without_the_stream_the_last_jobs_of_a_bulk_are_not_listed_every_few_seconds() -> None:
    """Two jobs left, both submitted ten minutes ago: a page may wait a tenth of that (capped at
    twice list_max_staleness_s), not list_interval_s as for jobs just submitted."""
    clock = [1000.0]
    parts = Parts()
    parts.store.clock = lambda: clock[0]
    parts.discovery.clock = lambda: clock[0]
    for _ in range(2):
        parts.store.add(uuid4(), upstream_status="processing", polls=1, age_s=600.0, due_in_s=120.0)
    parts.api.pages = [page()]
    await parts.pass_now()
    listed = parts.api.listed
    clock[0] += CFG.polling.list_interval_s * 5
    assert await parts.discovery.maybe_pass() is None
    assert parts.api.listed == listed
    clock[0] += 2 * CFG.polling.list_max_staleness_s
    assert await parts.discovery.maybe_pass() is not None


async def test_a_list_failing_while_the_stream_is_down_spreads_the_queued_defers() -> None:
    """Nothing announces the starts of the jobs known queued any more: their long defers are cut,
    spread over the next max_interval_s, and direct polls carry them."""
    parts = Parts()
    defer = policy.queued_defer(CFG.polling)
    queued = [uuid4() for _ in range(5)]
    for job_id in queued:
        parts.store.add(job_id, upstream_status="queued", polls=1, due_in_s=defer)
    soon = parts.store.add(uuid4(), upstream_status="queued", polls=1, due_in_s=5.0)
    parts.api.pages = [Transient(reason="server error http 503", http_status=503)]
    for _ in range(UNHEALTHY_AFTER):
        await parts.pass_now()
    now = parts.store.clock()
    assert all(parts.store.rows[j].next_poll_at <= now + CFG.polling.max_interval_s for j in queued)
    assert soon.next_poll_at <= now + 5.0  # a poll already coming sooner stays


async def test_a_list_failing_while_the_stream_is_up_leaves_the_queued_defers() -> None:
    parts = Parts()
    parts.store.stream_up = True
    defer = policy.queued_defer(CFG.polling)
    job = parts.store.add(uuid4(), upstream_status="queued", polls=1, due_in_s=defer)
    parts.api.pages = [Transient(reason="server error http 503", http_status=503)]
    for _ in range(UNHEALTHY_AFTER):
        await parts.pass_now()
    assert job.next_poll_at > parts.store.clock() + defer - 5  # the stream announces its start


def test_the_gate_describes_discovery_for_readyz() -> None:
    gate = Gate(CFG, fakes.FakeLimiter())
    assert gate.discovery_detail() == "event stream down; list passes carry discovery"
    gate.stream_up = True
    assert gate.discovery_detail() == "event stream connected; list reconciles every 300 s"
    gate.stream_up, gate.discovery_healthy = False, False
    assert gate.discovery_detail() == "event stream down; list pages failing: direct polls only"
    off = configs.loaded({"polling.events": "off"})
    assert Gate(off, fakes.FakeLimiter()).discovery_detail() == "list passes carry discovery"


async def test_a_pass_cut_short_by_list_max_pages_spreads_the_queued_defers() -> None:
    """More changed than list_max_pages pages hold: the starts on the unread pages are seen by no
    pass, so without the stream the jobs known queued get direct polls again."""
    parts = Parts()
    cfg = configs.loaded(
        {"polling.list_max_pages": 1},
    )
    parts.discovery = Discovery(cfg, parts.store, parts.api, parts.gate, "t:t:t")
    job = parts.store.add(
        uuid4(), upstream_status="queued", polls=1, due_in_s=policy.queued_defer(cfg.polling)
    )
    parts.store.discovery[parts.discovery.key] = (NOW - timedelta(hours=1), None, None)
    parts.api.pages = [page((uuid4(), "completed"), (uuid4(), "processing"), total_pages=3)]
    await parts.discovery.step()
    assert parts.api.listed == 1
    assert job.next_poll_at <= parts.store.clock() + cfg.polling.max_interval_s


async def test_a_queue_scan_reads_the_whole_queue_past_list_max_pages() -> None:
    """Three pages of queued jobs with list_max_pages = 1: each page renews 100 defers that would
    each cost a direct poll, so the scan reads all three."""
    parts = Parts()
    cfg = configs.loaded(
        {"polling.list_max_pages": 1},
    )
    parts.discovery = Discovery(cfg, parts.store, parts.api, parts.gate, "t:t:t")
    queued = [uuid4() for _ in range(300)]
    for job_id in queued:
        parts.store.add(job_id, upstream_status="queued", polls=1, due_in_s=10.0)
    parts.api.pages = [page()]
    parts.api.queued_pages = [
        page(*((job_id, "queued") for job_id in queued[n : n + 100]), total_pages=3) for n in (0, 100, 200)
    ]
    await parts.pass_now()
    assert parts.api.filtered == ["queued"] * 3
    now = parts.store.clock()
    assert all(parts.store.rows[j].next_poll_at >= now + policy.queued_defer(cfg.polling) - 1 for j in queued)


def queue_pages(pages: int) -> list[JobPage | Outcome]:
    """A long queue of someone else's jobs, 100 a page."""
    return [
        JobPage(
            total=100 * pages,
            page=n,
            page_size=100,
            total_pages=pages,
            jobs=tuple(ListedJob(uuid4(), "spiderSite", "queued", NOW) for _ in range(100)),
        )
        for n in range(1, pages + 1)
    ]


def scanning(parts: Parts, pages: int) -> list[float]:
    """Make the next pass scan a queue of ``pages`` pages, on a clock 4 s on at every look."""
    for _ in range(6):
        parts.store.add(
            uuid4(), upstream_status="queued", polls=1, due_in_s=0.1 * policy.queued_defer(CFG.polling)
        )
    parts.api.pages = [page()]
    parts.api.queued_pages = queue_pages(pages)
    ticks = [0.0]

    def clock() -> float:
        ticks[0] += 4.0
        return ticks[0]

    parts.discovery.clock = clock
    return ticks


async def test_a_long_pass_renews_its_lease_so_no_other_process_starts_one_meanwhile() -> None:
    parts = Parts()
    ticks = scanning(parts, 12)
    renewed_at: list[float] = []
    renew = parts.store.renew_discovery

    async def renewing(key: str, owner: str, lease_s: float) -> bool:
        renewed_at.append(ticks[0])
        return await renew(key, owner, lease_s)

    parts.store.renew_discovery = renewing  # type: ignore[method-assign]
    await parts.pass_now()
    assert parts.api.filtered == ["queued"] * 12  # the whole queue, minutes of pages
    assert ticks[0] > 5 * CFG.worker.lease_s and len(renewed_at) >= 10
    gaps = [b - a for a, b in zip([0.0, *renewed_at], renewed_at, strict=False)]
    assert max(gaps) < CFG.worker.lease_s / 3 + 16  # a third of the lease, and a page's clock at most
    assert parts.store.discovery[parts.discovery.key][2] is None  # released at the end


async def test_a_pass_whose_lease_was_taken_over_stops_reading_and_is_no_failure() -> None:
    parts = Parts()
    scanning(parts, 12)
    renew = parts.store.renew_discovery

    async def taken_over(key: str, owner: str, lease_s: float) -> bool:
        watermark, last_pass, _ = parts.store.discovery[key]
        parts.store.discovery[key] = (watermark, last_pass, "another-process")
        return await renew(key, owner, lease_s)

    parts.store.renew_discovery = taken_over  # type: ignore[method-assign]
    await parts.pass_now()
    assert len(parts.api.filtered) < 12  # stopped at the first renewal
    assert parts.discovery.failures == 0 and parts.gate.discovery_healthy
    assert parts.store.discovery[parts.discovery.key][2] == "another-process"  # its lease, untouched
