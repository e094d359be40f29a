"""The poll policy: pure decisions over plain values, checked with tables of cases."""

from __future__ import annotations

import random

import pytest

from harvester.config import PollingConfig
from harvester.scheduling import policy
from tests.support import configs

CFG = PollingConfig()


def view(
    job_type: str | None = "spiderSite", polls: int = 1, nf: int = 0, faults: int = 0, age: float = 25.0
) -> policy.JobView:
    return policy.JobView(job_type, polls, nf, faults, age)


@pytest.mark.parametrize(
    ("job_type", "expected"),
    [("spiderSite", 20.0), ("spiderMaps", 60.0), ("spiderVerify", 30.0), (None, 30.0)],
)
def test_typical_duration_by_type(job_type: str | None, expected: float) -> None:
    assert policy.typical_duration(job_type, CFG) == expected


def test_learned_duration_wins_over_config() -> None:
    assert policy.typical_duration("spiderSite", CFG, learned=14.0) == 14.0


def test_first_poll_waits_for_the_quickest_typical_duration() -> None:
    assert policy.first_poll_wait(view(polls=0, age=5.0), CFG) == pytest.approx(15.0)
    assert policy.first_poll_wait(view(polls=0, age=500.0), CFG) == 0.0
    assert policy.first_poll_wait(view(polls=2, age=1.0), CFG) == 0.0


def test_pending_before_typical_time_waits_until_then() -> None:
    rng = random.Random(1)
    delay = policy.pending_delay(view("spiderMaps", polls=0, age=20.0), CFG, rng)
    assert 40 * 0.8 <= delay <= 40 * 1.2


def test_pending_intervals_grow_and_are_capped() -> None:
    cfg = PollingConfig(jitter=0.0)
    rng = random.Random(1)
    delays = [policy.pending_delay(view(polls=n, age=100.0), cfg, rng) for n in range(1, 30)]
    assert delays == sorted(delays)
    assert delays[0] == pytest.approx(5.0)  # a quarter of the 20 s typical site duration
    assert max(delays) == cfg.max_interval_s


@pytest.mark.parametrize("polls", [0, 1, 5, 50])
def test_pending_never_below_the_minimum_interval(polls: int) -> None:
    cfg = PollingConfig(first_poll_site_s=1.0, jitter=0.5)
    for seed in range(50):
        delay = policy.pending_delay(view(polls=polls, age=100), cfg, random.Random(seed))
        assert delay >= cfg.min_interval_s


def test_fault_backoff_is_full_jitter_under_an_exponential_ceiling() -> None:
    rng = random.Random(7)
    for count in range(1, 12):
        ceiling = min(CFG.fault_backoff_max_s, CFG.fault_backoff_base_s * 2 ** (count - 1))
        samples = [policy.fault_delay(count, CFG, rng) for _ in range(200)]
        assert all(CFG.min_interval_s <= s <= max(ceiling, CFG.min_interval_s) for s in samples)


def test_not_found_retries_then_gives_up() -> None:
    rng = random.Random(3)
    job = view(nf=0)
    for expected in range(1, CFG.not_found_retries + 1):
        decision = policy.on_not_found(job, CFG, rng)
        assert decision.state is None
        assert decision.not_found_count == expected
        assert decision.delay_s >= CFG.min_interval_s
        job = view(nf=decision.not_found_count)
    final = policy.on_not_found(job, CFG, rng)
    assert final.state == policy.NOT_FOUND


def test_not_found_retries_span_the_grace_period() -> None:
    cfg = PollingConfig(jitter=0.0)
    total = sum(
        policy.on_not_found(view(nf=n), cfg, random.Random()).delay_s for n in range(cfg.not_found_retries)
    )
    assert total == pytest.approx(cfg.not_found_grace_s)


def test_pending_past_give_up_after_expires() -> None:
    decision = policy.on_pending(view(age=CFG.give_up_after_s + 1), CFG, random.Random())
    assert decision.state == policy.EXPIRED


def test_fault_counts_and_clears_not_found() -> None:
    decision = policy.on_fault(view(faults=2, nf=1), "503", CFG, random.Random())
    assert decision.state is None
    assert decision.fault_count == 3
    assert decision.error == "503"


