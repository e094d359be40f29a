"""What each answer to a results request means for its job: ``scheduling.answers``, as tables.

Pure: the job, the answer, the configuration and what the process knows (``Situation``) in; the
step the worker writes out. Jitter is off so every delay is exact.
"""

from __future__ import annotations

import random
from uuid import uuid4

import pytest

from harvester.api.outcomes import (
    AuthFailed,
    Completed,
    Gone,
    NotFound,
    Outcome,
    Pending,
    RateLimited,
    Transient,
)
from harvester.config import PollingConfig
from harvester.ports import ClaimedJob, Finish, Reschedule
from harvester.scheduling import answers, brakes, policy
from harvester.scheduling.durations import DurationModel

CFG = PollingConfig(jitter=0.0)
NOW_UNIX = 1_700_000_000.0
DEFAULT_PAUSE_S = 60.0
OLD = CFG.give_up_after_s + 1.0


def situation(
    *, factor: float = 1.0, stream_up: bool = False, durations: DurationModel | None = None
) -> answers.Situation:
    return answers.Situation(
        poll_factor=factor,
        stream_up=stream_up,
        durations=durations or DurationModel(),
        now_unix=NOW_UNIX,
        default_pause_s=DEFAULT_PAUSE_S,
    )


def job(
    *, polls: int = 1, age: float = 3600.0, nf: int = 0, faults: int = 0, upstream: str | None = None
) -> policy.JobView:
    return policy.JobView("spiderSite", polls, nf, faults, age, upstream)


def learned(job_type: str, seconds: float) -> DurationModel:
    durations = DurationModel()
    durations.observe(job_type, seconds)
    return durations


def after(outcome: Outcome, view: policy.JobView, known: answers.Situation | None = None) -> answers.Step:
    return answers.after(view, outcome, CFG, random.Random(1), known or situation())


def again(
    delay: float,
    status: int | None,
    *,
    nf: int = 0,
    faults: int = 0,
    error: str | None = None,
    upstream_status: str | None = None,
    job_type: str | None = None,
) -> answers.Again:
    return answers.Again(
        Reschedule(
            delay_s=delay,
            polls_spent=1,
            http_status=status,
            not_found_count=nf,
            fault_count=faults,
            error=error,
            upstream_status=upstream_status,
            job_type=job_type,
        )
    )


def test_a_claimed_job_is_seen_as_the_policy_needs_it() -> None:
    claimed = ClaimedJob(uuid4(), 7, "spiderMaps", "queued", 3, 1, 2, 99.5)
    assert answers.view(claimed) == policy.JobView("spiderMaps", 3, 1, 2, 99.5, "queued")


@pytest.mark.parametrize(
    "body",
    [
        Completed(body=b"{}", doc={}),
        Gone(body=b"{}", doc={}, upstream_status="cancelled"),
        Gone(body=b"{}", doc={}, upstream_status="failed", error_message="crawl failed"),
    ],
)
def test_a_body_is_stored_whatever_the_job_had_been(body: Completed | Gone) -> None:
    assert after(body, job(age=OLD, nf=3, faults=2)) == answers.Store(body)


@pytest.mark.parametrize(
    ("outcome", "view", "known", "step"),
    [
        # 202: a quarter of the typical run (20 s for a site), growing with each poll
        (
            Pending(upstream_status="processing"),
            job(),
            situation(),
            again(5.0, 202, upstream_status="processing"),
        ),
        (Pending(), job(polls=3), situation(), again(5.0 * CFG.backoff_factor**2, 202)),
        # the type the answer names is kept, and the learned run time of that type paces the poll
        (
            Pending(job_type="spiderMaps"),
            job(polls=0, age=50.0),
            situation(durations=learned("spiderMaps", 100.0)),
            again(50.0, 202, job_type="spiderMaps"),
        ),
        # list discovery healthy: direct polls are rarer
        (Pending(), job(), situation(factor=3.0), again(15.0, 202)),
        # the stream up: it announces the end; nothing sooner than a reconcile
        (Pending(), job(), situation(stream_up=True), again(CFG.list_reconcile_s, 202)),
        (
            Pending(upstream_status="queued"),
            job(),
            situation(stream_up=True),
            again(policy.queued_defer(CFG), 202, upstream_status="queued"),
        ),
        # 404: a few tries over not_found_grace_s
        (
            NotFound(),
            job(nf=1),
            situation(),
            again(CFG.not_found_grace_s / CFG.not_found_retries, 404, nf=2, error="404: job not found (yet)"),
        ),
        # a transport fault: backoff with full jitter, never under min_interval_s
        (
            Transient(reason="server error http 503", http_status=503),
            job(faults=0, nf=2),
            situation(),
            again(CFG.min_interval_s, 503, nf=2, faults=1, error="server error http 503"),
        ),
    ],
)
def test_a_job_still_pending_is_polled_again_on_its_schedule(
    outcome: Outcome, view: policy.JobView, known: answers.Situation, step: answers.Step
) -> None:
    assert after(outcome, view, known) == step


