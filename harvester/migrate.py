"""Applies ``sql/migrations/NNN_*.sql`` in order, once each, under an advisory lock.

Safe to run twice or from several processes at once: the lock serializes runners and the
bookkeeping table records what is applied. Each migration runs in its own transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg

from harvester.queries import query, sql_root


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    path: Path


def available() -> list[Migration]:
    paths = sorted((sql_root() / "migrations").glob("[0-9]*.sql"))
    return [Migration(version=p.stem, path=p) for p in paths]


async def apply(conn: asyncpg.Connection) -> list[str]:
    """Apply pending migrations on one connection; return the versions applied now."""
    applied_now: list[str] = []
    await conn.execute(query("lock_migrations"))
    try:
        await conn.execute(query("create_migrations_table"))
        done = {row["version"] for row in await conn.fetch(query("select_applied_migrations"))}
        for migration in available():
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.path.read_text(encoding="utf-8"))
                await conn.execute(query("insert_migration"), migration.version)
            applied_now.append(migration.version)
    finally:
        await conn.execute(query("unlock_migrations"))
    return applied_now