def test_a_pending_answer_resets_fault_and_404_counters() -> None:
    decision = policy.on_pending(view(faults=4, nf=2), CFG, random.Random())
    assert (decision.fault_count, decision.not_found_count) == (0, 0)


# ---------------------------------------------------------------- list discovery and budget


def test_a_job_the_list_showed_finished_is_fetched_at_once() -> None:
    for status in ("completed", "failed", "cancelled", "canceled", "Completed"):
        job = policy.JobView("spiderSite", 0, 0, 0, 1.0, upstream_status=status)
        assert policy.first_poll_wait(job, CFG, factor=3.0) == 0.0


def test_a_job_the_list_or_stream_showed_queued_or_running_is_polled_when_its_defer_ends() -> None:
    """What they showed gave the job its due time (a started job's: when its end is overdue);
    holding it for the unseen jobs' first-poll wait on top would leave a lost end unseen longer."""
    for status in ("queued", "processing", "running"):
        job = policy.JobView("spiderSite", 0, 0, 0, 1.0, upstream_status=status)
        assert policy.first_poll_wait(job, CFG, factor=6.0, stream_up=True) == 0.0
    unseen = policy.JobView("spiderSite", 0, 0, 0, 1.0)
    assert policy.first_poll_wait(unseen, CFG, factor=3.0) == pytest.approx(59.0)


@pytest.mark.parametrize(
    ("used", "expected"),
    [
        (0, CFG.list_interval_s),  # idle budget: as often as allowed
        (35, CFG.list_interval_s),  # light load: a quarter of the spare budget is plenty
        (80, 15.0),  # spare 20 -> 4 pages per window
        (98, 60.0 / (policy.LIST_BUDGET_SHARE * 98)),  # full: a small share of what is spent
        (100, 60.0 / (policy.LIST_BUDGET_SHARE * 100)),
    ],
)
def test_list_pass_interval_spends_spare_budget_and_a_share_of_a_full_one(used: int, expected: float) -> None:
    got = policy.list_pass_interval(used, 100, 60.0, CFG)
    assert got == pytest.approx(min(expected, CFG.list_max_staleness_s))


def test_list_pass_interval_grows_as_the_window_fills() -> None:
    intervals = [policy.list_pass_interval(used, 100, 60.0, CFG) for used in range(0, 91, 5)]
    assert intervals == sorted(intervals)
    for used in range(0, 101):
        got = policy.list_pass_interval(used, 100, 60.0, CFG)
        assert CFG.list_interval_s <= got <= CFG.list_max_staleness_s


def test_list_pass_interval_is_capped_by_staleness() -> None:
    stale = PollingConfig(list_max_staleness_s=10.0)
    assert policy.list_pass_interval(100, 100, 60.0, stale) == 10.0


def test_list_overlap_is_compared_in_api_time() -> None:
    """Durations are divided by speed, but the API's timestamps run at API time."""
    scaled = configs.loaded({"speed": 30.0, "api.base_url": "http://127.0.0.1:1"}).polling
    assert scaled.list_overlap_s == pytest.approx(5.0 / 30)
    assert policy.list_stop_at(1000.0, scaled) == pytest.approx(995.0)
    assert policy.list_stop_at(None, scaled) is None


def test_failed_list_passes_back_off_up_to_the_poll_cap() -> None:
    assert policy.list_retry_interval(6.0, 0, CFG) == 6.0
    waits = [policy.list_retry_interval(6.0, n, CFG) for n in range(1, 12)]
    assert waits[:3] == [12.0, 24.0, 48.0]
    assert waits == sorted(waits) and waits[-1] == CFG.max_interval_s
    assert policy.list_retry_interval(500.0, 3, CFG) == 500.0  # never shorter than the plain interval


def test_with_the_stream_up_a_pending_job_waits_for_the_stream_or_the_reconcile_pass() -> None:
    job = view(polls=0, age=0.0)
    plain = policy.on_pending(job, CFG, random.Random(3))
    streamed = policy.on_pending(job, CFG, random.Random(3), stream_up=True)
    assert plain.delay_s < CFG.list_reconcile_s * (1 - CFG.jitter)
    assert streamed.delay_s >= CFG.list_reconcile_s * (1 - CFG.jitter)


