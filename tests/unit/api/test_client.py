"""``SpiderIQ`` without a network: URL and token checks, the constructor from config, scrubbing."""

from __future__ import annotations

import pytest

from harvester import logs
from harvester.api.client import SpiderIQ
from harvester.config import ApiConfig, Secret
from harvester.errors import ConfigError

TOKEN = "cli_abcdef:sk_supersecret:secret_hushhush"


@pytest.mark.parametrize("url", ["http://spideriq.ai", "ftp://localhost", "localhost:8080"])
def test_refuses_insecure_or_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError):
        SpiderIQ(url, "a:b:c", connect_timeout_s=1, read_timeout_s=1, total_timeout_s=1)


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080", "http://localhost", "http://[::1]:9", "https://spideriq.ai"]
)
def test_accepts_loopback_http_and_https(url: str) -> None:
    client = SpiderIQ(url, "a:b:c", connect_timeout_s=1, read_timeout_s=1, total_timeout_s=1)
    assert "a:b:c" not in repr(client)


def test_insecure_allowed_when_asked() -> None:
    SpiderIQ(
        "http://spideriq.ai",
        "t",
        connect_timeout_s=1,
        read_timeout_s=1,
        total_timeout_s=1,
        allow_insecure=True,
    )


def test_from_config_takes_every_api_setting() -> None:
    api = ApiConfig(
        base_url="http://127.0.0.1:9/",
        token=Secret(TOKEN),
        verify_tls=False,
        connect_timeout_s=1.5,
        read_timeout_s=2.5,
        total_timeout_s=3.5,
        user_agent="probe/1",
    )
    client = SpiderIQ.from_config(api, TOKEN, time_scale=30.0)
    assert client.base_url == "http://127.0.0.1:9"
    assert client._headers["Authorization"] == f"Bearer {TOKEN}"
    assert client._headers["User-Agent"] == "probe/1"
    timeout = client._timeout
    assert (timeout.connect, timeout.sock_read, timeout.total) == (1.5, 2.5, 3.5)
    assert (client._verify_tls, client._time_scale) == (False, 30.0)


def test_from_config_keeps_the_insecure_refusal() -> None:
    with pytest.raises(ConfigError):
        SpiderIQ.from_config(ApiConfig(base_url="http://spideriq.ai"), TOKEN)
    SpiderIQ.from_config(ApiConfig(base_url="http://spideriq.ai", allow_insecure=True), TOKEN)


def test_the_client_scrubber_removes_its_token_and_the_registered_ones() -> None:
    logs.register_secret("cli_other1:sk_othersecret:secret_other")
    client = SpiderIQ("https://spideriq.ai", TOKEN, connect_timeout_s=1, read_timeout_s=1, total_timeout_s=1)
    cleaned = client._clean(f"{TOKEN} sk_supersecret secret_hushhush sk_othersecret")
    assert cleaned == "*** *** *** ***"
