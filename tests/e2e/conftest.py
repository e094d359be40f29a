"""End-to-end fixtures: quiet daemon logs for in-process runs, restored afterwards."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from harvester import logs


@pytest.fixture(autouse=True)
def quiet_logs() -> Iterator[None]:
    """The in-process daemon logs every job; keep only warnings so ``-s`` output stays readable."""
    saved = structlog.get_config()
    logs.setup("console", "warning")
    yield
    structlog.configure(**saved)
