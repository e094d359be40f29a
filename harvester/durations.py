"""How long the runs of each job type take, learned from what harvester sees of them.

Two figures per type. The typical run, an exponentially weighted mean of the processing times the
results report, paces polls. The time by which nearly every run has ended (``overdue``) says when
a job the stream showed started, and whose end it has not announced, is worth a direct poll: its
end event was lost, or it was cancelled (no event says so).

That second figure cannot come from the runs that ended alone. The first runs to end are the short
ones: early on, and all through the first wave of a bulk, the longest run that ended is far
shorter than the longest run, and a quantile of them would poll most of the wave while it still
runs. So the runs still going count too (the stream's ``job.started`` adds one, an end removes it):
the quantile of the ended runs is trusted only while few of the runs known, ended or going, have
lasted longer than it. A run silent for far longer than the quantile is taken for lost and
forgotten (its end was lost, or it was cancelled; a poll finds it).

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
GOING_MAX = 10_000  # runs going tracked at most (the oldest go first)


class DurationModel:
    __slots__ = ("_alpha", "_going", "_means", "_recent")

    def __init__(self, alpha: float = 0.1) -> None:
        self._alpha = alpha
        self._means: dict[str, float] = {}
        self._recent: dict[str, deque[float]] = {}
        self._going: OrderedDict[UUID, tuple[str, float]] = OrderedDict()  # job -> (type, start)

    # ------------------------------------------------------------ what is seen
    def observe(self, job_type: str | None, seconds: float | None) -> None:
        """A run that ended took ``seconds`` (the processing time its results report)."""
        if not job_type or seconds is None or not (0 < seconds < 86400):
            return
        mean = self._means.get(job_type)
        self._means[job_type] = seconds if mean is None else mean + self._alpha * (seconds - mean)
        self._recent.setdefault(job_type, deque(maxlen=RECENT_RUNS)).append(seconds)

    def started(self, job_id: UUID, job_type: str | None, now: float) -> None:
        """The stream showed this job's run start."""
        if not job_type:
            return
        self._going[job_id] = (job_type, now)
        self._going.move_to_end(job_id)
        while len(self._going) > GOING_MAX:
            self._going.popitem(last=False)

    def ended(self, job_id: UUID) -> None:
        """Its end was seen (an event, a list page or its results): it is not going any more."""
        self._going.pop(job_id, None)

    # ------------------------------------------------------------ what is learned
    def get(self, job_type: str | None) -> float | None:
        """The typical run of the type, None before one was seen."""
        return self._means.get(job_type) if job_type else None

    def overdue(self, job_type: str | None, now: float) -> float | None:
        """Seconds after its start by which a run of this type has ended, with a margin; None
        while what is known cannot say (too few runs ended, or too many known lasted longer)."""
        recent = self._recent.get(job_type or "")
        if recent is None or len(recent) < OVERDUE_SAMPLES:
            return None
        runs = sorted(recent)
        quantile = runs[min(len(runs) - 1, int(OVERDUE_QUANTILE * len(runs)))]
        self._forget(job_type, now, FORGET_RUNS * quantile)
        ages = [now - start for kind, start in self._going.values() if kind == job_type]
        longer = sum(1 for d in runs if d > quantile) + sum(1 for age in ages if age > quantile)
        if longer > LONGER_SHARE * (len(runs) + len(ages)):
            return None
        return OVERDUE_MARGIN * quantile

    def _forget(self, job_type: str | None, now: float, silent_s: float) -> None:
        """Runs of the type silent for longer than ``silent_s`` are over (lost ends, cancels)."""
        stale = [j for j, (kind, start) in self._going.items() if kind == job_type and now - start > silent_s]
        for job_id in stale:
            del self._going[job_id]
