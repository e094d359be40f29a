"""Run-time shapes and the reported share of a run: the default draws exactly what the simulator
always drew; lognormal runs are reproducible, centred on the range's midpoint, heavy-tailed and
capped; a bad shape, sigma or share is refused with its name."""

from __future__ import annotations

import random
import re
import statistics
from collections import Counter
from typing import Any

import pytest

from harvester.sim.admin import create_jobs
from harvester.sim.clock import ManualClock
from harvester.sim.jobs import (
    DOCUMENTED,
    MAPS,
    RUN_CAP,
    SITE,
    Job,
    Plan,
    RunTimes,
    draw_run,
    plan_job,
    reported,
)
from harvester.sim.settings import SimSettings
from harvester.sim.state import SimState

JOB_IDS = [f"00000000-0000-4000-8000-{i:012d}" for i in range(1000)]
SITE_RANGE = (10.0, 30.0)
LOGNORMAL = RunTimes("lognormal", 1.0, 1.0)

# Jobs of SimState(SimSettings(seed=7)) as the simulator drew them before it had run-time shapes:
# four spiderSite, four spiderMaps, four spiderVerify (job id, start, end, how it ends); and over 100
# of each type, the sum of their runs and how they end. The defaults must keep drawing exactly these.
BEFORE: list[tuple[str, float, float, str]] = [
    ("d4de6a42-3181-44b3-a26b-5f9116f9789d", 2.122188696456211, 27.879685058883812, "completed"),
    ("95095b94-0abb-4939-88d5-0e4edc2eaf33", 3.6473908293871444, 21.114186460236596, "completed"),
    ("967fae63-46ac-4964-ac62-ab5705f00051", 3.0488994748226834, 21.295303276386797, "completed"),
    ("687b972d-6e1e-47d4-afbb-083042a4e146", 3.89634102638779, 25.191220430045217, "completed"),
    ("b95f5de4-9311-4ac2-a649-35f8af48b12d", 2.8608195298158696, 85.51256393820688, "completed"),
    ("f87b9ba2-777e-4d36-a61c-3e4dddea9ce3", 1.6062437224584702, 87.59062391045002, "completed"),
    ("e5d9c700-8d29-43b4-ba4a-3e96e98baf1e", 3.8752060707427556, 41.89594077669809, "completed"),
    ("a9791c33-225c-46b3-9cba-c3fb8df16a32", 3.9587634873616566, 74.31974160938547, "completed"),
    ("693408e3-a288-4a2e-9955-25e5e9f896d7", 2.1078201186501926, 6.751281365027724, "completed"),
    ("35876b3f-a4d7-4522-9dbe-e13196d0adf6", 1.3457579344682222, 10.53460251112953, "completed"),
    ("f663d59f-5cd5-4601-8935-d6c33fa16db1", 2.6113163552539596, 3.0830979154786444, "failed"),
    ("f7781415-a5de-43cf-a666-2edbed7b80e1", 3.4907872962330915, 8.877702197150384, "completed"),
]
BEFORE_300_RUNS_S = 8072.391582992422
BEFORE_300_ENDS = {"completed": 277, "failed": 15, "cancelled": 8}


def plan(job_id: str, run_times: RunTimes = DOCUMENTED, seed: int = 7, **kw: Any) -> Job:
    args: dict[str, Any] = {
        "job_id": job_id,
        "job_type": SITE,
        "owner": "a:b:c",
        "payload": {},
        "priority": 0,
        "now": 0.0,
        "seed": seed,
        "queue_wait": (0.5, 4.0),
        "duration": SITE_RANGE,
        "fail_rate": 0.0,
        "cancel_rate": 0.0,
        "plan": Plan(),
        "variants": True,
        "run_times": run_times,
        **kw,
    }
    return plan_job(**args)


def runs(run_times: RunTimes, seed: int = 7) -> list[float]:
    return [(j := plan(job_id, run_times, seed)).end_at - j.start_at for job_id in JOB_IDS]


def quantile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def ending(job: Job) -> str:
    return "cancelled" if job.cancel_at is not None else job.outcome


def default_jobs(per_type: int) -> list[Job]:
    state = SimState(SimSettings(seed=7), ManualClock())
    cred = next(iter(state.credentials.values()))
    for job_type in (SITE, MAPS, "spiderVerify"):
        create_jobs(state, cred, per_type, job_type, Plan())
    return list(state.jobs.values())


def test_default_settings_draw_the_jobs_the_simulator_always_drew() -> None:
    assert [(j.job_id, j.start_at, j.end_at, ending(j)) for j in default_jobs(4)] == BEFORE
    jobs = default_jobs(100)
    assert sum(job.end_at - job.start_at for job in jobs) == BEFORE_300_RUNS_S
    assert Counter(ending(job) for job in jobs) == BEFORE_300_ENDS
    assert all(job.reported_share == 1.0 for job in jobs)
    assert all(
        job.processing_time() == round(job.finished_at() - job.start_at, 1)
        for job in jobs
        if job.finished_at() > job.start_at
    )


