"""A loaded configuration, as every test that is not about configuration wants one.

``loaded({"polling.min_interval_s": 0.01})`` goes through ``config.load`` as the daemon does (same
validation, same scaling by ``speed``) with no file and no environment, the API at a loopback
port nothing listens on and a test token, unless the overrides say otherwise. The
``cfg`` fixture of tests/conftest.py is ``loaded()``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from harvester import config

NOWHERE = "http://127.0.0.1:9"  # the discard port: nothing answers
TOKEN = "t:t:t"


def loaded(
    overrides: Mapping[str, object] | None = None,
    *,
    path: Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> config.Config:
    values: dict[str, object] = {"api.base_url": NOWHERE, "api.token": TOKEN}
    values.update(overrides or {})
    return config.load(path, environ=dict(environ or {}), overrides=values)
