"""Fixtures shared by the integration tests: the login roles of test_roles*.py."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.support.roles import Logins, apply_roles, drop_logins, make_logins


@pytest.fixture
async def logins(db_dsn: str) -> AsyncIterator[Logins]:
    await apply_roles(db_dsn)
    await apply_roles(db_dsn)  # rerunnable
    made = await make_logins(db_dsn)
    try:
        yield made
    finally:
        await drop_logins(made)
