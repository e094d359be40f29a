"""The queue watch: which jobs SpiderIQ's queue went past, by type and in queue order."""

from __future__ import annotations

from uuid import uuid4

from harvester.passing import Lull, QueueWatch

SITE, MAPS = "spiderSite", "spiderMaps"


def test_a_start_passes_the_jobs_of_its_type_queued_before_it() -> None:
    watch = QueueWatch()
    first, second, maps, third, fourth = (uuid4() for _ in range(5))
    for job_id, kind in ((first, SITE), (second, SITE), (maps, MAPS), (third, SITE), (fourth, SITE)):
        watch.queued(job_id, kind)
    assert watch.started(third) == [(first, SITE), (second, SITE)]
    assert len(watch) == 2  # the maps job and the fourth still wait
    assert watch.started(fourth) == []  # nothing before it is left
    assert watch.type_of(maps) == MAPS


def test_each_job_is_passed_once_and_ends_leave_the_watch() -> None:
    watch = QueueWatch()
    first, second, third = uuid4(), uuid4(), uuid4()
    for job_id in (first, second, third):
        watch.queued(job_id, SITE)
    watch.ended(first)  # it completed: its start event was lost, its end was not
    assert watch.started(third) == [(second, SITE)]
    assert watch.started(second) == []  # already passed: no second early poll
    assert len(watch) == 0


def test_unknown_jobs_and_jobs_without_a_type_tell_nothing() -> None:
    watch = QueueWatch()
    untyped, known = uuid4(), uuid4()
    watch.queued(untyped, None)
    watch.queued(known, SITE)
    watch.queued(known, SITE)  # a repeated event keeps its first place
    assert watch.started(uuid4()) == []  # its job.queued was never seen
    assert watch.started(untyped) == []
    assert len(watch) == 1
    watch.ended(uuid4())  # harmless


def test_the_watch_forgets_the_oldest_jobs_past_its_limit() -> None:
    watch = QueueWatch(limit=3)
    jobs = [uuid4() for _ in range(5)]
    for job_id in jobs:
        watch.queued(job_id, SITE)
    assert len(watch) == 3
    assert watch.type_of(jobs[0]) is None
    assert watch.started(jobs[4]) == [(jobs[2], SITE), (jobs[3], SITE)]


def test_an_end_for_a_job_whose_start_never_came_tells_an_event_was_lost() -> None:
    watch = QueueWatch()
    waited, passed, started, later = uuid4(), uuid4(), uuid4(), uuid4()
    for job_id in (passed, started, waited, later):
        watch.queued(job_id, SITE)
    assert watch.started(started) == [(passed, SITE)]
    assert watch.ended(waited)  # still waiting when it ended: its start was lost
    assert watch.ended(passed)  # passed, then ended: its start was lost too
    watch.seen_start(later)
    assert watch.started(later) == []
    assert not watch.ended(later)  # its start came
    assert not watch.ended(started)
    assert not watch.ended(uuid4())  # never seen queued: nothing to tell


def test_a_passed_job_that_starts_after_all_is_not_counted_lost() -> None:
    watch = QueueWatch()
    first, second = uuid4(), uuid4()
    watch.queued(first, SITE)
    watch.queued(second, SITE)
    assert watch.started(second) == [(first, SITE)]
    watch.seen_start(first)  # a queue out of order, not a lost event
    assert not watch.ended(first)


def test_a_lull_asks_for_one_sweep_per_silence_and_only_while_events_are_lost() -> None:
    lull = Lull(floor_s=5.0, memory_s=900.0)
    for t in range(10):  # events a second apart
        lull.event(float(t))
    assert not lull.sweep_due(100.0)  # silent, but nothing was lost: no sweep
    lull.lost(9.0)
    lull.event(10.0)
    assert not lull.sweep_due(14.0)  # four gaps: not silent yet (at least max(5 s, 10 gaps))
    assert lull.sweep_due(25.0)
    assert not lull.sweep_due(30.0)  # once per silence
    lull.event(31.0)
    assert lull.sweep_due(200.0)  # the next silence
    lull.event(1000.0)
    assert not lull.sweep_due(2000.0)  # the loss is long past
    lull.lost(2000.0)
    lull.reset()  # a dropped stream: its reconnect pass covers the gap
    assert not lull.sweep_due(3000.0)
