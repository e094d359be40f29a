"""What an answer to a results request means for its job: the next step, as a plain value.

The worker asks ``first_poll`` before it spends a request on a claimed job and ``after`` once the
answer is in; both say what to write and never write it. A 200 or a 410 carries a body to store
(``Store``); a 202, a 404 or a transport fault moves the job along its poll schedule (``Again``) or
ends it (``End``: expired, not found), by the rules of ``policy``; a refused credential (401, 403)
or a 429 leaves the job exactly as it was, the request counted, due again when the pause ends
(``Paused``). What an answer does to the process-wide brakes is ``brakes.after``. No I/O and no
clock: ``Situation`` carries what the process knows beside the job, ``rng`` the jitter.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import assert_never

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
from harvester.scheduling import brakes, policy
from harvester.scheduling.durations import DurationModel


@dataclass(frozen=True, slots=True)
class Situation:
    """What the process knows beside the job when it decides (the gate reads it out)."""

    poll_factor: float  # > 1 while discovery finds finished jobs (``Gate.poll_factor``)
    stream_up: bool  # the credential's event stream is connected
    durations: DurationModel  # the learned run times, only read here
    now_unix: float  # wall-clock time, for a 429's X-RateLimit-Reset
    default_pause_s: float  # a 429 that says nothing of its length pauses this long


@dataclass(frozen=True, slots=True)
class Store:
    """A body came back (200, 410): store it; the store says harvested, rejected, failed or
    cancelled."""

    outcome: Completed | Gone


@dataclass(frozen=True, slots=True)
class Again:
    """The job stays pending and is polled again on its schedule."""

    change: Reschedule


@dataclass(frozen=True, slots=True)
class Paused:
    """A credential refused or a 429: the request is counted, the job otherwise left as it was,
    due again when the pause ends."""

    change: Reschedule


@dataclass(frozen=True, slots=True)
class End:
    """The job ends without a body (not found, expired)."""

    change: Finish


Step = Store | Again | Paused | End


def view(job: ClaimedJob) -> policy.JobView:
    """What the policy needs to know of a claimed job."""
    return policy.JobView(
        job.job_type, job.polls, job.not_found_count, job.fault_count, job.age_s, job.upstream_status
    )


def first_poll(job: policy.JobView, cfg: PollingConfig, situation: Situation) -> Reschedule | None:
    """A never-polled job held back before any request is spent on it (``policy.first_poll_wait``),
    or None to send the request now."""
    hold = policy.first_poll_wait(job, cfg, situation.poll_factor, stream_up=situation.stream_up)
    if hold <= 0:
        return None
    return Reschedule(
        delay_s=hold,
        polls_spent=0,
        http_status=None,
        not_found_count=job.not_found_count,
        fault_count=job.fault_count,
        error=None,
    )


def after(
    job: policy.JobView, outcome: Outcome, cfg: PollingConfig, rng: random.Random, situation: Situation
) -> Step:
    """The step one answer leads to."""
    status = outcome.http_status
    if isinstance(outcome, Completed | Gone):
        return Store(outcome)
    if isinstance(outcome, Pending):
        job_type = outcome.job_type or job.job_type
        decision = policy.on_pending(
            job,
            cfg,
            rng,
            situation.durations.get(job_type),
            situation.poll_factor,
            stream_up=situation.stream_up,
            upstream_status=outcome.upstream_status,
        )
        return _decided(decision, status, outcome.upstream_status, outcome.job_type)
    if isinstance(outcome, NotFound):
        return _decided(policy.on_not_found(job, cfg, rng), status)
    if isinstance(outcome, AuthFailed):
        return _paused(job, cfg.auth_recheck_s, status, f"{status}: {outcome.detail}")
    if isinstance(outcome, RateLimited):
        pause = brakes.rate_pause_s(
            outcome.retry_after_s, outcome.reset_at, situation.now_unix, situation.default_pause_s
        )
        return _paused(job, max(cfg.min_interval_s, pause), status, "429: rate limited")
    if isinstance(outcome, Transient):
        return _decided(policy.on_fault(job, outcome.reason, cfg, rng), status)
    assert_never(outcome)


def _paused(job: policy.JobView, delay_s: float, status: int | None, error: str) -> Paused:
    return Paused(
        Reschedule(
            delay_s=delay_s,
            polls_spent=1,
            http_status=status,
            not_found_count=job.not_found_count,
            fault_count=job.fault_count,
            error=error,
        )
    )


def _decided(
    decision: policy.Decision,
    status: int | None,
    upstream_status: str | None = None,
    job_type: str | None = None,
) -> Again | End:
    if decision.state is None:
        return Again(
            Reschedule(
                delay_s=decision.delay_s,
                polls_spent=1,
                http_status=status,
                upstream_status=upstream_status,
                job_type=job_type,
                not_found_count=decision.not_found_count,
                fault_count=decision.fault_count,
                error=decision.error,
            )
        )
    return End(
        Finish(
            state=decision.state,
            polls_spent=1,
            http_status=status,
            not_found_count=decision.not_found_count,
            fault_count=decision.fault_count,
            error=decision.error,
        )
    )
