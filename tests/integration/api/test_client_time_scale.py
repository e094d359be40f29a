"""A Retry-After from a time-scaled API is converted to real seconds.

The simulator at ``--speed 40`` answers ``Retry-After: 120`` for a 120 simulated-second storm, which
lasts 3 real seconds. Before the client scaled it, every process paused for 120 real seconds (found
by the chaos run: a 30 s storm at speed 40 stopped the harvest for 30 s instead of 0.75 s).
"""

from __future__ import annotations

import uuid

from harvester.api.client import SpiderIQ
from harvester.api.outcomes import Outcome, RateLimited
from harvester.sim import SimServer

TOKEN = "scale:sk_scale_1:secret_scale_1"  # the simulator's own credential, not a secret


def client(url: str, time_scale: float) -> SpiderIQ:
    return SpiderIQ(
        url, TOKEN, connect_timeout_s=5, read_timeout_s=5, total_timeout_s=10, time_scale=time_scale
    )


async def fetch(spideriq: SpiderIQ) -> Outcome:
    async with spideriq:
        return await spideriq.fetch_result(uuid.uuid4())


async def test_storm_retry_after_is_divided_by_the_time_scale() -> None:
    async with SimServer(speed=40, seed=1, tokens=[TOKEN], faults={"storm_s": 120}) as sim:
        outcome = await fetch(client(sim.url, 40.0))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after_s is not None
    assert 0 < outcome.retry_after_s <= 120 / 40


async def test_unscaled_client_keeps_the_api_seconds() -> None:
    async with SimServer(speed=40, seed=1, tokens=[TOKEN], faults={"storm_s": 120}) as sim:
        outcome = await fetch(client(sim.url, 1.0))
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after_s is not None and outcome.retry_after_s > 100


async def test_list_page_retry_after_is_scaled_too() -> None:
    async with (
        SimServer(
            speed=40, seed=1, tokens=[TOKEN], faults={"long_retry_after": 1.0, "long_retry_after_s": 400}
        ) as sim,
        client(sim.url, 40.0) as scaled,
    ):
        outcome = await scaled.list_jobs(page=1)
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after_s == 400 / 40
