"""asyncpg's InternalClientError counts as "database unavailable", not as a bug.

Found by the chaos run: during a PostgreSQL restart a statement on a connection the server had
dropped failed with ``InternalClientError: cannot switch to state 12; another operation (2) is in
progress``. Discovery caught only connection errors, so the TaskGroup ended and the daemon exited
with status 1. Now every seam that turns driver errors into ``DatabaseError`` covers it.
"""

from __future__ import annotations

import asyncpg
import pytest
from asyncpg.exceptions._base import InternalClientError

from harvester import db
from harvester.db import store
from harvester.errors import DatabaseError


def test_internal_client_error_is_a_database_error() -> None:
    assert issubclass(InternalClientError, db.DB_ERRORS)


def test_the_seam_guard_reports_it_as_database_unavailable() -> None:
    with pytest.raises(DatabaseError, match="database unavailable"), db.guard("claim"):
        raise InternalClientError("cannot switch to state 12; another operation (2) is in progress")


async def test_a_store_transaction_reports_it_as_database_unavailable(db_dsn: str) -> None:
    conn = await asyncpg.connect(db_dsn)
    try:
        with pytest.raises(DatabaseError, match="database unavailable"):
            async with store.writing(conn):
                raise InternalClientError("cannot switch to state 12; another operation (2) is in progress")
    finally:
        await conn.close()
