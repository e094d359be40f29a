"""The queue watch: which jobs SpiderIQ's queue went past, by type and in queue order."""

from __future__ import annotations

from uuid import uuid4

from harvester.scheduling.queue_watch import QueueWatch

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
    # each still has its type: a passed job's own job.started names none, and its end is
    # overdue by its type's runs, not the slowest type's
    assert [watch.type_of(j) for j in (first, second, third)] == [SITE, SITE, SITE]


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
