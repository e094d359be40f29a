"""What the stream's job events mean for a job's next direct poll: ``scheduling.stream_rules``."""

from __future__ import annotations

from uuid import uuid4

import pytest

from harvester.config import PollingConfig
from harvester.ports import Listed
from harvester.scheduling import policy
from harvester.scheduling.durations import OVERDUE_SAMPLES, DurationModel
from harvester.scheduling.stream_rules import Running, StreamRules

CFG = PollingConfig()
SITE, MAPS = policy.SITE, policy.MAPS
NOW = 5000.0


def rules() -> StreamRules:
    return StreamRules(CFG, DurationModel())


def test_a_queued_job_waits_the_queued_defer_and_is_watched() -> None:
    seen = rules()
    job_id = uuid4()
    assert seen.queued(job_id, SITE) == Running(Listed(job_id, "queued", SITE, policy.queued_defer(CFG)))
    assert len(seen.queue) == 1 and seen.queue.type_of(job_id) == SITE


def test_a_started_job_is_polled_when_its_end_is_overdue() -> None:
    seen = rules()
    job_id = uuid4()
    assert seen.started(job_id, "processing", SITE, NOW) == Running(
        Listed(job_id, "processing", SITE, policy.started_defer(SITE, CFG))
    )


def test_a_start_that_names_no_type_takes_the_type_its_queued_event_named() -> None:
    seen = rules()
    job_id = uuid4()
    seen.queued(job_id, SITE)
    running = seen.started(job_id, "processing", None, NOW)
    assert running.job == Listed(job_id, "processing", SITE, policy.started_defer(SITE, CFG))
    assert len(seen.queue) == 0  # it left the watch


def test_a_start_of_unknown_type_waits_for_the_slowest_type() -> None:
    job_id = uuid4()
    running = rules().started(job_id, "processing", None, NOW)
    slowest = max(policy.started_defer(SITE, CFG), policy.started_defer(MAPS, CFG))
    assert running.job == Listed(job_id, "processing", None, slowest)
    assert slowest == policy.started_defer(MAPS, CFG)


def test_a_start_passes_the_jobs_of_its_type_queued_before_it() -> None:
    seen = rules()
    passed, other_type, started, later = uuid4(), uuid4(), uuid4(), uuid4()
    for job_id, kind in ((passed, SITE), (other_type, MAPS), (started, SITE), (later, SITE)):
        seen.queued(job_id, kind)
    running = seen.started(started, "processing", None, NOW)
    overdue = policy.started_defer(SITE, CFG)
    assert running.passed == (Listed(passed, "queued", SITE, overdue),)
    assert {seen.queue.type_of(j) for j in (other_type, later)} == {MAPS, SITE}
    assert len(seen.queue) == 2  # the other type and the later one still wait


def test_an_end_leaves_the_watch_so_a_later_start_passes_nothing() -> None:
    seen = rules()
    ended, started = uuid4(), uuid4()
    seen.queued(ended, SITE)
    seen.queued(started, SITE)
    seen.finished(ended)
    assert seen.started(started, "processing", SITE, NOW).passed == ()


def test_the_learned_run_times_set_the_overdue_defer() -> None:
    durations = DurationModel()
    for _ in range(OVERDUE_SAMPLES):
        durations.observe(SITE, 10.0)
    seen = StreamRules(CFG, durations)
    job_id = uuid4()
    running = seen.started(job_id, "processing", SITE, NOW)
    assert running.job.defer_s == pytest.approx(durations.overdue(SITE, NOW) or 0.0)
    assert running.job.defer_s < policy.started_defer(SITE, CFG)  # shorter than the configured guess
