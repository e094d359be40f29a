"""The daemon against a minimal SpiderIQ stand-in that is not our simulator.

The stand-in knows only ``GET /api/v1/jobs/{id}/results`` and answers each job from a script (one
answer per request, the last one repeated); every other path, ``/jobs/list`` included, is a 404.
So the response table of SPEC section 4 is checked end to end without the simulator's help, and
without the list endpoint the daemon still has to reach every terminal state by polling.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from harvester import config
from harvester.daemon import run as daemon
from tests.support import configs
from tests.support.e2e import TOKEN
from tests.support.rows import one

pytestmark = pytest.mark.slow
SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed"


@dataclass(frozen=True)
class Answer:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    truncate: bool = False  # declare the full length, send half, close


def site_body(job_id: UUID) -> bytes:
    body = json.loads((SEED / "site-ai-200.json").read_text())
    body["job_id"] = str(job_id)
    return json.dumps(body).encode()


def gone_body(job_id: UUID, status: str, error: str) -> bytes:
    return json.dumps(
        {
            "success": False,
            "job_id": str(job_id),
            "type": "spiderSite",
            "status": status,
            "data": None,
            "error_message": error,
        }
    ).encode()


PROCESSING = json.dumps(
    {"success": False, "status": "processing", "message": "Job is still being processed"}
).encode()


@dataclass
class StandIn:
    scripts: dict[str, list[Answer]] = field(default_factory=dict)
    seen: list[tuple[float, str, str]] = field(default_factory=list)  # (time, path, auth)
    url: str = ""

    def answer(self, path: str) -> Answer:
        parts = path.split("?")[0].strip("/").split("/")
        if len(parts) == 5 and parts[:3] == ["api", "v1", "jobs"] and parts[4] == "results":
            script = self.scripts.get(parts[3])
            if script:
                return script.pop(0) if len(script) > 1 else script[0]
        return Answer(404, b'{"detail": "Not Found"}')

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            path = head.split(" ")[1]
            auth = next(
                (
                    line.split(":", 1)[1].strip()
                    for line in head.split("\r\n")
                    if line.lower().startswith("authorization:")
                ),
                "",
            )
            self.seen.append((time.monotonic(), path, auth))
            found = self.answer(path)
            lines = [
                f"HTTP/1.1 {found.status} X",
                "Content-Type: application/json",
                "Connection: close",
                f"Content-Length: {len(found.body)}",
            ]
            lines += [f"{k}: {v}" for k, v in found.headers.items()]
            body = found.body[: len(found.body) // 2] if found.truncate else found.body
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def standin() -> AsyncIterator[StandIn]:
    stand = StandIn()
    server = await asyncio.start_server(stand.handle, "127.0.0.1", 0)
    stand.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        yield stand
    finally:
        server.close()
        await server.wait_closed()


def fast_config(dsn: str, url: str, **extra: Any) -> config.Config:
    """Real-time (speed 1) settings with every wait shortened, so the test takes seconds."""
    values: dict[str, Any] = {
        "database.dsn": dsn,
        "api.base_url": url,
        "api.token": TOKEN,
        "server.enabled": False,
        "log.level": "warning",
        "polling.first_poll_site_s": 0.2,
        "polling.first_poll_maps_s": 0.2,
        "polling.first_poll_other_s": 0.2,
        "polling.min_interval_s": 0.1,
        "polling.max_interval_s": 0.3,
        "polling.not_found_retries": 2,
        "polling.not_found_grace_s": 0.5,
        "polling.fault_backoff_base_s": 0.1,
        "polling.fault_backoff_max_s": 0.2,
        "polling.list_interval_s": 0.5,
        "polling.list_fallback_s": 0.3,
        "worker.idle_poll_s": 0.2,
        "rate_limit.requests_per_minute": 6000.0,
        "rate_limit.burst": 50,
    }
    values.update(extra)
    return configs.loaded(values)


async def run_to_drain(cfg: config.Config, within_s: float = 60.0) -> None:
    stop = asyncio.Event()
    assert await asyncio.wait_for(daemon.run(cfg, stop, drain=True), timeout=within_s) == 0


async def test_every_documented_answer_ends_in_its_state(standin: StandIn, db_dsn: str) -> None:
    ids = {
        name: uuid4()
        for name in (
            "ok",
            "running_then_ok",
            "unknown",
            "briefly_unknown",
            "failed",
            "cancelled",
            "garbage",
            "flaky",
            "truncated",
            "other_type",
        )
    }
    s = standin.scripts
    s[str(ids["ok"])] = [Answer(200, site_body(ids["ok"]))]
    s[str(ids["running_then_ok"])] = [
        Answer(202, PROCESSING),
        Answer(202, b""),
        Answer(200, site_body(ids["running_then_ok"])),
    ]
    s[str(ids["briefly_unknown"])] = [
        Answer(404, b'{"detail":"Job not found"}'),
        Answer(200, site_body(ids["briefly_unknown"])),
    ]
    s[str(ids["failed"])] = [Answer(410, gone_body(ids["failed"], "failed", "timeout after 30s"))]
    s[str(ids["cancelled"])] = [Answer(410, gone_body(ids["cancelled"], "cancelled", "by user"))]
    garbage = b'{"job_id": "' + str(ids["garbage"]).encode() + b'", \xff\xfe not json'
    s[str(ids["garbage"])] = [Answer(200, garbage)]
    s[str(ids["flaky"])] = [
        Answer(503, b"upstream down"),
        Answer(500, b""),
        Answer(200, site_body(ids["flaky"])),
    ]
    s[str(ids["truncated"])] = [
        Answer(200, site_body(ids["truncated"]), truncate=True),
        Answer(200, site_body(ids["truncated"])),
    ]
    other = {
        "success": True,
        "job_id": str(ids["other_type"]),
        "type": "spiderVerify",
        "status": "completed",
        "data": {"email": "a@b.c", "valid": True},
    }
    s[str(ids["other_type"])] = [Answer(200, json.dumps(other).encode())]

    conn = await asyncpg.connect(db_dsn)
    try:
        for job_id in ids.values():
            await conn.execute(
                "INSERT INTO harvester.jobs (job_id) VALUES ($1) ON CONFLICT DO NOTHING", str(job_id)
            )
        await run_to_drain(fast_config(db_dsn, standin.url))
        rows = {r["job_id"]: r for r in await conn.fetch("SELECT * FROM harvester.jobs")}
        state = {name: rows[job_id]["state"] for name, job_id in ids.items()}
        assert state == {
            "ok": "harvested",
            "running_then_ok": "harvested",
            "unknown": "not_found",
            "briefly_unknown": "harvested",
            "failed": "failed",
            "cancelled": "cancelled",
            "garbage": "rejected",
            "flaky": "harvested",
            "truncated": "harvested",
            "other_type": "harvested",
        }
        assert rows[ids["failed"]]["last_error"] == "timeout after 30s"
        assert rows[ids["failed"]]["last_http_status"] == 410
        assert rows[ids["running_then_ok"]]["polls"] >= 3
        assert rows[ids["unknown"]]["polls"] >= 2
        assert all(r["finished_at"] is not None for r in rows.values())
        body = await conn.fetchval("SELECT body FROM harvester.rejects WHERE job_id = $1", ids["garbage"])
        assert bytes(body) == garbage
        assert (
            await conn.fetchval(
                "SELECT raw->>'type' FROM harvester.results WHERE job_id = $1", ids["other_type"]
            )
            == "spiderVerify"
        )
        assert (
            await conn.fetchval(
                "SELECT error_message FROM harvester.results WHERE job_id = $1", ids["cancelled"]
            )
            == "by user"
        )
    finally:
        await conn.close()
    # every request but the event stream's (its token goes in the query string) carries the Bearer
    assert {auth for _, path, auth in standin.seen if "/events/" not in path} == {f"Bearer {TOKEN}"}


async def test_a_429_pauses_every_request_for_its_retry_after(standin: StandIn, db_dsn: str) -> None:
    first, second = uuid4(), uuid4()
    standin.scripts[str(first)] = [
        Answer(429, b'{"detail":"Rate limit exceeded"}', {"Retry-After": "2"}),
        Answer(200, site_body(first)),
    ]
    standin.scripts[str(second)] = [Answer(200, site_body(second))]
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", first)
        await run_to_drain(fast_config(db_dsn, standin.url, **{"polling.discovery": "poll"}))
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", second)
        await run_to_drain(fast_config(db_dsn, standin.url, **{"polling.discovery": "poll"}))
        states = {
            r["job_id"]: r["state"] for r in await conn.fetch("SELECT job_id, state FROM harvester.jobs")
        }
    finally:
        await conn.close()
    assert states == {first: "harvested", second: "harvested"}
    times = [t for t, _, _ in standin.seen]
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps and gaps[0] >= 1.9, f"a request {gaps[0]:.2f} s after a 429 with Retry-After: 2"


@pytest.mark.parametrize("status", [401, 402, 403])
async def test_a_refused_credential_changes_no_job(standin: StandIn, db_dsn: str, status: int) -> None:
    job = uuid4()
    standin.scripts[str(job)] = [Answer(status, b'{"detail":"Invalid API credentials"}')]
    conn = await asyncpg.connect(db_dsn)
    try:
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", job)
        cfg = fast_config(db_dsn, standin.url, **{"polling.auth_recheck_s": 0.5})
        stop = asyncio.Event()
        assert await asyncio.wait_for(daemon.run(cfg, stop, max_seconds=3.0), timeout=30) == 0
        row = await one(conn, "SELECT state, finished_at FROM harvester.jobs")
    finally:
        await conn.close()
    assert (row["state"], row["finished_at"]) == ("pending", None)
    results = [t for t, path, _ in standin.seen if path.endswith("/results")]
    assert 2 <= len(results) <= 10, f"{len(results)} result polls in 3 s with a refused credential"
