"""Databases as older versions of harvester left them, for the migration and role tests."""

from __future__ import annotations

import asyncpg

from harvester.db import migrate


async def migrate_like_older_versions(conn: asyncpg.Connection, versions: list[str]) -> None:
    """What the code before the ledger moved left behind: the migrations applied, each recorded
    in public.harvester_migrations."""
    await conn.execute(
        "CREATE TABLE public.harvester_migrations ("
        "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in migrate.available():
        if migration.version in versions:
            await conn.execute(migration.path.read_text(encoding="utf-8"))
            await conn.execute(
                "INSERT INTO public.harvester_migrations VALUES ($1, '2024-01-02T03:04:05Z')",
                migration.version,
            )


async def migrate_until(conn: asyncpg.Connection, last: str) -> None:
    """The schema as the release whose newest migration was ``last`` left it (``NNN``)."""
    await conn.execute("CREATE SCHEMA harvester")
    await conn.execute(migrate.SQL.create_migrations_table)
    for migration in migrate.available():
        if migration.version.split("_", 1)[0] > last:
            break
        await conn.execute(migration.path.read_text(encoding="utf-8"))
        await conn.execute(migrate.SQL.insert_migration, migration.version)
