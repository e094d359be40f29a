"""Migrations: an empty database gets the SPEC's tables, columns and views (sql/schema.sql and
test_schema_snapshot.py hold the whole schema, exactly); re-running is harmless; concurrent runs
apply each version once; the ledger lives in schema harvester, and one that releases before 007 left
in public is refused. The history checks are in test_migration_checks.py."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from harvester.db import migrate
from harvester.errors import MigrationHistoryError, SchemaError
from tests.support.migrations import migrate_like_older_versions
from tests.support.rows import one

# SPEC section 3: the tables and columns downstream SQL depends on, with their types.
EXPECTED_COLUMNS = {
    "jobs": {
        "job_id": "uuid",
        "state": "text",
        "priority": "smallint",
        "tags": "jsonb",
        "job_type": "text",
        "upstream_status": "text",
        "enqueued_at": "timestamp with time zone",
        "next_poll_at": "timestamp with time zone",
        "last_polled_at": "timestamp with time zone",
        "finished_at": "timestamp with time zone",
        "polls": "integer",
        "last_http_status": "integer",
        "last_error": "text",
    },
    "results": {
        "job_id": "uuid",
        "job_type": "text",
        "status": "text",
        "success": "boolean",
        "processing_time_seconds": "double precision",
        "worker_id": "text",
        "completed_at": "timestamp with time zone",
        "message": "text",
        "error_message": "text",
        "raw": "jsonb",
        "fetched_at": "timestamp with time zone",
    },
    "sites": {
        "job_id": "uuid",
        "url": "text",
        "domain": "text",
        "pages_crawled": "integer",
        "crawl_status": "text",
        "markdown_compendium": "text",
        "compendium": "jsonb",
        "company_vitals": "jsonb",
        "company_name": "text",
        "industry": "text",
        "pain_points": "jsonb",
        "lead_scoring": "jsonb",
        "icp_fit_score": "double precision",
        "personalization_hooks": "jsonb",
        "metadata": "jsonb",
    },
    "site_emails": {"job_id": "uuid", "email": "text"},
    "site_phones": {"job_id": "uuid", "phone": "text", "e164": "text"},
    "site_addresses": {"job_id": "uuid", "address": "text"},
    "site_socials": {"job_id": "uuid", "platform": "text", "url": "text"},
    "team_members": {
        "job_id": "uuid",
        "position": "integer",
        "name": "text",
        "title": "text",
        "email": "text",
        "linkedin": "text",
    },
    "maps_searches": {"job_id": "uuid", "query": "text", "results_count": "integer", "metadata": "jsonb"},
    "businesses": {
        "place_id": "text",
        "name": "text",
        "rating": "double precision",
        "reviews_count": "integer",
        "address": "text",
        "phone": "text",
        "website": "text",
        "categories": "ARRAY",
        "latitude": "double precision",
        "longitude": "double precision",
        "link": "text",
        "business_status": "text",
        "price_range": "text",
        "working_hours": "jsonb",
        "first_seen_at": "timestamp with time zone",
        "last_seen_at": "timestamp with time zone",
        "last_job_id": "uuid",
    },
    "maps_businesses": {"job_id": "uuid", "position": "integer", "place_id": "text"},
    "rejects": {
        "job_id": "uuid",
        "received_at": "timestamp with time zone",
        "reason": "text",
        "body": "bytea",
    },
    # the change feed (011)
    "changes": {
        "change_id": "bigint",
        "job_id": "uuid",
        "state": "text",
        "job_type": "text",
        "account": "text",
        "reason": "text",
        "changed_at": "timestamp with time zone",
    },
    # the migration ledger
    "schema_migrations": {"version": "text", "applied_at": "timestamp with time zone", "checksum": "text"},
}
EXPECTED_VIEWS = {"site_contacts", "leads", "latest_sites", "limiter_status"}
PRIMARY_KEYS = {
    "jobs": ["job_id"],
    "results": ["job_id"],
    "sites": ["job_id"],
    "maps_searches": ["job_id"],
    "businesses": ["place_id"],
}


async def catalog(conn: asyncpg.Connection) -> dict[str, dict[str, str]]:
    rows = await conn.fetch(
        """SELECT c.table_name, c.column_name, c.data_type
             FROM information_schema.columns c
             JOIN information_schema.tables t USING (table_schema, table_name)
            WHERE c.table_schema = 'harvester' AND t.table_type = 'BASE TABLE'"""
    )
    found: dict[str, dict[str, str]] = {}
    for row in rows:
        found.setdefault(row["table_name"], {})[row["column_name"]] = row["data_type"]
    return found


async def test_migrations_build_the_spec_schema(empty_db_dsn: str) -> None:
    """The names downstream SQL depends on. The snapshot says what the whole schema is; this says
    which part of it is a contract, so a snapshot regenerated after dropping one still fails here."""
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        applied = await migrate.apply(conn)
        assert applied == [m.version for m in migrate.available()]
        found = await catalog(conn)
        for table, columns in EXPECTED_COLUMNS.items():
            assert table in found, f"missing table harvester.{table}"
            for column, kind in columns.items():
                assert found[table].get(column) == kind, f"harvester.{table}.{column}"
        views = {
            r["table_name"]
            for r in await conn.fetch(
                "SELECT table_name FROM information_schema.views WHERE table_schema = 'harvester'"
            )
        }
        assert views >= EXPECTED_VIEWS
        for table, key in PRIMARY_KEYS.items():
            cols = await conn.fetch(
                """SELECT a.attname FROM pg_index i
                     JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey)
                    WHERE i.indrelid = $1::regclass AND i.indisprimary""",
                f"harvester.{table}",
            )
            assert [c["attname"] for c in cols] == key
    finally:
        await conn.close()


async def test_migrating_twice_applies_nothing_new_and_changes_no_ledger_row(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate.apply(conn)
        ledger = "SELECT version, applied_at, checksum FROM harvester.schema_migrations ORDER BY version"
        before = [tuple(r) for r in await conn.fetch(ledger)]
        assert await migrate.apply(conn) == []
        after = [tuple(r) for r in await conn.fetch(ledger)]
    finally:
        await conn.close()
    assert after == before
    assert [(v, c) for v, _, c in after] == [(m.version, m.checksum) for m in migrate.available()]


async def test_concurrent_migrations_apply_each_version_once(empty_db_dsn: str) -> None:
    conns = [await asyncpg.connect(empty_db_dsn) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate.apply(c) for c in conns))
        applied = sorted(v for result in results for v in result)
        assert applied == sorted(m.version for m in migrate.available())
        count = await conns[0].fetchval("SELECT count(*) FROM harvester.schema_migrations")
        assert count == len(migrate.available())
    finally:
        for conn in conns:
            await conn.close()


async def test_nothing_lands_outside_schema_harvester(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        before = await objects_outside_harvester(conn)
        await migrate.apply(conn)
        assert await objects_outside_harvester(conn) == before
    finally:
        await conn.close()


async def objects_outside_harvester(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Relations, functions and types in any schema but harvester and the system ones, and the
    extensions: what a migration could have created elsewhere."""
    user_schema = (
        "NOT IN ('harvester', 'pg_catalog', 'information_schema', 'pg_toast')"
        " AND n.nspname NOT LIKE 'pg_temp%' AND n.nspname NOT LIKE 'pg_toast_temp%'"
    )
    found = {}
    for kind, sql in {
        "relations": "SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n "
        f"ON n.oid = c.relnamespace WHERE n.nspname {user_schema}",
        "functions": "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n "
        f"ON n.oid = p.pronamespace WHERE n.nspname {user_schema}",
        "types": "SELECT t.oid::regtype::text FROM pg_type t JOIN pg_namespace n "
        f"ON n.oid = t.typnamespace WHERE n.nspname {user_schema}",
        "schemas": f"SELECT n.nspname FROM pg_namespace n WHERE n.nspname {user_schema}",
        "extensions": "SELECT extname FROM pg_extension",
    }.items():
        found[kind] = sorted(r[0] for r in await conn.fetch(sql))
    return found


