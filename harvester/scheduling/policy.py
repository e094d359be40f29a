"""Pure decisions: what a response means for a job and when to ask about it next.

No I/O and no clock: callers pass ``now`` and a ``random.Random``. Every rule of SPEC section 4 that is
about a single job lives here (the adaptive poll schedule, fault backoff with full jitter, the 404 grace
period, ``give_up_after``) and when list discovery pages; the process-wide brakes are ``brakes``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from harvester.config import PollingConfig
from harvester.scheduling.durations import DurationModel

SITE = "spiderSite"
MAPS = "spiderMaps"

# Decisions a job can end in. ``None`` means: stay pending.
HARVESTED = "harvested"
# List pages may always use this share of the requests being spent: enough to keep discovery
# fresh when fetches fill the budget, small enough to keep requests per job near 1.
LIST_BUDGET_SHARE = 0.02
NOT_FOUND = "not_found"
EXPIRED = "expired"


@dataclass(frozen=True, slots=True)
class JobView:
    """What the policy needs to know about one job."""

    job_type: str | None
    polls: int  # requests already spent, not counting the one being decided
    not_found_count: int
    fault_count: int
    age_s: float  # seconds since it was enqueued
    upstream_status: str | None = None  # last status the API reported (poll or list page)


@dataclass(frozen=True, slots=True)
class Decision:
    state: str | None  # a terminal state, or None to stay pending
    delay_s: float  # when pending: seconds until the next poll
    not_found_count: int
    fault_count: int
    error: str | None = None


def typical_duration(job_type: str | None, cfg: PollingConfig, learned: float | None = None) -> float:
    """How long a job of this type usually takes, from learning if known, else from config."""
    if learned is not None and learned > 0:
        return learned
    if job_type == SITE:
        return cfg.first_poll_site_s
    if job_type == MAPS:
        return cfg.first_poll_maps_s
    return cfg.first_poll_other_s


def initial_delay(cfg: PollingConfig) -> float:
    """Before the first poll the type is unknown: wait for the quickest typical duration."""
    return min(cfg.first_poll_site_s, cfg.first_poll_maps_s, cfg.first_poll_other_s)


def first_poll_wait(
    job: JobView, cfg: PollingConfig, factor: float = 1.0, *, stream_up: bool = False
) -> float:
    """Seconds to hold a never-polled job before spending a request on it (0 = poll now).

    ``factor`` > 1 while list discovery is healthy: the list, not a poll, should find the job.
    Only a job nobody has said anything of is held: one a list page or the stream showed finished
    is fetched at once (that request always harvests), and one they showed queued or started was
    given its due time by what they showed (a started job's comes when its end is overdue), so
    holding it longer would only leave a lost end unseen. While the event stream is up, a job
    neither the stream nor the list has mentioned yet (its ``job.queued`` was lost, or it waits
    deep in a busy queue) waits at least one reconcile interval (and a quarter): its end will be
    announced, and the next full list pass shows where it is; a poll sooner would most likely
    answer 202.
    """
    if job.polls > 0 or job.upstream_status is not None:
        return 0.0
    wait = initial_delay(cfg) * factor
    if stream_up:  # a little past the pass, which may run late
        wait = max(wait, UNSEEN_RECONCILES * cfg.list_reconcile_s)
    return max(0.0, wait - job.age_s)


def jittered(value: float, jitter: float, rng: random.Random) -> float:
    return value * (1.0 + rng.uniform(-jitter, jitter))


def pending_delay(
    job: JobView,
    cfg: PollingConfig,
    rng: random.Random,
    learned: float | None = None,
    factor: float = 1.0,
) -> float:
    """Next poll after a 202: at the typical duration first, then growing steps, capped.

    ``job.polls`` is the number of earlier polls (0 when this 202 answered the first one).
    """
    typical = typical_duration(job.job_type, cfg, learned)
    if job.age_s < typical:
        delay = typical - job.age_s
    else:
        step = max(cfg.min_interval_s, typical * 0.25)
        delay = step * cfg.backoff_factor ** max(0, job.polls - 1)
    delay = min(jittered(delay * factor, cfg.jitter, rng), cfg.max_interval_s)
    return max(cfg.min_interval_s, delay)


def fault_delay(fault_count: int, cfg: PollingConfig, rng: random.Random) -> float:
    """Exponential backoff with full jitter; ``fault_count`` counts this fault too."""
    ceiling = min(cfg.fault_backoff_max_s, cfg.fault_backoff_base_s * 2 ** max(0, fault_count - 1))
    return max(cfg.min_interval_s, rng.uniform(0, ceiling))


def expired(job: JobView, cfg: PollingConfig) -> bool:
    return job.age_s >= cfg.give_up_after_s


def on_pending(
    job: JobView,
    cfg: PollingConfig,
    rng: random.Random,
    learned: float | None = None,
    factor: float = 1.0,
    stream_up: bool = False,
    upstream_status: str | None = None,
) -> Decision:
    """A 202. While the event stream is connected it will announce the end, and a reconciling list
    pass catches what it loses: the next direct poll waits at least ``list_reconcile_s``, so a job
    waiting in a busy queue costs no request while it waits (``queued_defer`` when the 202 said it
    is still queued: its start is announced too)."""
    if expired(job, cfg):
        return Decision(EXPIRED, 0.0, job.not_found_count, 0, "gave up: still not finished")
    delay = pending_delay(job, cfg, rng, learned, factor)
    if stream_up:
        floor = queued_defer(cfg) if (upstream_status or "").lower() == "queued" else cfg.list_reconcile_s
        delay = max(delay, jittered(floor, cfg.jitter, rng))
    return Decision(None, delay, 0, 0)


def on_not_found(job: JobView, cfg: PollingConfig, rng: random.Random) -> Decision:
    """A new job can be briefly unknown: retry a few times over minutes before giving up; one
    pending past ``give_up_after`` already gets no more tries (as after a 202 or a fault)."""
    count = job.not_found_count + 1
    if count > cfg.not_found_retries:
        return Decision(NOT_FOUND, 0.0, count, 0, "404: job not found")
    if expired(job, cfg):
        return Decision(EXPIRED, 0.0, count, 0, "gave up: 404: job not found")
    spacing = cfg.not_found_grace_s / max(1, cfg.not_found_retries)
    delay = max(cfg.min_interval_s, jittered(spacing, cfg.jitter, rng))
    return Decision(None, delay, count, 0, "404: job not found (yet)")


def on_fault(job: JobView, reason: str, cfg: PollingConfig, rng: random.Random) -> Decision:
    count = job.fault_count + 1
    if expired(job, cfg):
        return Decision(EXPIRED, 0.0, job.not_found_count, count, f"gave up: {reason}")
    return Decision(None, fault_delay(count, cfg, rng), job.not_found_count, count, reason)


# ---------------------------------------------------------------- list discovery


def list_pass_interval(used: int, limit: int, window_s: float, cfg: PollingConfig) -> float:
    """Minimum age of the last list pass before the next one.

    A page costs one request whatever it reveals, so its worth depends on the budget left. With
    ``used`` of ``limit`` requests spent in the rolling window, pages may take a fifth of the spare
    budget and always ``LIST_BUDGET_SHARE`` of what is spent: with budget to spare they run every
    ``list_interval_s`` (low latency); when fetches fill the budget, a page waits until it can reveal
    enough finished jobs to stay a small share of the requests, but never past
    ``list_max_staleness_s``.
    """
    spare = max(0, limit - used)
    pages = max(LIST_BUDGET_SHARE * used, spare / 5)
    interval = window_s / pages if pages > 0 else cfg.list_max_staleness_s
    return min(cfg.list_max_staleness_s, max(cfg.list_interval_s, interval))


WAITING_PER_REVEAL = 5  # a page should show the end of a fifth of the jobs known waiting...
MAX_REVEAL = 20  # ...up to this many: a page is then at most a twentieth of a request per job
AGE_SHARE = 0.1  # a page may wait a tenth of how long the newest unseen job has waited already
INFO_STALENESS_FACTOR = 2.0


def list_info_interval(
    finished_per_s: float | None, waiting: int, cfg: PollingConfig, youngest_s: float | None = None
) -> float:
    """Minimum age of the last list pass by what the next page can be expected to reveal.

    Without the event stream, a page is worth its request by the finished jobs it shows. A trickle
    of jobs wants each end seen soon (one is enough: ``0``, the spare budget decides). A bulk that
    waits in SpiderIQ's queue (``waiting`` jobs known queued) finishes at the queue's pace whatever
    we do, and the pages are a cost on every one of its jobs: each page should then show the ends
    of a fifth of the waiting jobs, up to ``MAX_REVEAL``, which at the learned completion rate
    ``finished_per_s`` takes that long. And a job that has already waited minutes (the newest one
    whose end nobody has seen waited ``youngest_s``; the last of a bulk, when few are left) loses
    little by being seen a tenth of that later. Never more than twice ``list_max_staleness_s``: a
    learned rate that dips must not leave ends unseen for minutes.
    """
    by_age = AGE_SHARE * youngest_s if youngest_s and youngest_s > 0 else 0.0
    reveal = min(MAX_REVEAL, waiting / WAITING_PER_REVEAL)
    by_reveal = 0.0
    if reveal > 1:
        rate = finished_per_s if finished_per_s and finished_per_s > 0 else None
        by_reveal = cfg.list_max_staleness_s if rate is None else reveal / rate
    return min(INFO_STALENESS_FACTOR * cfg.list_max_staleness_s, max(by_age, by_reveal))


def list_retry_interval(interval: float, failures: int, cfg: PollingConfig) -> float:
    """After failed list passes, wait twice as long each time (up to ``max_interval_s``).

    A list endpoint that keeps failing (down, or refusing a parameter) would otherwise cost a
    request every few seconds for nothing; direct polls carry the jobs meanwhile.
    """
    if failures <= 0:
        return interval
    return min(max(interval, cfg.max_interval_s), interval * 2.0 ** min(failures, 16))


def running_defer(job_type: str | None, cfg: PollingConfig, learned: float | None = None) -> float:
    """No direct poll for this long once the list has shown a job still running (the stream
    down: the next pages show its end)."""
    return max(cfg.list_fallback_s, 3.0 * typical_duration(job_type, cfg, learned))


OVERDUE_RUNS = 2.0


def started_defer(
    job_type: str | None, cfg: PollingConfig, durations: DurationModel | None = None, now: float = 0.0
) -> float:
    """With the stream up, a started job whose end was not announced within this long of its
    start is polled directly: its end event was lost, or it was cancelled (no event says so).

    Learned (``DurationModel.overdue``): a little past the time by which nearly all runs of its
    type end (a poll sooner would mostly find the job running, one later leaves a lost end unseen
    longer). Until that is known, twice the typical run, never less than twice the configured
    one: the first runs to end are the short ones, so the mean learned from them is short too."""
    if durations is not None and (overdue := durations.overdue(job_type, now)) is not None:
        return overdue
    learned = durations.get(job_type) if durations is not None else None
    return OVERDUE_RUNS * max(typical_duration(job_type, cfg), typical_duration(job_type, cfg, learned))


QUEUED_DEFER_RECONCILES = 3
UNSEEN_RECONCILES = 1.25


def queued_defer(cfg: PollingConfig) -> float:
    """No direct poll for this long once a job is known to wait in SpiderIQ's queue while the event
    stream is connected: a busy queue can hold it for many minutes, the stream announces its start
    (and its end), and a reconciling list pass catches what the stream loses; a poll meanwhile would
    only answer 202."""
    return QUEUED_DEFER_RECONCILES * cfg.list_reconcile_s


def list_stop_at(reference: float | None, cfg: PollingConfig) -> float | None:
    """The oldest ``updated_at`` (Unix time) a pass must read back to: the reference minus the overlap.

    The overlap is compared with the API's own timestamps, so it is taken in API seconds.
    """
    if reference is None:
        return None
    return reference - cfg.list_overlap_api_s


def list_should_continue(
    page: int,
    total_pages: int,
    oldest_on_page: float | None,
    stop_at: float | None,
    cfg: PollingConfig,
    seen_up_to: float | None = None,
) -> bool:
    """Page further back while the page still reaches past the watermark (minus the overlap).

    ``seen_up_to`` is the watermark an earlier pass read back from: a page whose oldest row is no
    newer than it ends the pass, overlap or not. Its rows and everything behind them were read
    before (the overlap is the rest of that page), and a bulk submitted in one second would
    otherwise be read again whole by every pass: SpiderIQ's timestamps have whole seconds.
    """
    return page < min(total_pages, cfg.list_max_pages) and _reaches_back(oldest_on_page, stop_at, seen_up_to)


def list_cut_short(
    page: int,
    total_pages: int,
    oldest_on_page: float | None,
    stop_at: float | None,
    cfg: PollingConfig,
    seen_up_to: float | None = None,
) -> bool:
    """The pass ended at ``list_max_pages`` with pages still reaching back past the watermark:
    what changed on the pages it did not read is not seen by any pass."""
    return cfg.list_max_pages <= page < total_pages and _reaches_back(oldest_on_page, stop_at, seen_up_to)


def _reaches_back(oldest_on_page: float | None, stop_at: float | None, seen_up_to: float | None) -> bool:
    """The pages behind this one may hold changes no pass has read."""
    if oldest_on_page is None or (seen_up_to is not None and oldest_on_page <= seen_up_to):
        return False
    return stop_at is None or oldest_on_page >= stop_at
