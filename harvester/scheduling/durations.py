"""How long the runs of each job type take, learned from what harvester sees of them.

Two figures per type. The typical run, an exponentially weighted mean of the processing times the
results report, paces polls. The time by which nearly every run has ended (``overdue``) says when
a job the stream showed started, and whose end it has not announced, is worth a direct poll: its
end event was lost, or it was cancelled (no event says so).

That second figure cannot come from the runs that ended alone. The first runs to end are the short
ones: early on, and all through the first wave of a bulk, the longest run that ended is far
shorter than the longest run, and a quantile of them would poll most of the wave while it still
runs. So the runs still going count too (a ``job.started``, or a list page showing a job running,
adds one; an end seen removes it): the quantile of the ended runs is trusted only while few of the
runs known, ended or going, have lasted longer than it. A run silent for far longer than the
quantile is taken for lost and forgotten (its end was lost, or it was cancelled; a poll finds it).
Each process knows the runs its own stream, pages and worker saw.

No clock: callers pass ``now``, in the schedule's (scaled) seconds, as the durations are.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from uuid import UUID

OVERDUE_QUANTILE = 0.97  # of the recent runs of a type
OVERDUE_MARGIN = 1.1  # past the quantile: a silent run is most likely over
OVERDUE_SAMPLES = 30  # ended runs of a type before any estimate
# The quantile is not trusted while more than this share of the runs known have lasted longer:
# twice what the quantile leaves past it, room for the going runs whose end was lost.
LONGER_SHARE = 2 * (1 - OVERDUE_QUANTILE)
FORGET_RUNS = 3.0  # a run silent for this many times the estimate is lost, not going
RECENT_RUNS = 200  # ended runs remembered per type
GOING_MAX = 10_000  # runs going tracked per type at most (the oldest go first)


class DurationModel:
    __slots__ = ("_alpha", "_going", "_means", "_quantiles", "_recent", "_types")

    def __init__(self, alpha: float = 0.1) -> None:
        self._alpha = alpha
        self._means: dict[str, float] = {}
        self._recent: dict[str, deque[float]] = {}
        self._quantiles: dict[str, tuple[float, int]] = {}  # type -> (quantile, ended runs longer)
        self._going: dict[str, OrderedDict[UUID, float]] = {}  # type -> job -> start, oldest first
        self._types: dict[UUID, str] = {}  # job -> type, for the runs going

    # ------------------------------------------------------------ what is seen
    def observe(self, job_type: str | None, seconds: float | None) -> None:
        """A run that ended took ``seconds`` (the processing time its results report)."""
        if not job_type or seconds is None or not (0 < seconds < 86400):
            return
        mean = self._means.get(job_type)
        self._means[job_type] = seconds if mean is None else mean + self._alpha * (seconds - mean)
        self._recent.setdefault(job_type, deque(maxlen=RECENT_RUNS)).append(seconds)
        self._quantiles.pop(job_type, None)

    def started(self, job_id: UUID, job_type: str | None, now: float) -> None:
        """The stream showed this job's run start, now."""
        if job_type:
            self._drop(job_id)
            self._add(job_id, job_type, now)

    def seen_running(self, job_id: UUID, job_type: str | None, now: float) -> None:
        """A list page showed the job running: it started by now (a start already known stays)."""
        if job_type and job_id not in self._types:
            self._add(job_id, job_type, now)

    def ended(self, job_id: UUID) -> None:
        """Its end was seen (an event, a list page or its results): it is not going any more."""
        self._drop(job_id)

    def ran(self, job_id: UUID, job_type: str | None, seconds: float | None) -> None:
        """Its results were stored: the run is over, and took ``seconds`` when they say so."""
        self.ended(job_id)
        if seconds is not None:
            self.observe(job_type, seconds)

    # ------------------------------------------------------------ what is learned
    def get(self, job_type: str | None) -> float | None:
        """The typical run of the type, None before one was seen."""
        return self._means.get(job_type) if job_type else None

    def overdue(self, job_type: str | None, now: float) -> float | None:
        """Seconds after its start by which a run of this type has ended, with a margin; None
        while what is known cannot say (too few runs ended, or too many known lasted longer)."""
        known = self._quantile(job_type) if job_type else None
        if known is None or not job_type:
            return None
        quantile, ended_longer = known
        self._forget(job_type, now - FORGET_RUNS * quantile)
        going = self._going.get(job_type) or OrderedDict()
        going_longer = sum(1 for start in going.values() if now - start > quantile)
        if ended_longer + going_longer > LONGER_SHARE * (len(self._recent[job_type]) + len(going)):
            return None
        return OVERDUE_MARGIN * quantile

    def _quantile(self, job_type: str) -> tuple[float, int] | None:
        """The quantile of the type's recent ended runs and how many of them lasted longer, kept
        until the next run of the type ends; None before enough ended."""
        cached = self._quantiles.get(job_type)
        if cached is not None:
            return cached
        recent = self._recent.get(job_type)
        if recent is None or len(recent) < OVERDUE_SAMPLES:
            return None
        runs = sorted(recent)
        quantile = runs[min(len(runs) - 1, int(OVERDUE_QUANTILE * len(runs)))]
        cached = self._quantiles[job_type] = (quantile, sum(1 for d in runs if d > quantile))
        return cached

    def _add(self, job_id: UUID, job_type: str, now: float) -> None:
        going = self._going.setdefault(job_type, OrderedDict())
        going[job_id] = now
        self._types[job_id] = job_type
        while len(going) > GOING_MAX:
            oldest, _ = going.popitem(last=False)
            del self._types[oldest]

    def _drop(self, job_id: UUID) -> None:
        job_type = self._types.pop(job_id, None)
        if job_type is not None:
            del self._going[job_type][job_id]

    def _forget(self, job_type: str, started_before: float) -> None:
        """Runs of the type started before ``started_before`` and still silent are over (lost
        ends, cancels). Starts are kept in the order they were seen, so the oldest come first."""
        going = self._going.get(job_type)
        while going:
            job_id, start = next(iter(going.items()))
            if start >= started_before:
                break
            del going[job_id]
            del self._types[job_id]
