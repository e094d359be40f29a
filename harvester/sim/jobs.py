"""Simulated jobs and their lifecycle over simulated time.

A job's whole future is drawn when it is created, from a generator seeded by (seed, job_id): its
queue wait, its run time and its outcome (completed, failed, or cancelled by the user). Its status
at any instant is then a pure function of the clock, so nothing runs in the background; a
``DELETE`` only moves the cancellation earlier. ``updated_at`` is the time of the last transition.

SpiderIQ's documentation says neither what ``processing_time_seconds`` covers nor how run times
spread, so :class:`RunTimes` holds the answers the simulator can give: the shape of runs within a
type's range (``uniform``, the default; or ``lognormal`` with the range's midpoint as median: most
runs light, a few deep ones 10-20 times longer, capped) and the share of its run a job reports
(1.0 by default; ``None`` reports null), fixed when the job is created. A lognormal run is the same
single uniform draw mapped through the lognormal's quantile function, so a job keeps its quantile
and every other draw of its life (wait, outcome, worker) whatever the shape.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any, Literal

SITE, MAPS = "spiderSite", "spiderMaps"
KNOWN_TYPES = (
    SITE,
    MAPS,
    "spiderMapsEnrich",
    "spiderVerify",
    "spiderCompanyData",
    "spiderPeople",
    "spiderPublicLinkedin",
    "spiderMail",
    "spiderConvert",
    "spiderLanding",
    "spiderVideo",
    "spiderPR",
    "spiderSocial",
    "spiderVayapin",
)
STATUSES = ("queued", "processing", "completed", "failed", "cancelled")
TERMINAL = ("completed", "failed", "cancelled")
OUTCOMES = TERMINAL

FAILURE_MESSAGES = (
    "Failed to connect to target URL: Connection timeout after 30s",
    "Target returned HTTP 403: access denied by site firewall",
    "DNS resolution failed for target host",
    "Worker crashed while rendering page: browser context closed",
    "Google Maps returned no parseable listing (captcha challenge)",
)

Shape = Literal["uniform", "lognormal"]
SHAPES: tuple[Shape, ...] = ("uniform", "lognormal")
# A lognormal run lies within [median / RUN_CAP, median * RUN_CAP]: with sigma 1 about one run in
# 9,000 reaches the cap (a 20 s site crawl: at most 800 s), well above the 10-20x deep crawls.
RUN_CAP = 40.0
_NORMAL = NormalDist()


@dataclass(frozen=True, slots=True)
class RunTimes:
    """The run-time shape, its sigma (lognormal only) and the reported share of a run."""

    shape: Shape = "uniform"
    sigma: float = 1.0
    share: float | None = 1.0

    def __post_init__(self) -> None:
        if self.shape not in SHAPES:
            raise ValueError("run_time_shape must be 'uniform' or 'lognormal'")
        if isinstance(self.sigma, bool) or not isinstance(self.sigma, int | float):
            raise ValueError("run_time_sigma must be a number")
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise ValueError("run_time_sigma must be a positive number")
        share = self.share
        if share is not None and (
            isinstance(share, bool) or not isinstance(share, int | float) or not 0.0 < share <= 1.0
        ):
            raise ValueError("processing_time_share must be within (0, 1], or null")

    def describe(self) -> dict[str, object]:
        return {
            "run_time_shape": self.shape,
            "run_time_sigma": self.sigma,
            "processing_time_share": self.share,
        }


DOCUMENTED = RunTimes()  # the default: uniform runs, the whole run reported


def draw_run(rng: random.Random, lo: float, hi: float, shape: str, sigma: float) -> float:
    """One run time from ``rng``, consuming exactly one ``rng.random()`` whatever the shape.

    ``uniform`` is ``rng.uniform(lo, hi)`` exactly; ``lognormal`` has median ``(lo + hi) / 2``
    and is clamped to ``RUN_CAP`` times it (or a ``RUN_CAP``-th of it)."""
    if shape == "uniform":
        return rng.uniform(lo, hi)
    median = (lo + hi) / 2
    u = rng.random()
    z = _NORMAL.inv_cdf(u) if u > 0.0 else -math.inf
    # Clamped in log space: a large sigma cannot overflow, and a zero median stays zero.
    bound = math.log(RUN_CAP)
    return median * math.exp(min(max(sigma * z, -bound), bound))


def reported(run_s: float, share: float | None) -> float | None:
    """The processing time a finished job reports for a run of ``run_s`` seconds (one decimal)."""
    return None if share is None else round(share * run_s, 1)


@dataclass(slots=True)
class Job:
    """One job's internal state; everything except ``cancel_at`` is fixed at creation."""

    job_id: str
    type: str
    owner: str
    payload: dict[str, Any]
    priority: int
    created_at: float
    start_at: float
    end_at: float
    outcome: str
    worker_id: str
    error_message: str | None
    cancel_at: float | None = None
    reported_share: float | None = 1.0
    running_label: bool = False
    naive_timestamps: bool = False
    fetches: int = 0
    fetches_done: int = 0
    fetch_codes: dict[int, int] = field(default_factory=dict)

    def status_at(self, now: float) -> str:
        if self.cancel_at is not None and now >= self.cancel_at:
            return "cancelled"
        if now < self.start_at:
            return "queued"
        if now < self.end_at:
            return "processing"
        return self.outcome

    def finished_at(self) -> float:
        """When the job reached (or will reach) its terminal state."""
        return self.cancel_at if self.cancel_at is not None else self.end_at

    def updated_at(self, now: float) -> float:
        status = self.status_at(now)
        if status == "queued":
            return self.created_at
        if status == "processing":
            return self.start_at
        return self.finished_at()

    def processing_time(self) -> float | None:
        """The reported seconds: ``reported_share`` of the worker's run; None if it never started
        or the share is None (reported as null)."""
        end = self.finished_at()
        return None if end <= self.start_at else reported(end - self.start_at, self.reported_share)

    def cancel(self, now: float) -> None:
        self.cancel_at = now

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "type": self.type,
            "owner": self.owner,
            "status": self.status_at(now),
            "payload": self.payload,
            "priority": self.priority,
            "created_at": self.created_at,
            "start_at": self.start_at,
            "end_at": self.end_at,
            "outcome": self.outcome,
            "cancel_at": self.cancel_at,
            "processing_time_share": self.reported_share,
            "worker_id": self.worker_id,
            "error_message": self.error_message,
            "running_label": self.running_label,
            "naive_timestamps": self.naive_timestamps,
            "fetches": self.fetches,
            "fetches_after_done": self.fetches_done,
            "fetch_codes": {str(k): v for k, v in sorted(self.fetch_codes.items())},
            "now": now,
        }