def test_uniform_is_the_same_single_draw_as_before() -> None:
    for seed in range(200):
        rng, old = random.Random(seed), random.Random(seed)
        assert draw_run(rng, *SITE_RANGE, "uniform", 1.0) == old.uniform(*SITE_RANGE)
        assert rng.random() == old.random()


def test_a_lognormal_run_takes_one_draw_so_the_job_s_other_draws_do_not_change() -> None:
    rng, old = random.Random(3), random.Random(3)
    draw_run(rng, *SITE_RANGE, "lognormal", 1.0)
    old.random()
    assert rng.random() == old.random()
    for job_id in JOB_IDS[:200]:
        uniform = plan(job_id, fail_rate=0.05, cancel_rate=0.02)
        heavy = plan(job_id, LOGNORMAL, fail_rate=0.05, cancel_rate=0.02)
        assert (heavy.start_at, heavy.outcome, heavy.worker_id, heavy.error_message) == (
            uniform.start_at,
            uniform.outcome,
            uniform.worker_id,
            uniform.error_message,
        )


def test_lognormal_runs_are_reproducible_for_a_seed() -> None:
    assert runs(LOGNORMAL) == runs(LOGNORMAL)
    assert runs(LOGNORMAL) != runs(LOGNORMAL, seed=8)


def test_lognormal_runs_centre_on_the_midpoint_with_a_heavy_tail_and_a_cap() -> None:
    drawn = runs(LOGNORMAL)
    median = statistics.median(drawn)
    assert median == pytest.approx(20.0, rel=0.1)
    assert quantile(drawn, 99) > 5 * median  # a few deep crawls, 10x the median in theory
    assert max(drawn) <= 20.0 * RUN_CAP + 1e-9
    assert sum(1 for run in drawn if SITE_RANGE[0] <= run <= SITE_RANGE[1]) < 0.5 * len(drawn)


def test_uniform_runs_stay_within_the_range() -> None:
    drawn = runs(DOCUMENTED)
    assert SITE_RANGE[0] - 1e-9 <= min(drawn) and max(drawn) <= SITE_RANGE[1] + 1e-9


def test_lognormal_runs_are_capped_both_ways() -> None:
    rng = random.Random(1)
    drawn = [draw_run(rng, *SITE_RANGE, "lognormal", 10.0) for _ in range(1000)]
    assert min(drawn) == pytest.approx(20.0 / RUN_CAP) and max(drawn) == pytest.approx(20.0 * RUN_CAP)
    assert all(20.0 / RUN_CAP <= run <= 20.0 * RUN_CAP for run in drawn)


def test_a_draw_of_zero_is_the_floor_not_an_error() -> None:
    class Zero(random.Random):
        def random(self) -> float:
            return 0.0

    assert draw_run(Zero(), *SITE_RANGE, "lognormal", 1.0) == pytest.approx(20.0 / RUN_CAP)


def test_a_duration_the_plan_gives_is_kept_whatever_the_shape() -> None:
    job = plan(JOB_IDS[0], LOGNORMAL, plan=Plan(duration_s=(20.0, 20.0)))
    assert job.end_at - job.start_at == pytest.approx(20.0)


@pytest.mark.parametrize(("share", "expected"), [(1.0, 20.0), (0.5, 10.0), (0.25, 5.0), (None, None)])
def test_a_job_reports_the_share_of_its_run(share: float | None, expected: float | None) -> None:
    job = plan(JOB_IDS[0], RunTimes(share=share), plan=Plan(duration_s=(20.0, 20.0)))
    assert job.reported_share == share
    assert job.processing_time() == expected


def test_a_job_that_never_started_reports_no_processing_time() -> None:
    job = plan(JOB_IDS[0], RunTimes(share=0.5))
    job.cancel(job.start_at - 0.1)
    assert job.processing_time() is None


def test_reported_rounds_to_one_decimal() -> None:
    assert reported(20.04, 1.0) == 20.0 and reported(20.06, 0.5) == 10.0 and reported(20.0, None) is None


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"processing_time_share": 0.0}, "processing_time_share must be within (0, 1], or null"),
        ({"processing_time_share": 1.5}, "processing_time_share must be within (0, 1], or null"),
        ({"processing_time_share": -0.5}, "processing_time_share must be within (0, 1], or null"),
        ({"processing_time_share": float("nan")}, "processing_time_share must be within (0, 1], or null"),
        ({"processing_time_share": "0.5"}, "processing_time_share must be within (0, 1], or null"),
        ({"run_time_shape": "pareto"}, "run_time_shape must be 'uniform' or 'lognormal'"),
        ({"run_time_sigma": 0.0}, "run_time_sigma must be a positive number"),
        ({"run_time_sigma": float("inf")}, "run_time_sigma must be a positive number"),
        ({"run_time_sigma": "1"}, "run_time_sigma must be a number"),
    ],
)
def test_settings_refuse_a_bad_shape_sigma_or_share(kw: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        SimSettings(**kw)


def test_settings_take_a_null_share_and_the_lognormal_shape() -> None:
    settings = SimSettings(run_time_shape="lognormal", run_time_sigma=0.5, processing_time_share=None)
    assert settings.run_times() == RunTimes("lognormal", 0.5, None)
    assert SimSettings().run_times() == DOCUMENTED == RunTimes("uniform", 1.0, 1.0)
