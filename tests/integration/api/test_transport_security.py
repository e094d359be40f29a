"""The token only travels where it should: TLS verified by default, no plain http off loopback,
no redirects followed.
"""

from __future__ import annotations

import shutil
import ssl
import subprocess
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

from harvester import config
from harvester.api.client import SpiderIQ
from harvester.api.outcomes import Pending, Transient
from harvester.errors import ConfigError

TOKEN = "tls_client:sk_tls_abcdef12:tls_secret_abcdef12"  # a test credential, not a secret
NOT_LOOPBACK = [
    "http://api.example.com",
    "http://10.0.0.1:8080",
    "http://127.0.0.1@evil.example",  # userinfo, the host is evil.example
    "http://localhost.evil.example",
    "http://[::ffff:7f00:1]",  # an IPv4-mapped address is not taken on trust
    "http://0x7f000001",
    "HTTP://example.com",
]
LOOPBACK = ["http://127.0.0.1:1", "http://[::1]:1", "http://localhost:1", "http://127.0.0.2:1"]


def client(url: str, *, verify_tls: bool = True) -> SpiderIQ:
    return SpiderIQ(
        url, TOKEN, connect_timeout_s=5, read_timeout_s=5, total_timeout_s=10, verify_tls=verify_tls
    )


def test_defaults_are_https_with_verification() -> None:
    cfg = config.load(environ={})
    assert cfg.api.base_url.startswith("https://")
    assert cfg.api.verify_tls is True
    assert cfg.api.allow_insecure is False


@pytest.mark.parametrize("url", NOT_LOOPBACK)
def test_plain_http_off_loopback_is_refused(url: str) -> None:
    with pytest.raises(ConfigError, match="plain http"):
        config.load(environ={}, overrides={"api.base_url": url})
    with pytest.raises(ConfigError):
        client(url)


@pytest.mark.parametrize("url", LOOPBACK)
def test_plain_http_on_loopback_is_allowed(url: str) -> None:
    assert config.load(environ={}, overrides={"api.base_url": url}).api.base_url == url
    client(url)


@pytest.fixture
def self_signed(tmp_path: Path) -> ssl.SSLContext:
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(  # noqa: S603 - fixed argv
        [  # noqa: S607 - openssl from PATH, checked above
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def serve(
    app: web.Application,
    port: int,
    context: ssl.SSLContext | None = None,
) -> web.AppRunner:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port, ssl_context=context).start()
    return runner


@pytest.fixture
async def tls_server(self_signed: ssl.SSLContext, unused_tcp_port: int) -> AsyncIterator[str]:
    async def results(request: web.Request) -> web.Response:
        return web.json_response({"status": "processing"}, status=202)

    app = web.Application()
    app.router.add_get("/api/v1/jobs/{job_id}/results", results)
    runner = await serve(app, unused_tcp_port, self_signed)
    try:
        yield f"https://127.0.0.1:{unused_tcp_port}"
    finally:
        await runner.cleanup()


async def test_an_unverifiable_certificate_is_refused_by_default(tls_server: str) -> None:
    async with client(tls_server) as spideriq:
        outcome = await spideriq.fetch_result(uuid.uuid4())
    assert isinstance(outcome, Transient)
    assert "certificate" in outcome.reason.lower()
    assert TOKEN not in outcome.reason


async def test_verification_can_be_switched_off_explicitly(tls_server: str) -> None:
    async with client(tls_server, verify_tls=False) as spideriq:
        outcome = await spideriq.fetch_result(uuid.uuid4())
    assert isinstance(outcome, Pending)


async def test_a_redirect_is_not_followed_so_the_token_stays_home(unused_tcp_port: int) -> None:
    seen: list[str] = []

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(f"http://127.0.0.1:{unused_tcp_port}/elsewhere")

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization", ""))
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/api/v1/jobs/{job_id}/results", moved)
    app.router.add_get("/elsewhere", elsewhere)
    runner = await serve(app, unused_tcp_port)
    try:
        async with client(f"http://127.0.0.1:{unused_tcp_port}") as spideriq:
            outcome = await spideriq.fetch_result(uuid.uuid4())
    finally:
        await runner.cleanup()
    assert isinstance(outcome, Transient)
    assert seen == []
