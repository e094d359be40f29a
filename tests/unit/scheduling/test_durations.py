"""The learned run durations: the typical run, and when a silent started run is overdue."""

from __future__ import annotations

import random
from uuid import UUID, uuid4

import pytest

from harvester.scheduling import policy
from harvester.scheduling.durations import FORGET_RUNS, OVERDUE_MARGIN, OVERDUE_SAMPLES, DurationModel
from tests.support import configs

CFG = configs.loaded().polling
MAPS = "spiderMaps"


def ended_runs(model: DurationModel, runs: list[float], job_type: str = MAPS) -> None:
    for seconds in runs:
        model.observe(job_type, seconds)


def going(model: DurationModel, n: int, at: float) -> list[UUID]:
    """``n`` Maps runs that started at ``at``."""
    runs = [uuid4() for _ in range(n)]
    for job_id in runs:
        model.started(job_id, MAPS, now=at)
    return runs


def spread(lo: float, hi: float, n: int) -> list[float]:
    return [lo + (hi - lo) * i / (n - 1) for i in range(n)]


def test_until_enough_runs_ended_a_started_job_is_overdue_at_twice_the_configured_run() -> None:
    """The first runs to end are the short ones, so a mean learned from them is short too: twice
    the configured typical run at least, until the quantile can be trusted."""
    model = DurationModel()
    assert policy.started_defer(MAPS, CFG) == 2 * CFG.first_poll_maps_s
    ended_runs(model, [30.0] * (OVERDUE_SAMPLES - 1))
    assert model.overdue(MAPS, 0.0) is None
    assert policy.started_defer(MAPS, CFG, model) == 2 * CFG.first_poll_maps_s
    ended_runs(model, [200.0] * 20, "spiderSite")  # a type slower than configured: its own mean
    assert policy.started_defer("spiderSite", CFG, model) == pytest.approx(400.0, rel=0.02)


def test_then_a_started_job_is_overdue_a_little_past_nearly_every_run_of_its_type() -> None:
    """Runs of 30 to 90 s: twice the mean (120 s) would leave a lost end unseen half a minute past
    the longest run; the learned quantile polls just after it."""
    model = DurationModel()
    runs = spread(30.0, 90.0, 200)
    random.Random(1).shuffle(runs)
    ended_runs(model, runs)
    overdue = policy.started_defer(MAPS, CFG, model)
    assert 88.0 * OVERDUE_MARGIN <= overdue <= 90.0 * OVERDUE_MARGIN
    assert overdue < 2 * (model.get(MAPS) or 0.0)


def test_a_type_with_a_long_tail_is_polled_after_its_tail() -> None:
    model = DurationModel()
    ended_runs(model, [20.0 if i % 10 else 220.0 for i in range(200)])
    assert model.overdue(MAPS, 0.0) == pytest.approx(OVERDUE_MARGIN * 220.0)


def test_the_first_wave_of_a_bulk_still_running_keeps_the_quantile_of_its_short_runs_untrusted() -> None:
    """A bulk started together: 40 short runs ended (30-45 s), 100 more have run 50 s and still
    go. The quantile of the ended ones (45 s) would poll the whole wave while it runs."""
    model = DurationModel()
    ended_runs(model, spread(30.0, 45.0, 40))
    going(model, 100, at=0.0)
    assert model.overdue(MAPS, now=40.0) is not None  # none has run longer than 45 s yet...
    assert model.overdue(MAPS, now=50.0) is None  # ...now they all have: not known
    assert policy.started_defer(MAPS, CFG, model, now=50.0) >= 2 * CFG.first_poll_maps_s


def test_runs_going_younger_than_the_quantile_say_nothing_against_it() -> None:
    model = DurationModel()
    ended_runs(model, spread(30.0, 90.0, 200))
    for age in spread(0.0, 85.0, 100):
        model.started(uuid4(), MAPS, now=-age)
    assert model.overdue(MAPS, now=0.0) == pytest.approx(OVERDUE_MARGIN * 88.2, rel=0.01)


def test_a_few_lost_ends_do_not_unsettle_it_and_are_forgotten_when_long_silent() -> None:
    model = DurationModel()
    ended_runs(model, spread(30.0, 90.0, 200))
    going(model, 5, at=0.0)
    assert model.overdue(MAPS, now=150.0) is not None  # 5 of 205 known lasted longer: fine
    going(model, 20, at=0.0)
    assert model.overdue(MAPS, now=150.0) is None  # 25 of 225: more than the runs' own tail
    assert model.overdue(MAPS, now=FORGET_RUNS * 90.0) is not None  # silent that long: over


def test_an_end_seen_takes_the_run_off_the_ones_going() -> None:
    model = DurationModel()
    ended_runs(model, spread(30.0, 45.0, 40))
    for job_id in going(model, 100, at=0.0):
        model.ended(job_id)
    assert model.overdue(MAPS, now=50.0) == pytest.approx(OVERDUE_MARGIN * 45.0, rel=0.01)
    model.started(uuid4(), "spiderSite", now=0.0)  # another type's runs count for their type only
    assert model.overdue(MAPS, now=50.0) is not None


def test_nonsense_durations_and_untyped_runs_are_ignored() -> None:
    model = DurationModel()
    for seconds in (None, 0.0, -3.0, 90000.0):
        model.observe(MAPS, seconds)
    model.observe(None, 10.0)
    model.started(uuid4(), None, now=0.0)
    assert model.get(MAPS) is None and model.overdue(MAPS, 0.0) is None


def test_a_page_showing_a_run_adds_it_once_and_keeps_a_start_already_known() -> None:
    """A process that does not hold the stream learns the runs going from its pages; the start a
    stream showed is more exact than the page that showed the run later, and stays."""
    model = DurationModel()
    ended_runs(model, spread(30.0, 45.0, 40))
    wave = [uuid4() for _ in range(100)]
    for job_id in wave:
        model.started(job_id, MAPS, now=0.0)
        model.seen_running(job_id, MAPS, now=40.0)  # a page later: the start at 0 stays
    assert model.overdue(MAPS, now=50.0) is None  # they have run 50 s, not 10
    for job_id in wave:
        model.ended(job_id)
    for job_id in wave:
        model.seen_running(job_id, MAPS, now=50.0)  # shown running from 50 s
    assert model.overdue(MAPS, now=60.0) is not None  # 10 s so far: nothing against the quantile


def test_a_stored_result_ends_its_run_and_teaches_its_time() -> None:
    model = DurationModel()
    for _ in range(OVERDUE_SAMPLES):
        model.observe("spiderSite", 10.0)
    going = [uuid4() for _ in range(5)]
    for job_id in going:
        model.started(job_id, "spiderSite", 0.0)
    assert model.overdue("spiderSite", 25.0) is None  # five runs going past the quantile
    for job_id in going[:4]:
        model.ran(job_id, "spiderSite", None)  # no processing time reported: nothing learned
    assert model.get("spiderSite") == pytest.approx(10.0)
    assert model.overdue("spiderSite", 25.0) == pytest.approx(OVERDUE_MARGIN * 10.0)
    model.ran(going[4], "spiderSite", 20.0)
    assert model.get("spiderSite") == pytest.approx(11.0)  # the mean moved a tenth of the way
