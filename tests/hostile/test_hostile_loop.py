"""The running daemon meets the hostile corpus: a test server answers 200 with each body.

The loop must keep going through all of them and finish every job ``harvested`` or ``rejected``
(the same verdict ``store_result`` gives directly), keeping each rejected body byte for byte.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiohttp import web

from harvester.daemon import run as daemon
from tests.support import configs
from tests.support.hostile import HAND_CASES, REJECTED, generated_cases

TOKEN = "loop:sk_loop_123456:secret_loop_123456"  # a test credential, not a secret
GENERATED = 30


def bodies() -> dict[uuid.UUID, tuple[str, bytes]]:
    cases = {**HAND_CASES, **generated_cases(GENERATED)}
    out = {}
    for name, build in cases.items():
        job_id = uuid.uuid4()
        out[job_id] = (name, build(job_id))
    return out


@pytest.fixture
async def api_server(unused_tcp_port: int) -> AsyncIterator[tuple[str, dict[uuid.UUID, tuple[str, bytes]]]]:
    served = bodies()

    async def results(request: web.Request) -> web.Response:
        found = served.get(uuid.UUID(request.match_info["job_id"]))
        if found is None:
            return web.json_response({"detail": "Job not found"}, status=404)
        return web.Response(body=found[1], status=200, content_type="application/json")

    app = web.Application(client_max_size=1024)
    app.router.add_get("/api/v1/jobs/{job_id}/results", results)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", unused_tcp_port)
    await site.start()
    try:
        yield f"http://127.0.0.1:{unused_tcp_port}", served
    finally:
        await runner.cleanup()


async def test_daemon_survives_every_hostile_body(
    db_dsn: str,
    api_server: tuple[str, dict[uuid.UUID, tuple[str, bytes]]],
) -> None:
    url, served = api_server
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("INSERT INTO harvester.jobs (job_id) SELECT unnest($1::uuid[])", list(served))
        cfg = configs.loaded(
            {
                "database.dsn": db_dsn,
                "api.base_url": url,
                "api.token": TOKEN,
                "speed": 50.0,
                "server.enabled": False,
                "polling.discovery": "poll",
                "log.level": "error",
            },
        )
        code = await asyncio.wait_for(
            daemon.run(cfg, asyncio.Event(), drain=True, max_seconds=120.0), timeout=180
        )
        assert code == 0
        states = {
            r["job_id"]: r["state"] for r in await conn.fetch("SELECT job_id, state FROM harvester.jobs")
        }
        kept = {
            r["job_id"]: bytes(r["body"])
            for r in await conn.fetch("SELECT job_id, body FROM harvester.rejects")
        }
    finally:
        await conn.close()
    for job_id, (name, raw) in served.items():
        state = states[job_id]
        if name in HAND_CASES:
            assert state == ("rejected" if name in REJECTED else "harvested"), name
        else:
            assert state in ("harvested", "rejected"), name
        if state == "rejected":
            assert kept[job_id] == raw, name
