"""Databases as older versions of harvester left them, and migration directories to tamper with, for
the migration, schema and role tests. The real ``sql/migrations`` is never written to: a test that
needs other files migrates from a copy (``migrate.apply(conn, directory)``)."""

from __future__ import annotations

import shutil
from pathlib import Path

import asyncpg

from harvester.db import migrate

# The ledger as releases before checksums created it.
LEDGER_WITHOUT_CHECKSUMS = (
    "CREATE TABLE harvester.schema_migrations ("
    "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
)


async def migrate_like_older_versions(conn: asyncpg.Connection, versions: list[str]) -> None:
    """What releases before migration 007 left behind: the migrations applied, each recorded in
    public.harvester_migrations."""
    await conn.execute(
        "CREATE TABLE public.harvester_migrations ("
        "version text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
    )
    for migration in migrate.available():
        if migration.version in versions:
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO public.harvester_migrations VALUES ($1, '2024-01-02T03:04:05Z')",
                migration.version,
            )


async def migrate_until(conn: asyncpg.Connection, last: str, directory: Path | None = None) -> None:
    """The schema as the release whose newest migration was ``last`` (``NNN``) left it: applied
    from ``directory`` (default: the real files), in a ledger without checksums."""
    await conn.execute("CREATE SCHEMA harvester")
    await conn.execute(LEDGER_WITHOUT_CHECKSUMS)
    for migration in migrate.available(directory):
        if migration.version.split("_", 1)[0] > last:
            break
        await conn.execute(migration.sql)
        await conn.execute("INSERT INTO harvester.schema_migrations (version) VALUES ($1)", migration.version)


def copy_migrations(into: Path) -> Path:
    """A copy of the real migration files in ``into/migrations``, to edit, add to or remove from."""
    target = into / "migrations"
    shutil.copytree(migrate.migrations_dir(), target)
    return target


def edit(path: Path, addition: str = "\n-- edited after it landed\n") -> None:
    """Change a migration file the way a careless edit does: the SQL still runs."""
    path.write_text(path.read_text(encoding="utf-8") + addition, encoding="utf-8")


def add(directory: Path, name: str, sql: str = "SELECT 1;\n") -> Path:
    path = directory / name
    path.write_text(sql, encoding="utf-8")
    return path