async def test_a_ledger_left_in_public_by_releases_before_007_is_refused(empty_db_dsn: str) -> None:
    """Nobody runs that layout any more, and this release no longer reads it: migrating and starting
    say to migrate with an older release first, and nothing is changed."""
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate_like_older_versions(conn, ["001_schema", "002_limiter", "003_store"])
        for attempt in (migrate.apply, migrate.require_current, migrate.pending):
            with pytest.raises(MigrationHistoryError, match=r"public\.harvester_migrations") as refused:
                await attempt(conn)
            assert "`harvester migrate` of an older release first" in str(refused.value)
        ledgers = await one(
            conn,
            "SELECT to_regclass('public.harvester_migrations') IS NOT NULL AS old, "
            "to_regclass('harvester.schema_migrations') IS NOT NULL AS new",
        )
        rows = await conn.fetchval("SELECT count(*) FROM public.harvester_migrations")
    finally:
        await conn.close()
    assert dict(ledgers) == {"old": True, "new": False}
    assert rows == 3


async def test_a_stray_public_ledger_after_007_is_not_ours(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate.apply(conn)
        await conn.execute("CREATE TABLE public.harvester_migrations (version text)")
        assert await migrate.apply(conn) == []
        await migrate.require_current(conn)
    finally:
        await conn.close()


async def test_pending_names_what_is_not_applied(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        everything = [m.version for m in migrate.available()]
        assert await migrate.pending(conn) == everything
        await migrate.apply(conn)
        assert await migrate.pending(conn) == []
        await migrate.require_current(conn)
        await conn.execute("DELETE FROM harvester.schema_migrations WHERE version = $1", everything[-1])
        assert await migrate.pending(conn) == everything[-1:]
    finally:
        await conn.close()


async def test_require_current_refuses_a_schema_that_is_missing_or_behind(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        with pytest.raises(SchemaError, match="harvester migrate"):
            await migrate.require_current(conn)
        await migrate.apply(conn)
        newest = migrate.available()[-1].version
        await conn.execute("DELETE FROM harvester.schema_migrations WHERE version = $1", newest)
        with pytest.raises(SchemaError, match=rf"1 pending migration\(s\) \({newest}\)") as behind:
            await migrate.require_current(conn)
        assert not isinstance(behind.value, MigrationHistoryError)  # exit 1: `migrate` fixes it
    finally:
        await conn.close()


async def test_producer_insert_is_the_documented_one_liner(conn: asyncpg.Connection) -> None:
    job = "550e8400-e29b-41d4-a716-446655440000"
    for _ in range(2):
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1) ON CONFLICT DO NOTHING", job)
    row = await one(conn, "SELECT state, priority, tags, polls FROM harvester.jobs")
    assert dict(row) == {"state": "pending", "priority": 0, "tags": "{}", "polls": 0}


async def test_a_non_uuid_is_refused_by_the_column_type(conn: asyncpg.Connection) -> None:
    try:
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1::text::uuid)", "nope")
    except asyncpg.InvalidTextRepresentationError:
        pass
    else:  # pragma: no cover
        raise AssertionError("a bad UUID was accepted")
    assert await conn.fetchval("SELECT count(*) FROM harvester.jobs") == 0
