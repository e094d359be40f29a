"""The simulator's HTTP contract: documented bodies, auth, tenants, lifecycle, submit, list."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from harvester.sim import ManualClock, SimServer
from tests.support.paths import FIXTURES

TOKEN = "cli_alpha:sk_alpha:secret_alpha"
OTHER = "cli_beta:sk_beta:secret_beta"
INACTIVE = "cli_gone:sk_gone:secret_gone"


def example(name: str) -> dict[str, Any]:
    folder = "seed" if (FIXTURES / "seed" / name).exists() else "spideriq"
    body: dict[str, Any] = json.loads((FIXTURES / folder / name).read_text())
    return body


def auth(token: str = TOKEN) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sim(clock: ManualClock) -> AsyncIterator[SimServer]:
    async with SimServer(
        clock=clock,
        seed=5,
        tokens=[TOKEN, OTHER],
        inactive_tokens=(INACTIVE,),
        fail_rate=0.0,
        cancel_rate=0.0,
        burst=1000,
    ) as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


async def call(
    http: aiohttp.ClientSession, method: str, url: str, token: str | None = TOKEN, **kw: Any
) -> tuple[int, Any, Any]:
    headers = auth(token) if token else {}
    async with http.request(method, url, headers=headers, **kw) as resp:
        return resp.status, await resp.json(), resp.headers


async def make_jobs(http: aiohttp.ClientSession, sim: SimServer, **body: Any) -> list[str]:
    status, answer, _ = await call(http, "POST", sim.url + "/_sim/jobs", None, json={"token": TOKEN, **body})
    assert status == 201, answer
    ids: list[str] = answer["job_ids"]
    return ids


async def test_results_200_has_the_seed_envelope_keys(sim: SimServer, http: aiohttp.ClientSession) -> None:
    site = await make_jobs(http, sim, count=5, type="spiderSite", outcome="completed", start_offset_s=500)
    maps = await make_jobs(http, sim, count=2, type="spiderMaps", outcome="completed", start_offset_s=500)
    envelope = set(example("site-champ-200.json"))
    site_keys = set(example("site-champ-200.json")["data"])
    for job_id in site:
        status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{job_id}/results")
        assert status == 200
        assert set(body) == envelope
        assert body["success"] is True and body["status"] == "completed"
        assert body["job_id"] == job_id and body["type"] == "spiderSite"
        assert "contact_info" in body["data"] or set(body["data"]) == site_keys
    for job_id in maps:
        status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{job_id}/results")
        assert status == 200
        assert set(body["data"]) == set(example("maps-200.json")["data"])


async def test_results_202_410_404_bodies(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    (fresh,) = await make_jobs(http, sim, count=1, duration_s=20)
    (failed,) = await make_jobs(http, sim, count=1, outcome="failed", start_offset_s=900)
    (cancelled,) = await make_jobs(http, sim, count=1, outcome="cancelled", start_offset_s=900)
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{fresh}/results")
    assert status == 202
    assert set(body) == set(example("processing-202.json"))
    assert body["data"] is None and body["success"] is False
    assert body["status"] in ("queued", "processing", "running")
    for job_id, expected in ((failed, "failed"), (cancelled, "cancelled")):
        status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{job_id}/results")
        assert status == 410
        assert set(body) == set(example("failed-410.json"))
        assert body["status"] == expected and body["error_message"]
        assert body["data"] is None
    status, body, _ = await call(
        http, "GET", f"{sim.url}/api/v1/jobs/{'0' * 8}-0000-4000-8000-{'0' * 12}/results"
    )
    assert (status, body) == (404, example("not-found-404.json"))


async def test_lifecycle_over_simulated_time(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    (job_id,) = await make_jobs(http, sim, count=1, duration_s=20, outcome="completed")
    job = sim.state.jobs[job_id]
    url = f"{sim.url}/api/v1/jobs/{job_id}/status"
    seen = []
    updated = []
    for _ in range(40):
        status, body, _ = await call(http, "GET", url)
        assert status == 200 and set(body) == set(example("jobs-status.200-queued.json"))
        seen.append(body["status"])
        updated.append(body["updated_at"])
        clock.advance(1.0)
    assert seen[0] == "queued" and seen[-1] == "completed"
    assert "processing" in seen
    order = ["queued", "processing", "completed"]
    assert [s for i, s in enumerate(seen) if i == 0 or seen[i - 1] != s] == order
    assert len(set(updated)) == 3  # updated_at moves at each transition
    assert job.end_at - job.start_at == pytest.approx(20.0)
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{job_id}/results")
    assert status == 200 and body["processing_time_seconds"] == pytest.approx(20.0)


async def test_status_worker_id_is_null_while_queued(sim: SimServer, http: aiohttp.ClientSession) -> None:
    (job_id,) = await make_jobs(http, sim, count=1, duration_s=20)
    sim.state.jobs[job_id].start_at += 100
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{job_id}/status")
    assert status == 200
    assert body["status"] == "queued" and body["worker_id"] is None
    assert body["created_at"].endswith("Z") or "T" in body["created_at"]


async def test_auth_failures(sim: SimServer, http: aiohttp.ClientSession) -> None:
    url = f"{sim.url}/api/v1/jobs/list"
    bad_format = example("error.401-invalid-token-format.json")
    for headers in (
        {},
        {"Authorization": "Bearer onlyonepart"},
        {"Authorization": "Basic a:b:c"},
        {"Authorization": "Bearer a::c"},
    ):
        async with http.get(url, headers=headers) as resp:
            assert resp.status == 401
            assert await resp.json() == bad_format
    status, body, _ = await call(http, "GET", url, "who:are:you")
    assert status == 401 and set(body) == {"detail"}
    status, body, headers = await call(http, "GET", url, INACTIVE)
    assert status == 403 and set(body) == {"detail"}


async def test_tenants_see_only_their_own_jobs(sim: SimServer, http: aiohttp.ClientSession) -> None:
    mine = await make_jobs(http, sim, count=3, start_offset_s=500, outcome="completed")
    for path in ("results", "status"):
        status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{mine[0]}/{path}", OTHER)
        assert (status, body) == (404, {"detail": "Job not found"})
    status, body, _ = await call(http, "DELETE", f"{sim.url}/api/v1/jobs/{mine[0]}", OTHER)
    assert status == 404
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/list", OTHER)
    assert body["total"] == 0 and body["jobs"] == []
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/list")
    assert body["total"] == 3


async def test_list_shape_paging_filters_and_sorting(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    done = await make_jobs(http, sim, count=7, start_offset_s=500, outcome="completed")
    clock.advance(1)
    failed = await make_jobs(http, sim, count=2, start_offset_s=500, outcome="failed")
    clock.advance(1)
    maps = await make_jobs(http, sim, count=3, type="spiderMaps", duration_s=50)
    url = f"{sim.url}/api/v1/jobs/list"
    status, body, _ = await call(http, "GET", url, params={"page_size": "5", "page": "2"})
    assert status == 200
    assert set(body) == {"total", "page", "page_size", "total_pages", "jobs"}
    assert (body["total"], body["page"], body["page_size"], body["total_pages"]) == (12, 2, 5, 3)
    assert len(body["jobs"]) == 5
    assert set(body["jobs"][0]) == {
        "job_id",
        "type",
        "status",
        "url",
        "created_at",
        "updated_at",
        "worker_id",
    }
    _, body, _ = await call(http, "GET", url, params={"status_filter": "failed"})
    assert sorted(row["job_id"] for row in body["jobs"]) == sorted(failed)
    _, body, _ = await call(http, "GET", url, params={"type_filter": "spiderMaps"})
    assert sorted(row["job_id"] for row in body["jobs"]) == sorted(maps)
    assert all(row["url"] is None for row in body["jobs"])
    _, body, _ = await call(
        http, "GET", url, params={"sort_by": "created_at", "sort_order": "asc", "page_size": "100"}
    )
    ids = [row["job_id"] for row in body["jobs"]]
    assert set(ids[:7]) == set(done) and set(ids[-3:]) == set(maps)
    _, body, _ = await call(http, "GET", url, params={"sort_by": "updated_at"})
    times = [sim.state.jobs[row["job_id"]].updated_at(clock.now()) for row in body["jobs"]]
    assert times == sorted(times, reverse=True)
    _, body, _ = await call(http, "GET", url, params={"page": "9"})
    assert body["jobs"] == [] and body["total"] == 12


@pytest.mark.parametrize(
    "params",
    [
        {"page_size": "101"},
        {"page": "0"},
        {"page": "x"},
        {"status_filter": "done"},
        {"sort_by": "name"},
        {"sort_order": "up"},
    ],
)
async def test_list_rejects_bad_parameters_with_422(
    sim: SimServer, http: aiohttp.ClientSession, params: dict[str, str]
) -> None:
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/list", params=params)
    assert status == 422
    assert isinstance(body["detail"], list) and body["detail"][0]["loc"][0] == "query"


async def test_cancel_semantics(sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession) -> None:
    (running,) = await make_jobs(http, sim, count=1, duration_s=60, outcome="completed")
    (done,) = await make_jobs(http, sim, count=1, start_offset_s=500, outcome="completed")
    (failed,) = await make_jobs(http, sim, count=1, start_offset_s=500, outcome="failed")
    clock.advance(10)
    status, body, _ = await call(http, "DELETE", f"{sim.url}/api/v1/jobs/{running}")
    assert status == 200
    assert set(body) == set(example("jobs-cancel.200.json")) and body["status"] == "cancelled"
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{running}/results")
    assert status == 410 and body["status"] == "cancelled"
    clock.advance(100)
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{running}/status")
    assert body["status"] == "cancelled"
    for job_id in (done, failed, running):
        status, body, _ = await call(http, "DELETE", f"{sim.url}/api/v1/jobs/{job_id}")
        assert status == 400 and set(body) == {"detail"}


async def test_submit_creates_jobs_and_dedups_for_24h(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    url = f"{sim.url}/api/v1/jobs/spiderSite/submit"
    payload = {"payload": {"url": "https://example.com", "mode": "contacts"}, "priority": 3}
    status, first, _ = await call(http, "POST", url, json=payload)
    assert status == 201
    assert set(first) == {"job_id", "type", "status", "created_at", "from_cache", "message"}
    assert first["status"] == "queued" and first["from_cache"] is False
    status, again, _ = await call(http, "POST", url, json=payload)
    assert status == 201 and again["job_id"] == first["job_id"] and again["from_cache"] is True
    status, test_run, _ = await call(
        http,
        "POST",
        url,
        json={"payload": {"url": "https://example.com", "mode": "contacts", "test": True}},
    )
    assert test_run["job_id"] != first["job_id"] and test_run["from_cache"] is False
    status, other_tenant, _ = await call(http, "POST", url, OTHER, json=payload)
    assert other_tenant["job_id"] != first["job_id"]
    clock.advance(24 * 3600 + 1)
    status, later, _ = await call(http, "POST", url, json=payload)
    assert later["job_id"] != first["job_id"] and later["from_cache"] is False
    status, maps, _ = await call(
        http,
        "POST",
        f"{sim.url}/api/v1/jobs/spiderMaps/submit",
        json={"payload": {"search_query": "cafes in Rome"}},
    )
    assert status == 201 and maps["type"] == "spiderMaps"
    assert sim.state.jobs[maps["job_id"]].payload == {"search_query": "cafes in Rome"}


@pytest.mark.parametrize(
    ("path", "body", "code", "detail"),
    [
        ("spiderSite", {"payload": {}}, 400, "Missing required field: url"),
        (
            "spiderSite",
            {"payload": {"url": "not a url"}},
            400,
            "Invalid URL format. Please provide a valid HTTP/HTTPS URL.",
        ),
        ("spiderSite", {"payload": {"url": "https://a.com", "mode": "everything"}}, 422, None),
        ("spiderSite", {"payload": {"url": "https://a.com", "max_pages": 500}}, 422, None),
        (
            "spiderSite",
            {"payload": {"url": "https://a.com", "product_description": "x"}},
            422,
            None,
        ),
        ("spiderSite", {"payload": {"url": "https://a.com"}, "priority": 11}, 422, None),
        ("spiderSite", {"nopayload": 1}, 422, None),
        (
            "spiderMaps",
            {"payload": {"max_results": 5}},
            400,
            "Missing required field: search_query",
        ),
        ("spiderMaps", {"payload": {"search_query": "x", "max_results": 101}}, 422, None),
        ("spiderNope", {"payload": {}}, 404, "Not Found"),
    ],
)
async def test_submit_validation(
    sim: SimServer,
    http: aiohttp.ClientSession,
    path: str,
    body: dict[str, Any],
    code: int,
    detail: str | None,
) -> None:
    status, answer, _ = await call(http, "POST", f"{sim.url}/api/v1/jobs/{path}/submit", json=body)
    assert status == code and set(answer) == {"detail"}
    if detail is not None:
        assert answer["detail"] == detail
    assert sim.state.jobs == {}


async def test_generic_submit_checks_job_type(sim: SimServer, http: aiohttp.ClientSession) -> None:
    status, body, _ = await call(
        http,
        "POST",
        f"{sim.url}/api/v1/jobs/submit",
        json={"job_type": "spiderX", "url": "https://a.com"},
    )
    assert (status, body) == (400, example("error.400-invalid-job-type.json"))
    status, body, _ = await call(
        http, "POST", f"{sim.url}/api/v1/jobs/submit", json={"job_type": "spiderSite"}
    )
    assert (status, body) == (400, example("error.400-missing-url.json"))


async def test_system_endpoints(sim: SimServer, http: aiohttp.ClientSession) -> None:
    await make_jobs(http, sim, count=4, duration_s=30)
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/system/health", None)
    sample = example("system-health.200-healthy.json")
    assert status == 200 and set(body) == set(sample)
    assert set(body["services"]) == set(sample["services"])
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/system/queue-stats", None)
    sample = example("system-queue-stats.200.json")
    assert status == 200 and set(body) == set(sample)
    for part in ("queues", "workers"):
        assert set(body[part]) == set(sample[part])
        for key, value in body[part].items():
            assert set(value) == set(sample[part][key])
    assert set(body["processing"]) == set(sample["processing"])
    assert body["queues"]["spider_site"]["total"] == 4


async def test_unknown_types_via_admin(sim: SimServer, http: aiohttp.ClientSession) -> None:
    ids = await make_jobs(http, sim, count=2, type="spiderVerify", start_offset_s=100, outcome="completed")
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{ids[0]}/results")
    assert status == 200 and body["type"] == "spiderVerify" and "summary" in body["data"]
    status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{ids[1]}/status")
    assert body["type"] == "spiderVerify"
    status, info, _ = await call(http, "GET", f"{sim.url}/_sim/jobs/{ids[0]}", None)
    assert info["status"] == "completed" and info["owner"] == "cli_alpha"
    assert TOKEN not in json.dumps(info)


async def test_same_seed_gives_same_jobs_and_bodies() -> None:
    async def run() -> list[str]:
        bodies = []
        async with SimServer(clock=ManualClock(), seed=11) as server, aiohttp.ClientSession() as s:
            async with s.post(
                server.url + "/_sim/jobs",
                json={"count": 6, "type": "spiderSite", "start_offset_s": 1000},
            ) as resp:
                ids = (await resp.json())["job_ids"]
            async with s.post(
                server.url + "/_sim/jobs",
                json={"count": 3, "type": "spiderMaps", "start_offset_s": 1000},
            ) as resp:
                ids += (await resp.json())["job_ids"]
            for job_id in ids:
                async with s.get(
                    f"{server.url}/api/v1/jobs/{job_id}/results", headers=auth(server.token)
                ) as resp:
                    bodies.append(await resp.text())
        return bodies

    first, second = await run(), await run()
    assert first == second
    assert len(set(first)) == len(first)


async def test_envelope_variants_running_and_naive_timestamps(
    sim: SimServer, clock: ManualClock, http: aiohttp.ClientSession
) -> None:
    ids = await make_jobs(http, sim, count=80, duration_s=100, outcome="completed")
    clock.advance(50)
    shown = set()
    for job_id in ids:
        status, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{job_id}/results")
        assert status == 202
        shown.add(body["status"])
    assert shown == {"processing", "running"}
    clock.advance(100)
    stamps = set()
    for job_id in ids:
        _, body, _ = await call(http, "GET", f"{sim.url}/api/v1/jobs/{job_id}/results")
        stamps.add("Z" if body["completed_at"].endswith("Z") else "naive")
    assert stamps == {"Z", "naive"}
