"""``harvester.api.client.SpiderIQ`` over real sockets: a small raw HTTP server that can also misbehave.

The server is plain asyncio so a test controls every byte: declared lengths that are never sent,
connections aborted mid-body, answers that never come.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from uuid import UUID

import aiohttp
import pytest

from harvester.api.client import SpiderIQ
from harvester.api.outcomes import (
    AuthFailed,
    Completed,
    Gone,
    JobPage,
    NotFound,
    Pending,
    RateLimited,
    Transient,
)

TOKEN = "cli_testclient123:sk_testkey_abcdefghijkl:secret_testsecret_mnopqrstu"
JOB = UUID("550e8400-e29b-41d4-a716-446655440000")

Action = Callable[[asyncio.StreamWriter], Awaitable[None]]


@dataclass
class Request:
    line: str
    headers: dict[str, str]


@dataclass
class RawServer:
    routes: dict[str, Action] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode().split("\r\n")
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        self.requests.append(Request(lines[0], headers))
        path = lines[0].split(" ")[1].split("?")[0]
        action = self.routes.get(path, reply(404, {"detail": "Not Found"}))
        try:
            await action(writer)
        finally:
            if not writer.is_closing():
                writer.close()


def http(status: int, body: bytes, headers: dict[str, str] | None = None, length: int | None = None) -> bytes:
    lines = [
        f"HTTP/1.1 {status} X",
        "Content-Type: application/json",
        "Connection: close",
        f"Content-Length: {len(body) if length is None else length}",
    ]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def reply(status: int, body: object = b"", headers: dict[str, str] | None = None) -> Action:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()

    async def act(writer: asyncio.StreamWriter) -> None:
        writer.write(http(status, raw, headers))
        await writer.drain()

    return act


@pytest.fixture
async def server() -> AsyncIterator[RawServer]:
    raw = RawServer()
    srv = await asyncio.start_server(raw.handle, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    raw.url = f"http://127.0.0.1:{port}"
    try:
        yield raw
    finally:
        srv.close()
        await srv.wait_closed()


@pytest.fixture
async def client(server: RawServer) -> AsyncIterator[SpiderIQ]:
    async with SpiderIQ(
        server.url, TOKEN, connect_timeout_s=1.0, read_timeout_s=0.3, total_timeout_s=2.0
    ) as spideriq:
        yield spideriq


RESULTS = f"/api/v1/jobs/{JOB}/results"


def assert_no_token(outcome: object) -> None:
    text = repr(outcome)
    for part in (TOKEN, *TOKEN.split(":")):
        assert part not in text


async def test_sends_bearer_and_no_format(server: RawServer, client: SpiderIQ) -> None:
    server.routes[RESULTS] = reply(202, {"status": "queued", "type": "spiderSite"})
    outcome = await client.fetch_result(JOB)
    assert outcome == Pending(upstream_status="queued", job_type="spiderSite")
    sent = server.requests[0]
    assert sent.line.startswith(f"GET {RESULTS} ")
    assert "format" not in sent.line
    assert sent.headers["authorization"] == f"Bearer {TOKEN}"
    assert sent.headers["user-agent"] == "harvester/0.1"


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (200, {"status": "completed", "data": {}}, Completed),
        (200, b"not json at all", Completed),
        (200, {"status": "running"}, Pending),
        (202, {"status": "processing"}, Pending),
        (202, b"{oops", Pending),
        (410, {"status": "cancelled"}, Gone),
        (410, b"<html>", Gone),
        (410, b"", Gone),
        (404, {"detail": "Job not found"}, NotFound),
        (401, {"detail": "Invalid token format"}, AuthFailed),
        (402, {"detail": "cap"}, AuthFailed),
        (403, {"detail": "inactive"}, AuthFailed),
        (429, {"detail": "slow"}, RateLimited),
        (500, b"", Transient),
        (503, b"", Transient),
        (302, b"", Transient),
        (400, {"detail": "bad"}, Transient),
        (422, {"detail": "bad"}, Transient),
    ],
)
async def test_status_codes(
    server: RawServer, client: SpiderIQ, status: int, body: object, kind: type
) -> None:
    server.routes[RESULTS] = reply(status, body, {"Location": "http://elsewhere.invalid/"})
    outcome = await client.fetch_result(JOB)
    assert type(outcome) is kind
    assert outcome.http_status == status
    assert len(server.requests) == 1  # a redirect is not followed


async def test_completed_body_is_raw_bytes(server: RawServer, client: SpiderIQ) -> None:
    raw = b'{"status": "completed", "data": {"emails": ["a@b.c"]}, "x": "\xc3\xa9"}'
    server.routes[RESULTS] = reply(200, raw)
    outcome = await client.fetch_result(JOB)
    assert isinstance(outcome, Completed)
    assert outcome.body == raw
    assert outcome.doc == json.loads(raw)


def raw_reply(status: int, body: bytes, headers: list[str]) -> Action:
    """An answer with exactly the given header lines (no default Content-Type)."""

    async def act(writer: asyncio.StreamWriter) -> None:
        lines = [f"HTTP/1.1 {status} X", "Connection: close", f"Content-Length: {len(body)}", *headers]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode() + body)
        await writer.drain()

    return act


async def test_gzip_body_is_decoded(server: RawServer, client: SpiderIQ) -> None:
    raw = json.dumps({"job_id": str(JOB), "status": "completed", "data": {}}).encode()
    server.routes[RESULTS] = raw_reply(
        200, gzip.compress(raw), ["Content-Type: application/json", "Content-Encoding: gzip"]
    )
    outcome = await client.fetch_result(JOB)
    assert isinstance(outcome, Completed)
    assert (outcome.body, outcome.doc) == (raw, json.loads(raw))


@pytest.mark.parametrize(
    "content_type",
    [
        ["Content-Type: application/json; charset=utf-8"],
        ["Content-Type: text/html"],
        ["Content-Type: text/plain; charset=UTF-8"],
        [],
    ],
)
async def test_content_type_does_not_matter(
    server: RawServer, client: SpiderIQ, content_type: list[str]
) -> None:
    raw = json.dumps(
        {
            "success": False,
            "job_id": str(JOB),
            "status": "processing",
            "message": "Job is still being processed",
        }
    ).encode()
    server.routes[RESULTS] = raw_reply(202, raw, content_type)
    assert await client.fetch_result(JOB) == Pending(upstream_status="processing")


async def test_rate_limit_headers(server: RawServer, client: SpiderIQ) -> None:
    server.routes[RESULTS] = reply(
        429,
        {"detail": "Rate limit exceeded"},
        {
            "Retry-After": "3600",
            "X-RateLimit-Limit": "100",
            "X-RateLimit-Remaining": "0",
            "X-RateLimit-Reset": "1760000060",
        },
    )
    outcome = await client.fetch_result(JOB)
    assert isinstance(outcome, RateLimited)
    assert outcome.retry_after_s == 3600.0
    assert outcome.reset_at == 1760000060.0
    assert outcome.detail == "Rate limit exceeded"


async def test_hang_is_a_timeout(server: RawServer, client: SpiderIQ) -> None:
    async def hang(writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(5)

    server.routes[RESULTS] = hang
    outcome = await client.fetch_result(JOB)
    assert outcome == Transient(reason="timeout")


async def test_hang_mid_body_is_a_timeout(server: RawServer, client: SpiderIQ) -> None:
    async def stall(writer: asyncio.StreamWriter) -> None:
        writer.write(http(200, b'{"status": "comp', length=100))
        await writer.drain()
        await asyncio.sleep(5)

    server.routes[RESULTS] = stall
    assert await client.fetch_result(JOB) == Transient(reason="timeout")


async def test_truncated_body_is_transient(server: RawServer, client: SpiderIQ) -> None:
    async def truncated(writer: asyncio.StreamWriter) -> None:
        writer.write(http(200, b'{"status": "completed", "da', length=500))
        await writer.drain()
        writer.close()

    server.routes[RESULTS] = truncated
    outcome = await client.fetch_result(JOB)
    assert isinstance(outcome, Transient)
    assert outcome.reason.startswith("truncated body")
    assert_no_token(outcome)


async def test_reset_before_answer_is_transient(server: RawServer, client: SpiderIQ) -> None:
    async def reset(writer: asyncio.StreamWriter) -> None:
        writer.transport.abort()

    server.routes[RESULTS] = reset
    outcome = await client.fetch_result(JOB)
    assert isinstance(outcome, Transient)
    assert_no_token(outcome)
    assert len(server.requests) == 1  # never resent behind the rate limiter's back


async def test_reset_mid_body_is_transient(server: RawServer, client: SpiderIQ) -> None:
    async def reset(writer: asyncio.StreamWriter) -> None:
        writer.write(http(200, b'{"status": "completed"', length=400))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    server.routes[RESULTS] = reset
    outcome = await client.fetch_result(JOB)
    assert isinstance(outcome, Transient)
    assert_no_token(outcome)
    assert len(server.requests) == 1  # never resent behind the rate limiter's back


async def test_garbage_status_line_is_transient(server: RawServer, client: SpiderIQ) -> None:
    async def garbage(writer: asyncio.StreamWriter) -> None:
        writer.write(b"SPIDER/9 what\r\n\r\n")
        await writer.drain()

    server.routes[RESULTS] = garbage
    outcome = await client.fetch_result(JOB)
    assert isinstance(outcome, Transient)
    assert_no_token(outcome)


async def test_connection_refused_is_transient() -> None:
    probe = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()
    async with SpiderIQ(
        f"http://127.0.0.1:{port}", TOKEN, connect_timeout_s=0.5, read_timeout_s=0.5, total_timeout_s=1
    ) as spideriq:
        outcome = await spideriq.fetch_result(JOB)
    assert isinstance(outcome, Transient)
    assert outcome.reason.startswith("connection error")
    assert_no_token(outcome)


async def test_token_in_url_error_is_scrubbed(client: SpiderIQ) -> None:
    # a reason built from an exception whose text would carry the token
    assert TOKEN.split(":")[1] not in client._clean(f"boom {TOKEN} and {TOKEN.split(':')[1]}")


async def test_list_jobs(server: RawServer, client: SpiderIQ) -> None:
    server.routes["/api/v1/jobs/list"] = reply(
        200,
        {
            "total": 3,
            "page": 1,
            "page_size": 100,
            "jobs": [
                {
                    "job_id": str(JOB),
                    "type": "spiderSite",
                    "status": "completed",
                    "updated_at": "2025-10-27T10:02:45Z",
                },
                {"job_id": 5},
                None,
            ],
        },
    )
    page = await client.list_jobs(page=1, status_filter="completed")
    assert isinstance(page, JobPage)
    assert [j.job_id for j in page.jobs] == [JOB]
    assert page.total_pages == 1
    line = server.requests[0].line
    for part in (
        "page=1",
        "page_size=100",
        "sort_by=updated_at",
        "sort_order=desc",
        "status_filter=completed",
    ):
        assert part in line
    assert "format" not in line


async def test_shared_session_is_not_closed(server: RawServer) -> None:
    server.routes[RESULTS] = reply(404, {"detail": "Job not found"})
    async with aiohttp.ClientSession() as session:
        async with SpiderIQ(
            server.url, TOKEN, connect_timeout_s=1, read_timeout_s=1, total_timeout_s=2, session=session
        ) as spideriq:
            assert isinstance(await spideriq.fetch_result(JOB), NotFound)
        assert not session.closed


async def test_many_concurrent_requests_release_connections(server: RawServer, client: SpiderIQ) -> None:
    server.routes[RESULTS] = reply(500, b"x" * 10_000)
    outcomes = await asyncio.gather(*(client.fetch_result(JOB) for _ in range(50)))
    assert all(isinstance(o, Transient) and o.http_status == 500 for o in outcomes)