@dataclass(frozen=True, slots=True)
class Plan:
    """How a new job should behave; ``None`` fields are drawn from the settings' ranges.

    A ``duration_s`` given here is drawn uniformly within it, whatever the run-time shape."""

    duration_s: tuple[float, float] | None = None
    outcome: str | None = None
    start_offset_s: float = 0.0


def job_rng(seed: int, job_id: str, purpose: str) -> random.Random:
    """The generator for one aspect of one job: a pure function of (seed, job_id, purpose)."""
    return random.Random(f"{seed}:{job_id}:{purpose}")


def new_job_id(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def plan_job(
    *,
    job_id: str,
    job_type: str,
    owner: str,
    payload: dict[str, Any],
    priority: int,
    now: float,
    seed: int,
    queue_wait: tuple[float, float],
    duration: tuple[float, float],
    fail_rate: float,
    cancel_rate: float,
    plan: Plan,
    variants: bool,
    not_before: float | None = None,
    run_times: RunTimes = DOCUMENTED,
) -> Job:
    """Draw a job's future deterministically from (seed, job_id) and the knobs given.

    ``not_before`` is the earliest simulated instant a busy queue lets the job start; its wait then
    grows, the rest of its draws do not change. ``run_times`` shapes a run drawn from ``duration``
    (not one the plan gives) and sets the share of it the job reports; the run takes one draw
    whatever the shape, so the job's other draws do not change either."""
    rng = job_rng(seed, job_id, "life")
    created = now - plan.start_offset_s
    wait = rng.uniform(*queue_wait)
    if not_before is not None:
        wait = max(wait, not_before - created)
    if plan.duration_s is not None:
        run = rng.uniform(*plan.duration_s)
    else:
        run = draw_run(rng, *duration, run_times.shape, run_times.sigma)
    draw = rng.random()
    outcome = plan.outcome
    if outcome is None:
        outcome = (
            "failed" if draw < fail_rate else ("cancelled" if draw < fail_rate + cancel_rate else "completed")
        )
    start, end = created + wait, created + wait + run
    cancel_at = None
    if outcome == "cancelled":
        # A user cancels somewhere between submission and the end of processing.
        cancel_at = created + rng.uniform(0.2, 0.9) * (wait + run)
        outcome_terminal = "completed"
    else:
        outcome_terminal = outcome
    family = "site" if job_type == SITE else "maps" if job_type == MAPS else "misc"
    worker = f"spider-{family}-main-{rng.randint(1, 6)}"
    error = rng.choice(FAILURE_MESSAGES) if outcome == "failed" else None
    if outcome == "failed":
        # Failures tend to come early: a dead host fails fast.
        end = start + run * rng.uniform(0.1, 0.6)
    return Job(
        job_id=job_id,
        type=job_type,
        owner=owner,
        payload=payload,
        priority=priority,
        created_at=created,
        start_at=start,
        end_at=end,
        outcome=outcome_terminal,
        worker_id=worker,
        error_message=error,
        cancel_at=cancel_at,
        reported_share=run_times.share,
        running_label=variants and rng.random() < 0.1,
        naive_timestamps=variants and rng.random() < 0.05,
    )
