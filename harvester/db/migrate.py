"""Applies ``sql/migrations/NNN_*.sql`` in order, once each, under an advisory lock; says what is pending.

Safe to run twice or from several processes at once: the lock serializes runners and the ledger,
``harvester.schema_migrations``, records what is applied. Each migration runs in its own
transaction. Everything lives in schema ``harvester``, the ledger included, so migrating needs no
privilege on schema ``public`` and, once the schema exists, none on the database either. Older
versions kept the ledger in ``public.harvester_migrations``: it is read as well until migration 007
moves its rows over and drops it.

``harvester run`` does not migrate unless asked; it calls ``require_current``, which reads the
ledger only (the daemon role may lack every CREATE right).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

from harvester.db.queries import NamedQueries, sql_root
from harvester.errors import SchemaError

LEDGER = "harvester.schema_migrations"


class SQL(NamedQueries):
    lock_migrations: str
    unlock_migrations: str
    find_ledgers: str
    create_schema: str
    create_migrations_table: str
    select_applied_migrations: str
    select_legacy_migrations: str
    insert_migration: str


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path


def available() -> list[Migration]:
    paths = sorted((sql_root() / "migrations").glob("[0-9]*.sql"))
    return [Migration(version=p.stem, path=p) for p in paths]


async def applied(conn: asyncpg.Connection) -> set[str] | None:
    """The versions recorded in the ledger (and the old one in public); None without a schema."""
    found = await conn.fetchrow(SQL.find_ledgers)
    assert found is not None
    if not found["has_schema"] and not found["has_legacy_ledger"]:
        return None
    done: set[str] = set()
    if found["has_ledger"]:
        done |= {row["version"] for row in await conn.fetch(SQL.select_applied_migrations)}
    if found["has_legacy_ledger"]:
        done |= {row["version"] for row in await conn.fetch(SQL.select_legacy_migrations)}
    return done


async def pending(conn: asyncpg.Connection) -> list[str]:
    """The versions this code has that the database has not applied yet, in order."""
    done = await applied(conn) or set()
    return [m.version for m in available() if m.version not in done]


async def require_current(conn: asyncpg.Connection) -> None:
    """Raise ``SchemaError`` (one line, naming ``harvester migrate``) unless nothing is pending."""
    try:
        done = await applied(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SchemaError(
            f"cannot read the migration ledger {LEDGER}: {exc} (grant the role SELECT on it, "
            "e.g. by rerunning sql/roles.sql)"
        ) from exc
    if done is None:
        raise SchemaError("the database has no harvester schema: run `harvester migrate` first")
    missing = [m.version for m in available() if m.version not in done]
    if missing:
        raise SchemaError(
            f"the database schema is behind: {len(missing)} pending migration(s) "
            f"({', '.join(missing)}): run `harvester migrate` first"
        )


async def apply(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations on one connection; return the versions applied now."""
    applied_now: list[str] = []
    await conn.execute(SQL.lock_migrations)
    try:
        await _bootstrap(conn)
        done = await applied(conn) or set()
        for migration in available():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_text(encoding="utf-8"))
                await conn.execute(SQL.insert_migration, migration.version)
            applied_now.append(migration.version)
    finally:
        await conn.execute(SQL.unlock_migrations)
    return applied_now


async def _bootstrap(conn: asyncpg.Connection) -> None:
    """Create the schema and the ledger where missing, and only then: PostgreSQL checks the
    CREATE privilege of ``CREATE … IF NOT EXISTS`` even when the object exists, and a role that
    owns schema harvester need not have CREATE on the database."""
    found = await conn.fetchrow(SQL.find_ledgers)
    assert found is not None
    if found["has_ledger"]:
        return
    if not found["has_schema"]:
        await conn.execute(SQL.create_schema)
    await conn.execute(SQL.create_migrations_table)