def test_with_the_stream_up_a_job_a_202_shows_queued_waits_for_its_announced_start() -> None:
    job = view(polls=0, age=0.0)
    queued = policy.on_pending(job, CFG, random.Random(3), stream_up=True, upstream_status="queued")
    running = policy.on_pending(job, CFG, random.Random(3), stream_up=True, upstream_status="processing")
    off = policy.on_pending(job, CFG, random.Random(3), stream_up=False, upstream_status="queued")
    assert queued.delay_s >= policy.queued_defer(CFG) * (1 - CFG.jitter)
    assert running.delay_s < policy.queued_defer(CFG) * (1 - CFG.jitter)
    assert off.delay_s < CFG.list_reconcile_s  # without the stream nothing announces the start


@pytest.mark.parametrize(
    ("rate", "waiting", "expected"),
    [
        (0.25, 0, 0.0),  # a trickle: one end per page is enough, the spare budget decides
        (0.25, 5, 0.0),
        (0.25, 25, 20.0),  # 5 ends at 0.25/s take 20 s
        (1.0, 10, 2.0),  # a few waiting at a brisk pace: no slower than the ends come
        (0.25, 50, 40.0),  # a bulk: a fifth of it, 10 ends, a page
        (0.5, 100, 40.0),  # 20 ends a page...
        (0.5, 1000, 40.0),  # ...and no more than 20
        (0.25, 100, 60.0),  # a slow queue: capped at twice list_max_staleness_s
        (None, 100, 30.0),  # nothing learned yet
        (0.0, 100, 30.0),
    ],
)
def test_list_info_interval_paces_pages_by_the_ends_they_can_show(
    rate: float | None, waiting: int, expected: float
) -> None:
    assert policy.list_info_interval(rate, waiting, CFG) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("youngest_s", "expected"),
    [
        (None, 0.0),  # nothing pending
        (5.0, 0.5),  # a fresh job: the spare budget decides, as for a trickle
        (200.0, 20.0),  # jobs that waited minutes: a page may wait a tenth of that
        (3600.0, 60.0),  # ...never past twice list_max_staleness_s
    ],
)
def test_list_info_interval_lets_jobs_that_waited_long_wait_a_little_longer(
    youngest_s: float | None, expected: float
) -> None:
    assert policy.list_info_interval(0.25, 0, CFG, youngest_s) == pytest.approx(expected)
    assert policy.list_info_interval(0.25, 50, CFG, youngest_s) == pytest.approx(max(40.0, expected))


def test_with_the_stream_up_a_job_nobody_mentioned_waits_a_reconcile_interval_for_its_first_poll() -> None:
    unseen = policy.JobView("spiderSite", 0, 0, 0, 0.0)
    started = policy.JobView("spiderSite", 0, 0, 0, 0.0, upstream_status="processing")
    assert policy.first_poll_wait(unseen, CFG, 6.0, stream_up=True) == 1.25 * CFG.list_reconcile_s
    assert policy.first_poll_wait(unseen, CFG, 6.0) < CFG.list_reconcile_s
    # one the stream showed started is polled when its start-defer ends, not a reconcile later
    assert policy.first_poll_wait(started, CFG, 6.0, stream_up=True) < CFG.list_reconcile_s


def test_a_pass_stops_at_the_first_page_reaching_no_further_than_the_last_watermark() -> None:
    watermark = 1_000_000.0
    stop_at = policy.list_stop_at(watermark, CFG)
    assert stop_at is not None
    # a page still newer than the watermark: the next one may hold more changes
    assert policy.list_should_continue(1, 5, watermark + 1, stop_at, CFG, watermark)
    # a page reaching back to it: everything behind was read before, even inside the overlap
    # (a bulk submitted in one second shares one updated_at: it is not read again whole)
    assert not policy.list_should_continue(1, 5, watermark, stop_at, CFG, watermark)
    assert policy.list_should_continue(1, 5, watermark, stop_at, CFG)  # the overlap alone reads on
    assert not policy.list_should_continue(1, 5, stop_at - 1, stop_at, CFG)
    assert not policy.list_should_continue(5, 5, watermark + 1, stop_at, CFG, watermark)  # last page