@pytest.mark.parametrize(
    ("outcome", "view", "finish"),
    [
        (Pending(), job(age=OLD), Finish("expired", 1, 202, 0, 0, "gave up: still not finished")),
        (
            NotFound(),
            job(nf=CFG.not_found_retries),
            Finish("not_found", 1, 404, CFG.not_found_retries + 1, 0, "404: job not found"),
        ),
        (NotFound(), job(age=OLD), Finish("expired", 1, 404, 1, 0, "gave up: 404: job not found")),
        (
            Transient(reason="timeout"),
            job(age=OLD, faults=4),
            Finish("expired", 1, None, 0, 5, "gave up: timeout"),
        ),
    ],
)
def test_a_job_ends_without_a_body_when_it_cannot_be_found_or_waited_too_long(
    outcome: Outcome, view: policy.JobView, finish: Finish
) -> None:
    assert after(outcome, view) == answers.End(finish)


def paused(delay: float, status: int, error: str) -> answers.Paused:
    # the job as it was: its 404 and fault counts stay, only the request is counted
    return answers.Paused(Reschedule(delay, 1, status, 2, 3, error))


@pytest.mark.parametrize(
    ("outcome", "step"),
    [
        (AuthFailed(detail="revoked", http_status=401), paused(CFG.auth_recheck_s, 401, "401: revoked")),
        (AuthFailed(detail="forbidden", http_status=403), paused(CFG.auth_recheck_s, 403, "403: forbidden")),
        (RateLimited(retry_after_s=30.0), paused(30.0, 429, "429: rate limited")),
        (RateLimited(reset_at=NOW_UNIX + 90.0), paused(90.0, 429, "429: rate limited")),
        (RateLimited(), paused(DEFAULT_PAUSE_S, 429, "429: rate limited")),
        (RateLimited(retry_after_s=0.5), paused(CFG.min_interval_s, 429, "429: rate limited")),
        (RateLimited(retry_after_s=10 * 86400.0), paused(brakes.MAX_RATE_PAUSE_S, 429, "429: rate limited")),
    ],
)
def test_a_pause_leaves_the_job_as_it_was_until_it_ends(outcome: Outcome, step: answers.Step) -> None:
    """Even a job past give_up_after_s: a pause says nothing about the job."""
    assert after(outcome, job(nf=2, faults=3, age=OLD)) == step


@pytest.mark.parametrize(
    ("view", "known", "hold"),
    [
        (job(polls=0, age=5.0), situation(), 15.0),  # the quickest typical run (20 s) minus its age
        (job(polls=0, age=5.0), situation(factor=3.0), 55.0),  # the list should find it first
        (job(polls=0, age=5.0), situation(stream_up=True), 1.25 * CFG.list_reconcile_s - 5.0),
        (job(polls=0, age=500.0), situation(), None),  # waited long enough
        (job(polls=1, age=5.0), situation(), None),  # polled before
        (job(polls=0, age=5.0, upstream="completed"), situation(), None),  # a page or the stream saw it end
        (job(polls=0, age=5.0, upstream="queued"), situation(stream_up=True), None),  # due time set
    ],
)
def test_a_young_job_is_held_before_its_first_request(
    view: policy.JobView, known: answers.Situation, hold: float | None
) -> None:
    held = answers.first_poll(view, CFG, known)
    if hold is None:
        assert held is None
    else:
        assert held == Reschedule(hold, 0, None, view.not_found_count, view.fault_count, None)
