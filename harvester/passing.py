"""Which queued jobs SpiderIQ's queue has gone past: a job of the same type queued later started.

A job waits in SpiderIQ's queue with no event until it starts, and nothing at all is sent when it
is cancelled while it waits. The stream announces every ``job.queued`` (in the order the jobs were
submitted: ``created_at`` has whole seconds, too coarse to order a bulk) and every
``job.started``. As far as a client can see, the queue serves each job type in submission order,
so when a job queued after ours starts while ours has not, ours was either cancelled while it
waited or started with its ``job.started`` lost. Its long queued defer is wrong either way: the
job gets a direct poll one and a half typical runs of its type later (by then a start that was
only lost has most likely been announced ended, so the poll is spared; a cancel is found that long
after its turn instead of at the next reconcile).

A queue that does not keep to submission order (priorities) costs at most one early poll per job:
a job leaves the watch the first time it is passed.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import datetime
from uuid import UUID

WATCH_MAX = 20_000  # queued jobs remembered (all of the account's, ours or not)


class QueueWatch:
    """The account's jobs the stream showed queued and not yet started, per type in queue order."""

    __slots__ = ("_known", "_limit", "_passed", "_waiting")

    def __init__(self, limit: int = WATCH_MAX) -> None:
        self._limit = limit
        self._known: OrderedDict[UUID, str] = OrderedDict()  # job -> type, in queue order
        self._waiting: dict[str, OrderedDict[UUID, None]] = {}
        self._passed: OrderedDict[UUID, None] = OrderedDict()  # passed, no start seen since

    def __len__(self) -> int:
        return len(self._known)

    def type_of(self, job_id: UUID) -> str | None:
        return self._known.get(job_id)

    def queued(self, job_id: UUID, job_type: str | None) -> None:
        """A ``job.queued``: remember the job until it starts, ends or is passed."""
        if job_type is None or job_id in self._known:
            return
        self._known[job_id] = job_type
        self._waiting.setdefault(job_type, OrderedDict())[job_id] = None
        while len(self._known) > self._limit:
            self._drop(next(iter(self._known)))

    def started(self, job_id: UUID) -> list[tuple[UUID, str]]:
        """A ``job.started``: the jobs of its type queued before it that still wait, with their
        type; they leave the watch. Empty when the started job was not seen queued."""
        job_type = self._known.get(job_id)
        if job_type is None:
            return []
        waiting = self._waiting[job_type]
        passed: list[tuple[UUID, str]] = []
        for earlier in waiting:
            if earlier == job_id:
                break
            passed.append((earlier, job_type))
        for earlier, _ in passed:
            self._drop(earlier)
            self._passed[earlier] = None
        while len(self._passed) > self._limit:
            self._passed.popitem(last=False)
        self._drop(job_id)
        return passed

    def ended(self, job_id: UUID) -> bool:
        """The job ended: it no longer waits. True when it was seen queued and its start never
        came: a ``job.started`` the stream lost."""
        if job_id in self._passed:
            del self._passed[job_id]
            return True
        if job_id in self._known:
            self._drop(job_id)
            return True
        return False

    def seen_start(self, job_id: UUID) -> None:
        """A start the watch did not expect (the job was passed already): not a lost one."""
        self._passed.pop(job_id, None)

    def _drop(self, job_id: UUID) -> None:
        job_type = self._known.pop(job_id)
        waiting = self._waiting[job_type]
        del waiting[job_id]
        if not waiting:
            del self._waiting[job_type]


LULL_GAPS = 10.0  # a silence this many times the usual gap between the account's job events...
LULL_FLOOR_API_S = 5.0  # ...and at least this long (API seconds) is a lull
LOSS_MEMORY = 3  # a lost event makes lulls worth a sweep for this many reconcile intervals
GAP_WEIGHT = 0.2


class Lull:
    """The account's job events falling silent after a run of them, while the stream loses some.

    When a batch ends, its last jobs' ends come and then nothing more. If the stream has been
    losing events (a ``job.completed`` for a job whose ``job.started`` never came), some of those
    last ends may be lost too, and they would wait for their overdue polls (twice a typical run)
    or the next reconcile. One short list pass back over the last runs, once the events have been
    silent for much longer than their usual gaps, finds them at the cost of a page or two, once
    per silence. A stream that loses nothing never asks for it.
    """

    __slots__ = ("_floor_s", "_gap", "_last", "_lost_at", "_memory_s", "_swept", "api_last")

    def __init__(self, floor_s: float, memory_s: float) -> None:
        self._floor_s = floor_s
        self._memory_s = memory_s
        self._gap: float | None = None
        self._last: float | None = None
        self._lost_at: float | None = None
        self._swept = True
        self.api_last: datetime | None = None  # the API time of the newest event, as the stream saw

    def event(self, now: float, api_time: datetime | None = None) -> None:
        """A job event arrived (any job of the account's); ``api_time``: the newest API time seen."""
        if api_time is not None:
            self.api_last = api_time
        if self._last is not None:
            gap = max(0.0, now - self._last)
            self._gap = gap if self._gap is None else self._gap + GAP_WEIGHT * (gap - self._gap)
        self._last = now
        self._swept = False

    def lost(self, now: float) -> None:
        """An event turned out to be lost."""
        self._lost_at = now

    def reset(self) -> None:
        """The stream dropped: its reconnect pass covers the gap, and gaps start over."""
        self._gap = self._last = None
        self._swept = True

    def sweep_due(self, now: float) -> bool:
        """True once per silence that is worth a pass; the caller then runs it."""
        if self._swept or self._last is None or self._gap is None or self._lost_at is None:
            return False
        if now - self._lost_at > self._memory_s:
            return False
        if now - self._last < max(self._floor_s, LULL_GAPS * self._gap):
            return False
        self._swept = True
        return True
