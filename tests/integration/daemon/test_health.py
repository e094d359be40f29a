"""The operations server for real on 127.0.0.1, port 0: /metrics, /healthz, /readyz."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import aiohttp
import asyncpg
import pytest
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families

from harvester.daemon.health import PoolHealth, QueueRefresher, ServerHandle, start_server
from harvester.daemon.metrics import Metrics
from harvester.errors import HarvesterError


@dataclass
class FakeHealth:
    last_tick: float = field(default_factory=time.monotonic)
    auth_ok: bool = True
    paused_reason: str | None = None
    database: bool = True
    discovery_detail: str | None = None

    async def db_ok(self) -> bool:
        return self.database


@pytest.fixture
def health() -> FakeHealth:
    return FakeHealth()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
async def server(metrics: Metrics, health: FakeHealth) -> AsyncIterator[ServerHandle]:
    handle = await start_server("127.0.0.1:0", metrics, health, stale_after_s=15.0)
    try:
        yield handle
    finally:
        await handle.close()


async def get(server: ServerHandle, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}{path}") as response,
    ):
        return response.status, response.headers["Content-Type"], await response.text()


async def test_port_zero_binds_a_real_port(server: ServerHandle) -> None:
    assert server.port > 0


async def test_metrics_serves_the_registry_as_prometheus_text(server: ServerHandle, metrics: Metrics) -> None:
    metrics.request_done("results", 200, 0.0)
    status, content_type, text = await get(server, "/metrics")
    assert status == 200
    assert content_type == CONTENT_TYPE_LATEST
    families = {f.name: f for f in text_string_to_metric_families(text)}
    sample = families["harvester_api_requests"].samples[0]
    assert sample.labels == {"account": "default", "endpoint": "results", "status": "200"}
    assert sample.value == 1


async def test_metrics_mirror_the_credential_state(server: ServerHandle, health: FakeHealth) -> None:
    health.auth_ok = False
    _, _, text = await get(server, "/metrics")
    assert 'harvester_auth_paused{account="default"} 1.0' in text


async def test_healthz_is_200_while_the_loop_ticks(server: ServerHandle) -> None:
    status, content_type, text = await get(server, "/healthz")
    assert status == 200
    assert content_type.startswith("application/json")
    assert '"alive": true' in text


async def test_healthz_is_503_when_the_loop_is_stale(server: ServerHandle, health: FakeHealth) -> None:
    health.last_tick = time.monotonic() - 16.0
    status, _, text = await get(server, "/healthz")
    assert status == 503
    assert '"alive": false' in text


async def test_readyz_is_200_when_every_check_passes(server: ServerHandle) -> None:
    status, _, text = await get(server, "/readyz")
    assert status == 200
    assert '"ready": true' in text


@pytest.mark.parametrize(
    ("change", "failing"),
    [
        ({"database": False}, "database"),
        ({"auth_ok": False}, "credential"),
        ({"paused_reason": "circuit breaker open"}, "polling"),
        ({"paused_reason": "rate limited (429)"}, "polling"),
    ],
)
async def test_readyz_is_503_and_names_the_failing_check(
    server: ServerHandle, health: FakeHealth, change: dict[str, object], failing: str
) -> None:
    for key, value in change.items():
        setattr(health, key, value)
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/readyz") as response,
    ):
        assert response.status == 503
        body = await response.json()
    assert body["ready"] is False
    assert {name for name, check in body["checks"].items() if not check["ok"]} == {failing}
    assert set(body["checks"]) == {"database", "credential", "polling"}


async def test_readyz_shows_how_finished_jobs_are_found_and_a_stream_down_is_not_a_failure(
    server: ServerHandle, health: FakeHealth
) -> None:
    health.discovery_detail = "event stream down; list passes carry discovery"
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{server.port}/readyz") as response,
    ):
        assert response.status == 200
        body = await response.json()
    assert body["checks"]["discovery"] == {"ok": True, "detail": health.discovery_detail}


async def test_a_failing_refresh_does_not_fail_the_scrape(metrics: Metrics, health: FakeHealth) -> None:
    async def refresh() -> None:
        raise HarvesterError("database down")

    handle = await start_server("127.0.0.1:0", metrics, health, refresh=refresh)
    try:
        status, _, text = await get(handle, "/metrics")
    finally:
        await handle.close()
    assert status == 200
    assert 'harvester_errors_total{account="default",kind="metrics_refresh"} 1.0' in text


async def test_a_busy_port_is_a_harvester_error(
    server: ServerHandle, metrics: Metrics, health: FakeHealth
) -> None:
    with pytest.raises(HarvesterError, match=r"server\.listen"):
        await start_server(f"127.0.0.1:{server.port}", metrics, health)


async def test_close_is_idempotent(metrics: Metrics, health: FakeHealth) -> None:
    handle = await start_server("127.0.0.1:0", metrics, health)
    await handle.close()
    await handle.close()


# ---------------------------------------------------------------- with the real database


async def test_pool_health_runs_select_1(db_dsn: str) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        assert await PoolHealth(pool).db_ok() is True
    finally:
        await pool.close()
    assert await PoolHealth(pool).db_ok() is False  # a closed pool is not a reachable database


class Loop(PoolHealth):
    """The loop's side of the seam, healthy, with the real database check."""

    last_tick = time.monotonic()
    auth_ok = True
    paused_reason = None
    discovery_detail = None


