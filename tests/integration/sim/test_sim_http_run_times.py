"""Run-time shapes over HTTP: every body that reports a processing time reports the configured share
of the run, and ``/_sim/run-times`` changes the shape and the share for new jobs, refusing bad values."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from harvester.sim import ManualClock, SimServer

TOKEN = "cli_alpha:sk_alpha:secret_alpha"
DEFAULTS = {"run_time_shape": "uniform", "run_time_sigma": 1.0, "processing_time_share": 1.0}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


def server(clock: ManualClock, **overrides: Any) -> SimServer:
    return SimServer(
        clock=clock, seed=5, tokens=[TOKEN], fail_rate=0.0, cancel_rate=0.0, burst=1000, **overrides
    )


async def get(http: aiohttp.ClientSession, address: str) -> tuple[int, Any]:
    async with http.get(address, headers={"Authorization": f"Bearer {TOKEN}"}) as resp:
        return resp.status, await resp.json()


async def post(http: aiohttp.ClientSession, address: str, body: Any) -> tuple[int, Any]:
    async with http.post(address, json=body) as resp:
        return resp.status, await resp.json()


async def new_jobs(http: aiohttp.ClientSession, sim: SimServer, count: int = 1, **plan: Any) -> list[str]:
    status, body = await post(http, f"{sim.url}/_sim/jobs", {"count": count, "type": "spiderSite", **plan})
    assert status == 201, body
    ids: list[str] = body["job_ids"]
    return ids


@pytest.mark.parametrize(("share", "expected"), [(1.0, 20.0), (0.5, 10.0), (0.25, 5.0), (None, None)])
async def test_results_and_queue_stats_report_the_share_of_the_run(
    clock: ManualClock, http: aiohttp.ClientSession, share: float | None, expected: float | None
) -> None:
    async with server(clock, processing_time_share=share) as sim:
        (job_id,) = await new_jobs(http, sim, duration_s=20, outcome="completed")
        clock.advance(100.0)
        status, body = await get(http, f"{sim.url}/api/v1/jobs/{job_id}/results")
        assert status == 200 and body["processing_time_seconds"] == expected
        job = sim.state.jobs[job_id]
        assert job.end_at - job.start_at == pytest.approx(20.0)  # the run itself is unchanged
        _, stats = await get(http, f"{sim.url}/api/v1/system/queue-stats")
        assert stats["processing"]["avg_processing_time"] == (0.0 if expected is None else expected)
        _, info = await get(http, f"{sim.url}/_sim/jobs/{job_id}")
        assert info["processing_time_share"] == share


async def test_a_failed_job_reports_the_share_of_its_shortened_run(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async with server(clock, processing_time_share=0.5) as sim:
        (job_id,) = await new_jobs(http, sim, duration_s=40, outcome="failed")
        clock.advance(100.0)
        status, body = await get(http, f"{sim.url}/api/v1/jobs/{job_id}/results")
        job = sim.state.jobs[job_id]
        assert status == 410 and job.end_at - job.start_at < 40.0
        assert body["processing_time_seconds"] == round(0.5 * (job.end_at - job.start_at), 1)


async def test_a_running_job_reports_no_processing_time_whatever_the_share(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async with server(clock, processing_time_share=0.5) as sim:
        (job_id,) = await new_jobs(http, sim, duration_s=40, outcome="completed")
        clock.advance(10.0)
        status, body = await get(http, f"{sim.url}/api/v1/jobs/{job_id}/results")
        assert status == 202 and body["processing_time_seconds"] is None


async def test_run_times_change_at_run_time_for_new_jobs_only(
    clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    async with server(clock) as sim:
        assert await get(http, f"{sim.url}/_sim/run-times") == (200, DEFAULTS)
        before = await new_jobs(http, sim, count=50)
        change = {"run_time_shape": "lognormal", "run_time_sigma": 1.5, "processing_time_share": None}
        assert await post(http, f"{sim.url}/_sim/run-times", change) == (200, change)
        assert await get(http, f"{sim.url}/_sim/run-times") == (200, change)
        after = await new_jobs(http, sim, count=50)
        assert await post(http, f"{sim.url}/_sim/run-times", {"processing_time_share": 0.5}) == (
            200,
            {**change, "processing_time_share": 0.5},
        )
        jobs = sim.state.jobs
        old_runs = [jobs[i].end_at - jobs[i].start_at for i in before]
        new_runs = [jobs[i].end_at - jobs[i].start_at for i in after]
        assert all(10.0 - 1e-9 <= run <= 30.0 + 1e-9 for run in old_runs)
        assert any(run > 30.0 for run in new_runs) and any(run < 10.0 for run in new_runs)
        assert {jobs[i].reported_share for i in before} == {1.0}
        assert {jobs[i].reported_share for i in after} == {None}
        clock.advance(10_000.0)
        _, old = await get(http, f"{sim.url}/api/v1/jobs/{before[0]}/results")
        _, new = await get(http, f"{sim.url}/api/v1/jobs/{after[0]}/results")
        assert old["processing_time_seconds"] is not None and new["processing_time_seconds"] is None


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        ({"processing_time_share": 0}, "processing_time_share must be within (0, 1], or null"),
        ({"processing_time_share": 1.5}, "processing_time_share must be within (0, 1], or null"),
        ({"processing_time_share": "half"}, "processing_time_share must be within (0, 1], or null"),
        ({"run_time_shape": "pareto"}, "run_time_shape must be 'uniform' or 'lognormal'"),
        ({"run_time_sigma": 0}, "run_time_sigma must be a positive number"),
        ({"run_time_sigma": "wide"}, "run_time_sigma must be a number"),
        ({"run_time_shape": "lognormal", "sigma": 2}, "unknown run-time key: sigma"),
        ([0.5], "body must be a JSON object"),
    ],
)
async def test_bad_run_times_are_refused_and_change_nothing(
    clock: ManualClock, http: aiohttp.ClientSession, body: Any, detail: str
) -> None:
    async with server(clock) as sim:
        assert await post(http, f"{sim.url}/_sim/run-times", body) == (400, {"detail": detail})
        assert await get(http, f"{sim.url}/_sim/run-times") == (200, DEFAULTS)
