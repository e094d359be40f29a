"""Simulated jobs and their lifecycle over simulated time.

A job's whole future is drawn when it is created, from a generator seeded by (seed, job_id): its
queue wait, its processing time and its outcome (completed, failed, or cancelled by the user). Its
status at any instant is then a pure function of the clock, so nothing runs in the background; a
``DELETE`` only moves the cancellation earlier. ``updated_at`` is the time of the last transition.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from typing import Any

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
        """Seconds the worker spent; None if it never started."""
        end = self.finished_at()
        return None if end <= self.start_at else round(end - self.start_at, 1)

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
    """How a new job should behave; ``None`` fields are drawn from the settings' ranges."""

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
) -> Job:
    """Draw a job's future deterministically from (seed, job_id) and the knobs given.

    ``not_before`` is the earliest simulated instant a busy queue lets the job start; its wait then
    grows, the rest of its draws do not change."""
    rng = job_rng(seed, job_id, "life")
    created = now - plan.start_offset_s
    wait = rng.uniform(*queue_wait)
    if not_before is not None:
        wait = max(wait, not_before - created)
    lo, hi = plan.duration_s if plan.duration_s is not None else duration
    run = rng.uniform(lo, hi)
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
        running_label=variants and rng.random() < 0.1,
        naive_timestamps=variants and rng.random() < 0.05,
    )
