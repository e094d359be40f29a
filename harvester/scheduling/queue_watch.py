"""Which queued jobs SpiderIQ's queue has gone past: a job of the same type queued later started.

A job waits in SpiderIQ's queue with no event until it starts, and nothing at all is sent when it
is cancelled while it waits. The stream announces every ``job.queued`` (in the order the jobs were
submitted: ``created_at`` has whole seconds, too coarse to order a bulk) and every
``job.started``. As far as a client can see, the queue serves each job type in submission order,
so when a job queued after ours starts while ours has not, ours was either cancelled while it
waited or started with its ``job.started`` lost. Its long queued defer is wrong either way: the
job gets a direct poll when its end would be overdue had it started then (``policy.started_defer``:
by then a start that was only lost has been announced ended, so the poll is spared; a cancel is
found that long after its turn instead of at the next reconcile).

A queue that does not keep to submission order (priorities) costs at most one early poll per job:
a job leaves the watch the first time it is passed.
"""

from __future__ import annotations

from collections import OrderedDict
from uuid import UUID

WATCH_MAX = 20_000  # queued jobs remembered (all of the account's, ours or not)


class QueueWatch:
    """The account's jobs the stream showed queued and not yet started, per type in queue order."""

    __slots__ = ("_known", "_limit", "_types", "_waiting")

    def __init__(self, limit: int = WATCH_MAX) -> None:
        self._limit = limit
        self._known: OrderedDict[UUID, str] = OrderedDict()  # job -> type, in queue order
        self._waiting: dict[str, OrderedDict[UUID, None]] = {}
        # The type each job.queued named, kept past the job's leaving the watch: a job passed
        # (or whose start was lost) still starts, and its job.started names no type.
        self._types: OrderedDict[UUID, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._known)

    def type_of(self, job_id: UUID) -> str | None:
        return self._types.get(job_id)

    def queued(self, job_id: UUID, job_type: str | None) -> None:
        """A ``job.queued``: remember the job until it starts, ends or is passed."""
        if job_type is None or job_id in self._known:
            return
        self._types[job_id] = job_type
        self._types.move_to_end(job_id)
        while len(self._types) > self._limit:
            self._types.popitem(last=False)
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
        self._drop(job_id)
        return passed

    def ended(self, job_id: UUID) -> None:
        """The job ended: it no longer waits."""
        if job_id in self._known:
            self._drop(job_id)

    def _drop(self, job_id: UUID) -> None:
        job_type = self._known.pop(job_id)
        waiting = self._waiting[job_type]
        del waiting[job_id]
        if not waiting:
            del self._waiting[job_type]
