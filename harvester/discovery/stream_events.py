"""What the event stream's events do to our queue: each job event applied through the store.

``StreamEvents.handle`` reads one event: an end makes our pending job due at once, a queued or
started job gets its direct polls deferred, and the queued jobs a start shows the queue went past
are pulled in (what each event means is ``scheduling.stream_rules``). In adopt mode a job an event
names that the queue lacks is queued first. An event for a job not in our queue yet is remembered
for ``list_reconcile_s`` and applied again (``replay_recent``): the producer inserts a job after
submitting it, so its start or even its end can come first. It counts the events and the jobs they
matched, which the stream reports with its lease.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from datetime import datetime
from uuid import UUID

from harvester import logs
from harvester.api.event_bodies import FINISHED, RUNNING, event_time, job_fields, parse_body
from harvester.api.outcomes import TERMINAL_UPSTREAM
from harvester.api.sse import Event
from harvester.config import PollingConfig
from harvester.ports import Adopter, Listed, Listings
from harvester.scheduling.gate import Gate
from harvester.scheduling.stream_rules import Running, StreamRules

log = logs.get("harvester.discovery.stream_events")

RECENT_MAX = 10_000  # ends remembered for jobs not in the queue yet


class StreamEvents:
    def __init__(
        self,
        cfg: PollingConfig,
        store: Listings,
        gate: Gate,
        scrub: Callable[[str], str],
        *,
        adopter: Adopter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg = cfg
        self.store = store
        self.gate = gate
        self.rules = StreamRules(cfg, gate.durations)
        self.adopter = adopter  # adopt mode: a job an event names that the queue lacks is queued
        self.adopted = 0
        self.clock = clock
        self._scrub = scrub  # the stream's scrubber for the token in use
        self.seen = self.matched = 0  # events, and jobs of ours they matched, not reported yet
        self.last_seen: datetime | None = None  # API time of the newest event received
        self._recent: OrderedDict[UUID, tuple[Listed, float]] = OrderedDict()

    def reported(self, events: int, matched: int) -> None:
        """The stream's lease renewal reported this many of the events and matches."""
        self.seen -= events
        self.matched -= matched

    @property
    def remembered(self) -> bool:
        """Events wait for their job to reach the queue (``replay_recent``)."""
        return bool(self._recent)

    async def handle(self, event: Event) -> None:
        self.seen += 1
        matched = 0
        body = parse_body(event.data)
        stamp = event_time(body)
        if stamp is not None and (self.last_seen is None or stamp > self.last_seen):
            self.last_seen = stamp
        if event.type in FINISHED or event.type in RUNNING:
            job_id, job_type = job_fields(body)
            if job_id is not None and self.adopter is not None:
                status = FINISHED.get(event.type) or RUNNING[event.type]
                if await self.adopter.adopt([Listed(job_id, status, job_type)]):
                    self.adopted += 1
                    log.info("jobs_adopted", count=1, source="stream")
            if job_id is None:
                log.debug("stream_event_unreadable", type=event.type)
            elif event.type in FINISHED:
                matched = await self._finished(Listed(job_id, FINISHED[event.type], job_type))
            elif RUNNING[event.type] == "queued":
                matched = await self._running(self.rules.queued(job_id, job_type))
            else:
                now = self.gate.clock()
                matched = await self._running(self.rules.started(job_id, RUNNING[event.type], job_type, now))
        elif event.type == "error":
            log.warning("stream_error_event", detail=self._scrub(event.data[:300]))
        self.matched += matched
        self.gate.observer.stream_event(event.type, matched)

    async def _finished(self, job: Listed) -> int:
        self.rules.finished(job.job_id)
        marked = await self.store.mark_finished([job])
        if marked:
            self.gate.nudge()
            return 1
        self._remember(job)
        return 0

    async def _running(self, running: Running) -> int:
        """Defer the job's direct polls; pull in the queued jobs the queue went past."""
        if running.passed:
            pulled = await self.store.pull_in_queued(running.passed)
            if pulled:
                log.debug("stream_queue_passed", jobs=len(pulled))
        if await self.store.defer_running([running.job]):
            return 1
        self._remember(running.job)
        return 0

    def _remember(self, job: Listed) -> None:
        """An event for a job not (yet) in our queue: the producer may insert it in a moment."""
        known = self._recent.get(job.job_id)
        if known is not None and known[0].status in TERMINAL_UPSTREAM:
            return  # an end is not undone by a late start
        self._recent[job.job_id] = (job, self.clock())
        self._recent.move_to_end(job.job_id)
        while len(self._recent) > RECENT_MAX:
            self._recent.popitem(last=False)

    async def replay_recent(self) -> None:
        """Ends seen before their job reached the queue: apply them now that it may be there."""
        horizon = self.clock() - self.cfg.list_reconcile_s
        for job_id in [j for j, (_, seen) in self._recent.items() if seen < horizon]:
            del self._recent[job_id]
        if not self._recent:
            return
        jobs = [job for job, _ in self._recent.values()]
        marked = await self.store.mark_finished([j for j in jobs if j.status in TERMINAL_UPSTREAM])
        deferred = await self.store.defer_running([j for j in jobs if j.status not in TERMINAL_UPSTREAM])
        for job_id in (*marked, *deferred):
            self._recent.pop(job_id, None)
        self.matched += len(marked) + len(deferred)
        if marked:
            self.gate.nudge()
