"""The event hub behind the simulated SSE stream: job transitions in time order, fanned out live.

A job's status is a function of the clock (:meth:`Job.status_at`), so nothing "happens" by itself.
The hub keeps one heap entry per live job: the simulated instant of its next transition (queued,
started, then completed or failed). :meth:`EventHub.advance` pops every entry that is due and hands
the event to the subscribers connected at that moment; an event with no subscriber is gone, as on
SpiderIQ's Redis pub/sub (no replay). A cancelled job simply produces no further event: none is
documented. Shares of lost events and the noise mixed in (campaign events with their mixed key
casing, an event type no client knows, ``: keep-alive`` comments) are drawn from one seeded
generator. Stream loops (:mod:`harvester.sim.events`) call :meth:`advance`, write what is pending
for them and sleep until the next deadline or :meth:`notify`.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from harvester.sim.bodies import job_data, stamp
from harvester.sim.clock import Clock, iso_z
from harvester.sim.faults import FaultPlan
from harvester.sim.jobs import Job

QUEUED, STARTED, ENDED = 0, 1, 2
UNKNOWN_EVENT = "workflow.step_completed"


@dataclass(slots=True)
class Item:
    """One thing to write on a stream: an event (type and JSON data) or a comment line."""

    t: float
    event: str | None
    data: dict[str, Any] | None = None
    comment: str | None = None


@dataclass(eq=False, slots=True)
class Subscriber:
    """One open stream: whose account it follows, its filters and what waits to be written."""

    token: str
    client_id: str
    opened_at: float
    next_beat: float
    job_id: str | None = None
    campaign_id: str | None = None
    pending: list[Item] = field(default_factory=list)


def results_count(data: dict[str, Any]) -> int:
    count = data.get("results_count")
    if isinstance(count, int):
        return count
    businesses = data.get("businesses")
    if isinstance(businesses, list):
        return len(businesses)
    found = sum(len(v) for k in ("emails", "phones") if isinstance(v := data.get(k), list))
    return found or 1


class EventHub:
    """Scheduled job transitions, open streams and the stream statistics."""

    def __init__(self, clock: Clock, jobs: dict[str, Job], seed: int, variants: bool) -> None:
        self.clock = clock
        self.jobs = jobs
        self.seed = seed
        self.variants = variants
        self.subscribers: list[Subscriber] = []
        self.closing = False
        self._heap: list[tuple[float, int, str, int]] = []
        self._seq = itertools.count()
        self._rng = random.Random(f"events:{seed}")
        self._wake = asyncio.Event()
        self.reset_stats()

    # statistics --------------------------------------------------------------------------
    def reset_stats(self) -> None:
        self.opened: Counter[str] = Counter()
        self.sent: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self.lost = 0
        self.dropped_stalled = 0
        self.cut = 0
        self.closed_by_error = 0
        self.comments_sent = 0

    def stats(self) -> dict[str, Any]:
        open_by: Counter[str] = Counter(sub.client_id for sub in self.subscribers)
        return {
            "connections_opened": sum(self.opened.values()),
            "connections_opened_by_client": dict(sorted(self.opened.items())),
            "open": len(self.subscribers),
            "open_by_client": dict(sorted(open_by.items())),
            "events_sent_by_type": dict(sorted(self.sent.items())),
            "events_sent": sum(self.sent.values()),
            "comments_sent": self.comments_sent,
            "events_lost": self.lost,
            "events_dropped_stalled": self.dropped_stalled,
            "streams_cut": self.cut,
            "streams_closed_by_error": self.closed_by_error,
            "refused": dict(sorted(self.refused.items())),
            "refused_total": sum(self.refused.values()),
        }

    # waking the stream loops -------------------------------------------------------------
    def waiter(self) -> asyncio.Event:
        """The event the next :meth:`notify` sets; take it before looking at the state."""
        return self._wake

    def notify(self) -> None:
        self._wake.set()
        self._wake = asyncio.Event()

    # subscriptions -----------------------------------------------------------------------
    def subscribe(
        self,
        token: str,
        client_id: str,
        job_id: str | None,
        campaign_id: str | None,
        heartbeat_s: float,
        faults: FaultPlan,
    ) -> Subscriber:
        now = self.clock.now()
        self.advance(now, faults)  # whatever is due now happened before this stream existed
        sub = Subscriber(token, client_id, now, now + heartbeat_s, job_id, campaign_id)
        self.subscribers.append(sub)
        self.opened[client_id] += 1
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        if sub in self.subscribers:
            self.subscribers.remove(sub)

    # schedule ----------------------------------------------------------------------------
    def schedule(self, job: Job, now: float) -> None:
        """Plan a new job's events; transitions already in the past (back-dated jobs) are not sent."""
        for stage, t in ((QUEUED, job.created_at), (STARTED, job.start_at), (ENDED, job.end_at)):
            if t >= now:
                heapq.heappush(self._heap, (t, next(self._seq), job.job_id, stage))
                return

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def advance(self, now: float, faults: FaultPlan | None) -> int:
        """Publish every transition due by ``now``; returns how many items were queued."""
        queued = 0
        while self._heap and self._heap[0][0] <= now:
            t, _, job_id, stage = heapq.heappop(self._heap)
            job = self.jobs.get(job_id)
            if job is None:
                continue
            if stage == QUEUED:
                self._push_next(job, STARTED)
            elif stage == STARTED:
                self._push_next(job, ENDED)
            event = self._job_event(job, stage, t)
            if event is not None:
                queued += self._fan_out(job, t, event, faults)
        if queued:
            self.notify()
        return queued

    def _push_next(self, job: Job, stage: int) -> None:
        t = job.start_at if stage == STARTED else job.end_at
        heapq.heappush(self._heap, (t, next(self._seq), job.job_id, stage))

    def _job_event(self, job: Job, stage: int, t: float) -> str | None:
        if job.cancel_at is not None and job.cancel_at <= t and stage != QUEUED:
            return None  # cancelled: no event is documented, none is sent
        if stage == QUEUED:
            return "job.queued"
        if stage == STARTED:
            return "job.started"
        status = job.status_at(t)
        return {"completed": "job.completed", "failed": "job.failed"}.get(status)

    def _job_data(self, job: Job, event: str, t: float) -> dict[str, Any]:
        if event == "job.queued":
            return {"job_id": job.job_id, "type": job.type, "created_at": stamp(self.clock, job, t)}
        if event == "job.started":
            return {"job_id": job.job_id, "worker_id": job.worker_id, "started_at": stamp(self.clock, job, t)}
        if event == "job.completed":
            data = job_data(self.seed, job, self.variants)
            return {
                "job_id": job.job_id,
                "processing_time": job.processing_time(),
                "results_count": results_count(data),
            }
        return {"job_id": job.job_id, "error_message": job.error_message}

    def _fan_out(self, job: Job, t: float, event: str, faults: FaultPlan | None) -> int:
        targets = [
            sub
            for sub in self.subscribers
            if sub.token == job.owner
            and sub.campaign_id is None
            and (sub.job_id is None or sub.job_id == job.job_id)
        ]
        if not targets:
            return 0
        data = self._job_data(job, event, t)
        queued = 0
        for sub in targets:
            if faults is not None and faults.stream_stall:
                self.dropped_stalled += 1
                continue
            lost = faults.events_lost if faults is not None else 0.0
            if lost > 0 and self._rng.random() < lost:
                self.lost += 1
                continue
            sub.pending.append(Item(t, event, data))
            queued += 1
            noise = faults.stream_shares["stream_noise"] if faults is not None else 0.0
            if noise > 0 and self._rng.random() < noise:
                sub.pending.append(self.noise(sub, t))
                queued += 1
        return queued

    def rng_draw(self, share: float) -> bool:
        """True with probability ``share`` (no draw at all when the share is 0)."""
        return share > 0 and self._rng.random() < share

    # noise -------------------------------------------------------------------------------
    def noise(self, sub: Subscriber, t: float) -> Item:
        """Something a client must tolerate: campaign events, an unknown type or a comment."""
        rng = self._rng
        if sub.job_id is not None:
            return Item(t, None, comment="keep-alive")
        camp = sub.campaign_id or f"camp_{rng.randrange(16**8):08x}"
        draw = rng.random()
        if draw < 0.35:
            total = rng.choice((10, 20, 50))
            done = rng.randint(0, total)
            failed = rng.randint(0, total - done)
            return Item(
                t,
                "campaign.progress",
                {
                    "campaignId": camp,
                    "status": "in_progress",
                    "progress": {
                        "total": total,
                        "completed": done,
                        "failed": failed,
                        "pending": total - done - failed,
                        "percentage": round(100.0 * (done + failed) / total, 1),
                    },
                },
            )
        if draw < 0.55:
            total = rng.choice((10, 20, 50))
            failed = rng.randint(0, total // 4)
            return Item(
                t,
                "campaign.completed",
                {
                    "campaign_id": camp,
                    "client_id": sub.client_id,
                    "terminal": "completed",
                    "completed": total - failed,
                    "failed": failed,
                    "total": total,
                    "success_pct": round(100.0 * (total - failed) / total, 1),
                    "threshold_pct": 70.0,
                },
            )
        if draw < 0.75:
            return Item(
                t,
                UNKNOWN_EVENT,
                {"campaignId": camp, "step": rng.choice(("maps", "site", "verify")), "at": self._iso(t)},
            )
        return Item(t, None, comment="keep-alive")

    def _iso(self, t: float) -> str:
        return iso_z(self.clock.wall(t))
