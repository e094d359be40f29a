"""sql/schema.sql is exactly what the migrations build in an empty database: a migration that changes
the schema changes the snapshot in the same commit, where a reviewer reads the difference."""

from __future__ import annotations

import difflib

import pytest

from tests.support import schema


async def test_the_migrations_build_exactly_the_snapshot(empty_db_dsn: str) -> None:
    major = await schema.server_major(empty_db_dsn)
    if major != schema.MAJOR:
        pytest.skip(f"sql/schema.sql is PostgreSQL {schema.MAJOR}'s pg_dump; this server is {major}")
    fresh = await schema.migrated_dump(empty_db_dsn)
    snapshot = schema.SNAPSHOT.read_text(encoding="utf-8")
    if fresh != snapshot:
        diff = "".join(
            difflib.unified_diff(
                snapshot.splitlines(keepends=True),
                fresh.splitlines(keepends=True),
                fromfile="sql/schema.sql",
                tofile="pg_dump of a freshly migrated database",
            )
        )
        pytest.fail(
            f"sql/schema.sql differs from what the migrations build; if the change is meant, "
            f"regenerate it with `{schema.REGENERATE}` and commit it with the migration:\n{diff}",
            pytrace=False,
        )