async def test_readyz_fails_when_the_database_goes_away(db_dsn: str) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    handle = await start_server("127.0.0.1:0", Metrics(), Loop(pool))
    try:
        assert (await get(handle, "/readyz"))[0] == 200
        await pool.close()
        status, _, text = await get(handle, "/readyz")
        assert status == 503
        assert '"database": {"ok": false' in text
    finally:
        await handle.close()


async def test_queue_refresher_exports_jobs_per_state(db_dsn: str) -> None:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    metrics = Metrics()
    try:
        await pool.execute(
            "INSERT INTO harvester.jobs (job_id, state) VALUES "
            "(gen_random_uuid(), 'pending'), (gen_random_uuid(), 'pending'), "
            "(gen_random_uuid(), 'harvested')"
        )
        handle = await start_server("127.0.0.1:0", metrics, Loop(pool), refresh=QueueRefresher(pool, metrics))
        try:
            _, _, text = await get(handle, "/metrics")
        finally:
            await handle.close()
    finally:
        await pool.close()
    assert 'harvester_jobs{state="pending"} 2.0' in text
    assert 'harvester_jobs{state="harvested"} 1.0' in text
    assert 'harvester_jobs{state="failed"} 0.0' in text


async def test_readyz_names_the_jobs_waiting_for_an_unknown_account_and_stays_ready(
    metrics: Metrics, health: FakeHealth
) -> None:
    async def waiting() -> dict[str, int]:
        return {"ghost": 3}

    handle = await start_server("127.0.0.1:0", metrics, health, accounts=waiting)
    try:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"http://127.0.0.1:{handle.port}/readyz") as response,
        ):
            status, body = response.status, await response.json()
    finally:
        await handle.close()
    assert status == 200 and body["ready"] is True
    assert body["checks"]["accounts"] == {
        "ok": True,
        "detail": "3 pending job(s) wait for unknown account 'ghost'",
    }


async def test_the_refresher_sets_the_unknown_account_gauge(pool: asyncpg.Pool, metrics: Metrics) -> None:
    await pool.execute(
        "INSERT INTO harvester.jobs (job_id, account) SELECT gen_random_uuid(), a "
        "FROM unnest(ARRAY['default', 'ghost', 'ghost']) AS a"
    )
    await QueueRefresher(pool, metrics, accounts=("default",))()
    assert metrics.registry.get_sample_value("harvester_jobs_unknown_account", {"account": "ghost"}) == 2
    assert metrics.registry.get_sample_value("harvester_jobs_unknown_account", {"account": "default"}) is None
