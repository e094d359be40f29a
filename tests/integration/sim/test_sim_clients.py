"""The simulator is multi-tenant: each token is a client with its own jobs, list, stream and
bucket, and one client can be revoked and restored while the others go on."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from harvester.sim import SimServer

A, B = "cli_a:key:secret", "cli_b:key:secret"


@pytest.fixture
async def sim() -> AsyncIterator[SimServer]:
    async with SimServer(speed=50.0, seed=2, tokens=[A, B]) as s:
        yield s


async def call(
    sim: SimServer, method: str, path: str, token: str | None = None, **kw: object
) -> tuple[int, dict]:  # type: ignore[type-arg]
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as session,
        session.request(method, sim.url + path, headers=headers, **kw) as resp,  # type: ignore[arg-type]
    ):
        return resp.status, await resp.json()


async def test_each_client_lists_only_its_own_jobs_and_one_can_be_revoked(sim: SimServer) -> None:
    _, made_a = await call(sim, "POST", "/_sim/jobs", json={"count": 3, "token": A})
    _, made_b = await call(sim, "POST", "/_sim/jobs", json={"count": 2, "token": "cli_b"})
    status, page_a = await call(sim, "GET", "/api/v1/jobs/list?page=1&page_size=100", A)
    assert status == 200 and {j["job_id"] for j in page_a["jobs"]} == set(made_a["job_ids"])
    status, page_b = await call(sim, "GET", "/api/v1/jobs/list?page=1&page_size=100", B)
    assert {j["job_id"] for j in page_b["jobs"]} == set(made_b["job_ids"])
    other = made_b["job_ids"][0]
    status, _ = await call(sim, "GET", f"/api/v1/jobs/{other}/results", A)
    assert status == 404  # another client's job

    status, answer = await call(sim, "POST", "/_sim/tokens", json={"token": "cli_b", "action": "revoke"})
    assert status == 200 and answer["status"] == "revoked"
    assert (await call(sim, "GET", "/api/v1/jobs/list?page=1", B))[0] == 401
    assert (await call(sim, "GET", "/api/v1/jobs/list?page=1", A))[0] == 200
    await call(sim, "POST", "/_sim/tokens", json={"token": "cli_b", "action": "restore"})
    assert (await call(sim, "GET", "/api/v1/jobs/list?page=1", B))[0] == 200
