"""sql/roles.sql for real: what the producer, reader and daemon roles may and may not do.

Roles are cluster-wide and other tests run beside these, so roles.sql (idempotent) is applied to
this test's own database, and each test logs in through login roles with unique names that are
granted the group roles, the way the file's header tells an administrator to
(``tests/support/roles.py``, shared with the CLI tests in ``tests/field``).
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from harvester.db import migrate
from harvester.db.rows import ROW_TABLES
from tests.support.roles import Logins, apply_roles, drop_logins, make_logins, refused
from tests.support.rows import one

OUTPUT_TABLES = ("jobs", *ROW_TABLES, "rejects", "changes", "change_jumps")
VIEWS = ("site_contacts", "leads", "latest_sites", "limiter_status")
INTERNAL_TABLES = (
    "rate_limits",
    "discovery",
    "schema_migrations",
    "change_counter",
    "change_staging",
    "change_transactions",
)


async def seed_outputs(dsn: str) -> uuid.UUID:
    """One job with a stored site result, as the superuser."""
    job = uuid.uuid4()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("INSERT INTO harvester.jobs (job_id, state) VALUES ($1, 'harvested')", job)
        await conn.execute(
            "INSERT INTO harvester.results (job_id, job_type, raw) VALUES ($1, 'spiderSite', '{}')", job
        )
        await conn.execute("INSERT INTO harvester.sites (job_id, domain) VALUES ($1, 'example.com')", job)
        await conn.execute(
            "INSERT INTO harvester.site_emails (job_id, email) VALUES ($1, 'a@example.com')", job
        )
    finally:
        await conn.close()
    return job


async def test_roles_are_group_roles_without_login(logins: Logins) -> None:
    conn = await asyncpg.connect(logins.dsn)
    try:
        rows = await conn.fetch(
            "SELECT rolname, rolcanlogin FROM pg_roles WHERE rolname LIKE 'harvester\\_%'"
        )
        owner = await conn.fetchval(
            "SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'harvester'"
        )
    finally:
        await conn.close()
    assert {r["rolname"]: r["rolcanlogin"] for r in rows} == {
        "harvester_daemon": False,
        "harvester_producer": False,
        "harvester_reader": False,
    }
    assert owner == "harvester_daemon"


# ---------------------------------------------------------------- producer


async def test_producer_inserts_job_ids(logins: Logins) -> None:
    job = uuid.uuid4()
    conn = await logins.connect(logins.producer)
    try:
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1) ON CONFLICT DO NOTHING", job)
        # the same id again: ignored without SELECT privilege
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1) ON CONFLICT DO NOTHING", job)
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, priority, tags) VALUES ($1, 5, $2::jsonb)",
            uuid.uuid4(),
            '{"src": "crm"}',
        )
    finally:
        await conn.close()
    admin = await asyncpg.connect(logins.dsn)
    try:
        rows = await admin.fetch("SELECT job_id, state, priority FROM harvester.jobs ORDER BY priority")
    finally:
        await admin.close()
    assert [(r["state"], r["priority"]) for r in rows] == [("pending", 0), ("pending", 5)]
    assert rows[0]["job_id"] == job


async def test_producer_inserts_job_ids_with_their_account(logins: Logins) -> None:
    job = uuid.uuid4()
    conn = await logins.connect(logins.producer)
    try:
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, account) VALUES ($1, 'acme') ON CONFLICT DO NOTHING", job
        )
        with pytest.raises(asyncpg.CheckViolationError):  # not an account name
            await conn.execute(
                "INSERT INTO harvester.jobs (job_id, account) VALUES ($1, 'A c')", uuid.uuid4()
            )
    finally:
        await conn.close()
    reader = await logins.connect(logins.reader)
    try:
        assert await reader.fetchval("SELECT account FROM harvester.jobs WHERE job_id = $1", job) == "acme"
        assert await reader.fetchval("SELECT pending FROM harvester.pending_by_account") == 1
    finally:
        await reader.close()


async def test_producer_can_do_nothing_else(logins: Logins) -> None:
    job = await seed_outputs(logins.dsn)
    conn = await logins.connect(logins.producer)
    try:
        assert await refused(conn, "SELECT * FROM harvester.jobs")
        assert await refused(conn, "SELECT job_id FROM harvester.jobs")
        assert await refused(conn, "UPDATE harvester.jobs SET priority = 1")
        assert await refused(conn, "DELETE FROM harvester.jobs")
        assert await refused(conn, "TRUNCATE harvester.jobs")
        # only the three columns: a producer cannot enqueue a job as already finished
        assert await refused(
            conn, "INSERT INTO harvester.jobs (job_id, state) VALUES ($1, 'harvested')", uuid.uuid4()
        )
        # RETURNING and a conflict target both read the table, which needs SELECT
        assert await refused(
            conn, "INSERT INTO harvester.jobs (job_id) VALUES ($1) RETURNING job_id", uuid.uuid4()
        )
        assert await refused(
            conn,
            "INSERT INTO harvester.jobs (job_id) VALUES ($1) ON CONFLICT (job_id) DO NOTHING",
            uuid.uuid4(),
        )
        for table in (*OUTPUT_TABLES[1:], *VIEWS, *INTERNAL_TABLES):
            assert await refused(conn, f"SELECT * FROM harvester.{table}"), table
        assert await refused(
            conn, "INSERT INTO harvester.results (job_id, raw) VALUES ($1, '{}')", uuid.uuid4()
        )
        assert await refused(conn, "DELETE FROM harvester.sites WHERE job_id = $1", job)
    finally:
        await conn.close()


# ---------------------------------------------------------------- reader


async def test_reader_selects_every_output_and_view(logins: Logins) -> None:
    job = await seed_outputs(logins.dsn)
    conn = await logins.connect(logins.reader)
    try:
        for table in (*OUTPUT_TABLES, *VIEWS):
            await conn.fetch(f"SELECT * FROM harvester.{table}")
        contacts = await conn.fetchrow(
            "SELECT job_id, emails FROM harvester.site_contacts WHERE domain = 'example.com'"
        )
    finally:
        await conn.close()
    assert contacts is not None
    assert (contacts["job_id"], contacts["emails"]) == (job, ["a@example.com"])


async def test_reader_can_do_nothing_else(logins: Logins) -> None:
    job = await seed_outputs(logins.dsn)
    conn = await logins.connect(logins.reader)
    try:
        for table in INTERNAL_TABLES:
            assert await refused(conn, f"SELECT * FROM harvester.{table}"), table
        assert await refused(conn, "INSERT INTO harvester.jobs (job_id) VALUES ($1)", uuid.uuid4())
        assert await refused(conn, "UPDATE harvester.jobs SET priority = 1 WHERE job_id = $1", job)
        assert await refused(conn, "DELETE FROM harvester.jobs WHERE job_id = $1", job)
        assert await refused(conn, "DELETE FROM harvester.site_emails WHERE job_id = $1", job)
        assert await refused(conn, "UPDATE harvester.sites SET domain = 'x' WHERE job_id = $1", job)
        assert await refused(conn, "TRUNCATE harvester.rejects")
        assert await refused(conn, "CREATE TABLE harvester.mine (x int)")
    finally:
        await conn.close()


# ---------------------------------------------------------------- daemon


async def test_daemon_has_dml_on_every_table_and_runs_functions(logins: Logins) -> None:
    conn = await logins.connect(logins.daemon)
    try:
        tables = [
            r["name"]
            for r in await conn.fetch(
                "SELECT c.oid::regclass::text AS name FROM pg_class c "
                "WHERE c.relnamespace = 'harvester'::regnamespace AND c.relkind = 'r' ORDER BY 1"
            )
        ]
        assert {f"harvester.{t}" for t in (*OUTPUT_TABLES, *INTERNAL_TABLES)} <= set(tables)
        for table in tables:
            # privileges are checked when the statement starts, whatever rows it touches
            await conn.execute(f"INSERT INTO {table} SELECT * FROM {table} WHERE false")
            await conn.execute(
                f"UPDATE {table} SET {await first_column(conn, table)} = "
                f"{await first_column(conn, table)} WHERE false"
            )
            await conn.execute(f"DELETE FROM {table} WHERE false")
        not_executable = await conn.fetchval(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = 'harvester'::regnamespace "
            "AND NOT has_function_privilege(oid, 'EXECUTE')"
        )
        assert not_executable == 0
        # a real write through a sequence (rejects.reject_id) and the jobs trigger
        await conn.execute(
            "INSERT INTO harvester.rejects (job_id, reason, body) VALUES ($1, 'bad', '\\x00')", uuid.uuid4()
        )
        await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", uuid.uuid4())
        await conn.execute("UPDATE harvester.jobs SET state = 'expired'")
    finally:
        await conn.close()


async def test_daemon_may_create_nothing_outside_its_schema(logins: Logins) -> None:
    """Earlier versions granted CREATE on the database and on public for migrating; a rerun of
    roles.sql takes both back, since migrating needs neither any more."""
    admin = await asyncpg.connect(logins.dsn)
    try:
        rights = await one(
            admin,
            "SELECT has_database_privilege('harvester_daemon', current_database(), 'CREATE') AS db,"
            " has_schema_privilege('harvester_daemon', 'public', 'CREATE') AS public,"
            " has_schema_privilege('harvester_daemon', 'harvester', 'CREATE') AS own",
        )
    finally:
        await admin.close()
    assert dict(rights) == {"db": False, "public": False, "own": True}


async def first_column(conn: asyncpg.Connection, table: str) -> str:
    name = await conn.fetchval(
        "SELECT quote_ident(attname) FROM pg_attribute WHERE attrelid = $1::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum LIMIT 1",
        table,
    )
    return str(name)


async def test_daemon_runs_migrations(logins: Logins) -> None:
    conn = await logins.connect(logins.daemon)
    try:
        assert await migrate.apply(conn) == []  # already applied: reads the bookkeeping
    finally:
        await conn.close()


async def test_roles_before_the_first_migration(empty_db_dsn: str) -> None:
    """Run before migrating, roles.sql lets the daemon migrate; a rerun then grants the producer."""
    await apply_roles(empty_db_dsn)
    made = await make_logins(empty_db_dsn)
    try:
        daemon = await made.connect(made.daemon)
        try:
            assert await migrate.apply(daemon) != []
            owners = await daemon.fetchval(
                "SELECT array_agg(DISTINCT relowner::regrole::text) FROM pg_class "
                "WHERE relnamespace = 'harvester'::regnamespace"
            )
        finally:
            await daemon.close()
        assert owners == ["harvester_daemon"]
        reader = await made.connect(made.reader)
        try:  # default privileges: the new tables and views are readable at once
            await reader.fetch("SELECT * FROM harvester.leads")
            await reader.fetch("SELECT * FROM harvester.jobs")
        finally:
            await reader.close()
        producer = await made.connect(made.producer)
        try:  # a column grant needs the table: not there until roles.sql runs again
            assert await refused(producer, "INSERT INTO harvester.jobs (job_id) VALUES ($1)", uuid.uuid4())
        finally:
            await producer.close()

        await apply_roles(empty_db_dsn)
        producer = await made.connect(made.producer)
        try:
            await producer.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", uuid.uuid4())
        finally:
            await producer.close()
        reader = await made.connect(made.reader)
        try:
            assert await reader.fetchval("SELECT count(*) FROM harvester.jobs") == 1
            assert await refused(reader, "SELECT * FROM harvester.rate_limits")
        finally:
            await reader.close()
    finally:
        await drop_logins(made)


async def test_objects_added_later_stay_covered(logins: Logins) -> None:
    daemon = await logins.connect(logins.daemon)
    try:  # a later migration run by the daemon
        await daemon.execute("CREATE TABLE harvester.new_output (id bigserial PRIMARY KEY, v text)")
        await daemon.execute("CREATE VIEW harvester.new_view AS SELECT v FROM harvester.new_output")
    finally:
        await daemon.close()
    admin = await asyncpg.connect(logins.dsn)
    try:  # or one run by the administrator who ran roles.sql
        await admin.execute("CREATE TABLE harvester.admin_made (id bigserial PRIMARY KEY, v text)")
    finally:
        await admin.close()
    daemon = await logins.connect(logins.daemon)
    try:
        await daemon.execute("INSERT INTO harvester.admin_made (v) VALUES ('x')")
        await daemon.execute("UPDATE harvester.admin_made SET v = 'y'")
        await daemon.execute("DELETE FROM harvester.admin_made")
    finally:
        await daemon.close()
    reader = await logins.connect(logins.reader)
    try:
        await reader.fetch("SELECT * FROM harvester.new_output")
        await reader.fetch("SELECT * FROM harvester.new_view")
        await reader.fetch("SELECT * FROM harvester.admin_made")
        assert await refused(reader, "INSERT INTO harvester.new_output (v) VALUES ('x')")
    finally:
        await reader.close()
    producer = await logins.connect(logins.producer)
    try:
        assert await refused(producer, "INSERT INTO harvester.new_output (v) VALUES ('x')")
        assert await refused(producer, "SELECT * FROM harvester.new_view")
    finally:
        await producer.close()
    await apply_roles(logins.dsn)  # a rerun after the upgrade keeps views, drops internal tables
    reader = await logins.connect(logins.reader)
    try:
        await reader.fetch("SELECT * FROM harvester.new_view")
        assert await refused(reader, "SELECT * FROM harvester.new_output")
    finally:
        await reader.close()
