"""What the event stream's job events mean for a job's next direct poll.

The stream is a nudge, never the truth: an end (``job.completed``, ``job.failed``) makes the job
due at once, exactly as a list page does; a ``job.queued`` or a ``job.started`` defers its direct
polls, since the stream will announce the end. A queued job waits ``policy.queued_defer`` (a busy
queue can hold it for many minutes, and its start is announced). A started job whose end does not
come by when nearly every run of its type has ended (``policy.started_defer``: the event was lost,
or it was cancelled, which no event says) is polled directly then, one request for that one job
instead of a list pass. A start also tells which jobs queued before it the queue went past
(``QueueWatch``): those are polled when they would be overdue had they started then.

``StreamRules`` keeps what the events taught (the queue order, the runs going, in the gate's
``DurationModel``) and turns each event into the ``Listed`` values the store applies. No I/O:
callers pass ``now``, in the schedule's (scaled) seconds.
"""

from __future__ import annotations

from dataclasses import dataclass
from uuid import UUID

from harvester.config import PollingConfig
from harvester.ports import Listed
from harvester.scheduling import policy
from harvester.scheduling.durations import DurationModel
from harvester.scheduling.queue_watch import QueueWatch


@dataclass(frozen=True, slots=True)
class Running:
    """What a ``job.queued`` or ``job.started`` leads to."""

    job: Listed  # the job the event names, with the defer its direct polls get
    passed: tuple[Listed, ...] = ()  # queued jobs the queue went past: polled when overdue


class StreamRules:
    def __init__(self, cfg: PollingConfig, durations: DurationModel, queue: QueueWatch | None = None) -> None:
        self.cfg = cfg
        self.durations = durations
        self.queue = queue or QueueWatch()  # jobs seen queued, in queue order: their type, who passed whom

    def finished(self, job_id: UUID) -> None:
        """Its end was announced: it waits no more, and its run is not going any more."""
        self.queue.ended(job_id)
        self.durations.ended(job_id)

    def queued(self, job_id: UUID, job_type: str | None) -> Running:
        """A ``job.queued``: remembered in queue order; no direct poll for ``queued_defer``."""
        self.queue.queued(job_id, job_type)
        return Running(Listed(job_id, "queued", job_type, policy.queued_defer(self.cfg)))

    def started(self, job_id: UUID, status: str, job_type: str | None, now: float) -> Running:
        """A ``job.started``: its run is going; polled when its end is overdue (for every type it
        may be when the event names none and its ``job.queued`` was not seen). The jobs of its type
        queued before it that still wait are polled when they would be overdue had they started
        now: a start that was only lost has been announced ended by then (a poll sooner finds it
        still running), and a job cancelled while it waited is found that long after its turn."""
        job_type = job_type or self.queue.type_of(job_id)
        passed = tuple(
            Listed(earlier, "queued", kind, policy.started_defer(kind, self.cfg, self.durations, now))
            for earlier, kind in self.queue.started(job_id)
        )
        kinds = (job_type,) if job_type else (policy.SITE, policy.MAPS)
        self.durations.started(job_id, job_type, now)
        defer = max(policy.started_defer(kind, self.cfg, self.durations, now) for kind in kinds)
        return Running(Listed(job_id, status, job_type, defer), passed)
