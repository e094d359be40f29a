"""The pure parts of ``harvester.limiter``: the fingerprint and the derived limits."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import asyncpg
import pytest

from harvester.db import limiter
from harvester.errors import ConfigError

NOW = 1_760_000_000.0


def test_fingerprint_is_sha256_not_the_token() -> None:
    token = "cli_x:sk_y:secret_z"
    key = limiter.fingerprint(token)
    assert key == hashlib.sha256(token.encode()).hexdigest()
    assert token not in key and len(key) == 64


def test_grant_wait() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert limiter.Grant(now + timedelta(seconds=1.5), now).wait_s == 1.5
    assert limiter.Grant(now, now + timedelta(seconds=1)).wait_s == 0.0


def make(**kw: Any) -> limiter.SharedLimiter:
    params: dict[str, Any] = {
        "token": "t",
        "requests_per_minute": 100.0,
        "burst": 20,
        "window_s": 60.0,
        "default_pause_s": 60.0,
    }
    params.update(kw)
    return limiter.SharedLimiter(cast(asyncpg.Pool, None), **params)


@pytest.mark.parametrize(
    ("rpm", "window", "burst", "limit", "interval", "effective_burst"),
    [
        (100.0, 60.0, 20, 100, 0.6, 20),
        (1000.0, 6.0, 20, 100, 0.06, 20),  # speed 10: both scaled, same cap
        (6000.0, 0.6, 20, 60, 0.01, 20),
        (10.0, 60.0, 20, 10, 6.0, 10),  # a burst above the cap is the cap
    ],
)
def test_derived_limits(
    rpm: float, window: float, burst: int, limit: int, interval: float, effective_burst: int
) -> None:
    lim = make(requests_per_minute=rpm, window_s=window, burst=burst)
    assert (lim.limit, lim.burst) == (limit, effective_burst)
    assert lim.interval_s == pytest.approx(interval)
    assert lim.key != "t" and lim.key[:12] in repr(lim)


@pytest.mark.parametrize(
    "kw",
    [{"token": ""}, {"requests_per_minute": 0.0}, {"burst": 0}, {"window_s": -1.0}, {"margin": 1.5}],
)
def test_bad_settings_are_refused(kw: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        make(**kw)
