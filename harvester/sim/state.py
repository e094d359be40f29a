"""The simulator's mutable world: credentials, jobs, rate limiters, faults and statistics.

One :class:`SimState` per application, reachable as ``app[STATE_KEY]`` and as ``SimServer.state``.
Handlers and admin endpoints change it; tests may poke it directly. Credentials are keyed by the
full token, but only the ``client_id`` part is ever shown (stats, admin answers), never the secret
parts. ``hub`` is the event stream's hub (:mod:`harvester.sim.hub`); ``queue_starts_per_minute``
is the busy queue's pace (None = unlimited); ``run_times`` the shape of new jobs' runs and the share
of a run they report (:mod:`harvester.sim.jobs`).
"""

from __future__ import annotations

import json
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from harvester.sim.clock import Clock
from harvester.sim.faults import FaultPlan
from harvester.sim.hub import EventHub
from harvester.sim.jobs import MAPS, SITE, STATUSES, TERMINAL, Job, Plan, new_job_id, plan_job
from harvester.sim.ratelimit import RateMeter, TokenBucket
from harvester.sim.settings import SimSettings

DEDUP_WINDOW_S = 24 * 3600.0


@dataclass(slots=True)
class Credential:
    """One accepted token: ``active``, ``inactive`` (403) or ``revoked`` (401/403 as configured)."""

    token: str
    status: str = "active"
    revoked_status: int = 401
    bucket: TokenBucket | None = None
    meter: RateMeter | None = None
    job_ids: list[str] = field(default_factory=list)

    @property
    def client_id(self) -> str:
        return self.token.split(":", 1)[0]


def split_token(token: str) -> tuple[str, str, str] | None:
    parts = token.split(":")
    if len(parts) != 3 or not all(part.strip() for part in parts):
        return None
    return parts[0], parts[1], parts[2]


