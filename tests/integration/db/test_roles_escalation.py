"""The producer and reader roles cannot climb out of their grants.

``test_roles.py`` checks the table privileges; this checks the other ways up: switching roles,
granting roles to oneself, creating objects (in ``harvester`` or ``public``) that the daemon might
resolve, calling the limiter's functions (EXECUTE is granted to PUBLIC by default), touching the
sequences, and upserting or copying past the column grant.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from tests.support.roles import Logins, refused

LIMITER_CALLS = (
    "SELECT * FROM harvester.rate_reserve('k', 100, 60, 0.6, 20, 0.9)",
    "SELECT * FROM harvester.rate_peek('k', 100, 60, 0.6, 20, 0.9, 0, 10)",
)


def logins_of(logins: Logins) -> list[str]:
    return [logins.producer, logins.reader]


async def test_cannot_switch_to_another_role(logins: Logins) -> None:
    for user in logins_of(logins):
        conn = await logins.connect(user)
        try:
            for role in ("harvester_daemon", "harvester_producer", "harvester_reader", "postgres"):
                if user == logins.producer and role == "harvester_producer":
                    continue
                if user == logins.reader and role == "harvester_reader":
                    continue
                assert await refused(conn, f"SET ROLE {role}"), (user, role)
                assert await refused(conn, f"SET SESSION AUTHORIZATION {role}"), (user, role)
        finally:
            await conn.close()


async def test_cannot_grant_itself_more(logins: Logins) -> None:
    for user in logins_of(logins):
        conn = await logins.connect(user)
        try:
            assert await refused(conn, f"GRANT harvester_daemon TO {user}")
            assert await refused(conn, f"ALTER ROLE {user} SUPERUSER")
            assert await refused(conn, f"ALTER ROLE {user} CREATEROLE")
            # A GRANT without grant option is an error or a "no privileges were granted"
            # warning; either way nothing changes.
            for grant in (
                "GRANT SELECT ON harvester.rate_limits TO PUBLIC",
                "GRANT INSERT ON harvester.results TO PUBLIC",
                "GRANT SELECT ON harvester.jobs TO PUBLIC",
            ):
                await refused(conn, grant)
            assert not await conn.fetchval(
                "SELECT has_table_privilege('harvester.results', 'INSERT') "
                "OR has_table_privilege('harvester.rate_limits', 'SELECT')"
            )
        finally:
            await conn.close()


async def test_cannot_create_objects_the_daemon_could_resolve(logins: Logins) -> None:
    for user in logins_of(logins):
        conn = await logins.connect(user)
        try:
            for schema in ("harvester", "public"):
                assert await refused(conn, f"CREATE TABLE {schema}.x (i int)"), (user, schema)
                assert await refused(conn, f"CREATE VIEW {schema}.v AS SELECT 1"), (user, schema)
                assert await refused(
                    conn, f"CREATE FUNCTION {schema}.now() RETURNS int LANGUAGE sql AS 'SELECT 1'"
                ), (user, schema)
            assert await refused(conn, "ALTER TABLE harvester.jobs ADD COLUMN x int")
            assert await refused(conn, "DROP TABLE harvester.rejects")
            assert await refused(conn, "CREATE SCHEMA mine")
        finally:
            await conn.close()


async def test_cannot_use_the_limiter_functions(logins: Logins) -> None:
    for user in logins_of(logins):
        conn = await logins.connect(user)
        try:
            for call in LIMITER_CALLS:
                assert await refused(conn, call), (user, call)
        finally:
            await conn.close()


async def test_cannot_touch_sequences(logins: Logins) -> None:
    for user in logins_of(logins):
        conn = await logins.connect(user)
        try:
            assert await refused(conn, "SELECT nextval('harvester.rejects_reject_id_seq')")
            assert await refused(conn, "SELECT setval('harvester.rejects_reject_id_seq', 1)")
        finally:
            await conn.close()


async def test_producer_cannot_upsert_or_copy_past_its_columns(logins: Logins) -> None:
    conn = await logins.connect(logins.producer)
    try:
        assert await refused(
            conn,
            "INSERT INTO harvester.jobs (job_id) VALUES ($1) "
            "ON CONFLICT (job_id) DO UPDATE SET state = 'harvested'",
            uuid.uuid4(),
        )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await conn.copy_records_to_table(
                "jobs",
                schema_name="harvester",
                columns=["job_id", "state"],
                records=[(uuid.uuid4(), "harvested")],
            )
        # the permitted columns do work through COPY: it is the same INSERT privilege
        await conn.copy_records_to_table(
            "jobs", schema_name="harvester", columns=["job_id"], records=[(uuid.uuid4(),)]
        )
    finally:
        await conn.close()