class SimState:
    """Everything that changes while the simulator runs."""

    def __init__(self, settings: SimSettings, clock: Clock) -> None:
        self.settings = settings
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.credentials: dict[str, Credential] = {}
        self.faults = FaultPlan(settings.faults, settings.seed, clock.now())
        self._ids = random.Random(f"jobs:{settings.seed}")
        self._dedup: dict[tuple[str, str, str], str] = {}
        self.hub = EventHub(clock, self.jobs, settings.seed, settings.variants)
        self.queue_starts_per_minute = settings.queue_starts_per_minute
        self.run_times = settings.run_times()
        self._queue_free_at: float | None = None
        for token in settings.tokens:
            self.add_credential(token)
        for token in settings.inactive_tokens:
            self.add_credential(token).status = "inactive"
        self.reset_stats()

    # credentials -------------------------------------------------------------------------
    def add_credential(
        self, token: str, rate_per_minute: float | None = None, burst: int | None = None
    ) -> Credential:
        if split_token(token) is None:
            raise ValueError("token must look like client_id:api_key:api_secret")
        cred = self.credentials.get(token)
        if cred is None:
            cred = Credential(token=token, revoked_status=self.settings.revoked_status)
            self.credentials[token] = cred
        rpm = rate_per_minute if rate_per_minute is not None else self.settings.rate_per_minute
        cred.bucket = TokenBucket(rpm, burst if burst is not None else self.settings.burst, self.clock.now())
        cred.meter = RateMeter(rpm)
        return cred

    def credential(self, token_or_client: str) -> Credential | None:
        found = self.credentials.get(token_or_client)
        if found is None:
            for cred in self.credentials.values():
                if cred.client_id == token_or_client:
                    return cred
        return found

    # jobs --------------------------------------------------------------------------------
    def create_job(
        self,
        cred: Credential,
        job_type: str,
        payload: dict[str, Any],
        priority: int = 0,
        plan: Plan | None = None,
    ) -> Job:
        s = self.settings
        job_id = new_job_id(self._ids)
        while job_id in self.jobs:
            job_id = new_job_id(self._ids)
        duration = (
            s.site_duration_s
            if job_type == SITE
            else s.maps_duration_s
            if job_type == MAPS
            else s.other_duration_s
        )
        now = self.clock.now()
        rate = self.queue_starts_per_minute
        job = plan_job(
            job_id=job_id,
            job_type=job_type,
            owner=cred.token,
            payload=payload,
            priority=priority,
            now=now,
            seed=s.seed,
            queue_wait=s.queue_wait_s,
            duration=duration,
            fail_rate=s.fail_rate,
            cancel_rate=s.cancel_rate,
            plan=plan or Plan(),
            variants=s.variants,
            not_before=self._queue_free_at if rate else None,
            run_times=self.run_times,
        )
        if rate:
            # A busy queue: the next job (FIFO by creation) starts no sooner than one slot later.
            self._queue_free_at = job.start_at + 60.0 / rate
        self.jobs[job_id] = job
        cred.job_ids.append(job_id)
        self.hub.advance(now, self.faults)
        self.hub.schedule(job, now)
        if self.hub.subscribers:
            self.hub.notify()
        return job

    def submit(
        self, cred: Credential, job_type: str, payload: dict[str, Any], priority: int
    ) -> tuple[Job, bool]:
        """Create a job, or return the one an identical payload made within 24 h."""
        now = self.clock.now()
        key = (cred.token, job_type, json.dumps(payload, sort_keys=True))
        if not payload.get("test"):
            cached = self._dedup.get(key)
            if cached is not None and now - self.jobs[cached].created_at < DEDUP_WINDOW_S:
                return self.jobs[cached], True
        job = self.create_job(cred, job_type, payload, priority)
        if not payload.get("test"):
            self._dedup[key] = job.job_id
        return job, False

    def owned_job(self, cred: Credential, job_id: str) -> Job | None:
        job = self.jobs.get(job_id.lower())
        return job if job is not None and job.owner == cred.token else None

    # statistics --------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.by_endpoint: dict[str, Counter[str]] = defaultdict(Counter)
        self.by_credential: dict[str, Counter[str]] = defaultdict(Counter)
        self.served_429 = 0
        self.faults_served: Counter[str] = Counter()
        self.hub.reset_stats()
        for cred in self.credentials.values():
            cred.meter = RateMeter(
                cred.bucket.rate_per_minute if cred.bucket else self.settings.rate_per_minute
            )
        for job in self.jobs.values():
            job.fetches = 0
            job.fetches_done = 0
            job.fetch_codes.clear()

    def record(self, endpoint: str, outcome: str, client_id: str) -> None:
        self.by_endpoint[endpoint][outcome] += 1
        self.by_credential[client_id][outcome] += 1
        if outcome == "429":
            self.served_429 += 1

    def stats(self, per_job: bool = True) -> dict[str, Any]:
        now = self.clock.now()
        states: Counter[str] = Counter(job.status_at(now) for job in self.jobs.values())
        fetched = [job for job in self.jobs.values() if job.fetches]
        limits: dict[str, Any] = {}
        for cred in self.credentials.values():
            meter = cred.meter
            bucket = cred.bucket
            if meter is None or bucket is None:
                continue
            limits[cred.client_id] = {
                "status": cred.status,
                "requests": meter.total,
                "max_requests_60s": meter.max_in_window,
                "requests_last_60s": meter.in_window(now),
                "max_burst": round(meter.max_burst, 2),
                "limit_per_minute": bucket.rate_per_minute,
                "burst": bucket.burst,
                "exceeds_rate_in_60s": meter.max_in_window > bucket.rate_per_minute,
                "jobs": len(cred.job_ids),
            }
        result: dict[str, Any] = {
            "sim_time_s": round(now, 3),
            "speed": self.clock.speed,
            "requests_total": sum(sum(c.values()) for c in self.by_endpoint.values()),
            "requests_by_endpoint": {k: dict(v) for k, v in sorted(self.by_endpoint.items())},
            "requests_by_credential": {k: dict(v) for k, v in sorted(self.by_credential.items())},
            "served_429": self.served_429,
            "faults_served": dict(self.faults_served),
            "rate_limit": limits,
            "jobs_by_state": {status: states.get(status, 0) for status in STATUSES},
            "jobs_total": len(self.jobs),
            "events": self.hub.stats(),
            "result_fetches": {
                "total": sum(job.fetches for job in fetched),
                "jobs_fetched": len(fetched),
                "max_per_job": max((job.fetches for job in fetched), default=0),
                "jobs_fetched_more_than_once_after_done": sum(1 for job in fetched if job.fetches_done > 1),
                "terminal_fetches": sum(job.fetches_done for job in fetched),
            },
        }
        if per_job:
            result["result_fetches"]["per_job"] = {job.job_id: job.fetches for job in fetched}
        return result

    def terminal_count(self) -> int:
        now = self.clock.now()
        return sum(1 for job in self.jobs.values() if job.status_at(now) in TERMINAL)


STATE_KEY = web.AppKey("harvester_sim_state", SimState)
