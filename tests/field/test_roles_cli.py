"""The three roles of sql/roles.sql through the ``harvester`` command, set up as the docs say.

An administrator runs ``psql -v ON_ERROR_STOP=1 -d … -f sql/roles.sql`` and creates login roles
granted the group roles; each command then runs as a subprocess with that login's DSN: the
producer enqueues (arguments, and a ``psql … | harvester enqueue --file -`` pipe), the reader asks
for the status, an owner without CREATE on schema public migrates a fresh database, an
administrator migrates and the daemon role, which may create nothing, harvests from the simulator.
And ``run`` on a database nobody migrated exits 1 naming ``harvester migrate``.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import aiohttp
import asyncpg
import pytest

from harvester.db import migrate
from harvester.sim import SimServer
from tests.support.roles import (
    ROOT,
    Logins,
    apply_roles_with_psql,
    drop_logins,
    login_dsn,
    make_logins,
    psql,
)

TOKEN = "field:key:secret"
SPEED = 30.0


@dataclass(frozen=True, slots=True)
class Finished:
    code: int
    stdout: str
    stderr: str


async def harvester(
    *args: str,
    dsn: str,
    stdin: bytes | int | None = None,
    env: dict[str, str] | None = None,
    within_s: float = 60.0,
) -> Finished:
    """``harvester ARGS`` as a user runs it: its own process, configured by the environment.
    ``stdin``: bytes to write, or the read end of a pipe from another process."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    clean.update({"HARVESTER_DSN": dsn, "HARVESTER_SERVER__ENABLED": "false", **(env or {})})
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harvester",
        *args,
        env=clean,
        cwd=str(ROOT),
        stdin=stdin if isinstance(stdin, int) else asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(
            proc.communicate(None if isinstance(stdin, int) else stdin), timeout=within_s
        )
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return Finished(proc.returncode, out.decode(), err.decode())


def daemon_env(sim: SimServer) -> dict[str, str]:
    return {
        "HARVESTER_API_TOKEN": TOKEN,
        "HARVESTER_API_BASE_URL": sim.url,
        "HARVESTER_SPEED": str(SPEED),
        "HARVESTER_LOG_LEVEL": "warning",
    }


async def sim_completed_jobs(sim: SimServer, count: int) -> list[str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{sim.url}/_sim/jobs",
            json={"count": count, "type": "spiderSite", "token": TOKEN, "outcome": "completed"},
        ) as resp,
    ):
        resp.raise_for_status()
        return [str(i) for i in (await resp.json())["job_ids"]]


async def fetch(dsn: str, sql: str, *args: object) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(dsn)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


@pytest.fixture
async def roles(db_dsn: str) -> AsyncIterator[Logins]:
    """A migrated database with roles.sql applied after migrating (as the docs order it)."""
    await asyncio.to_thread(apply_roles_with_psql, db_dsn)
    made = await make_logins(db_dsn)
    try:
        yield made
    finally:
        await drop_logins(made)


# ---------------------------------------------------------------- producer


async def test_producer_enqueues_ids_and_is_told_which_were_new(roles: Logins) -> None:
    first, second = str(uuid.uuid4()), str(uuid.uuid4())
    dsn = roles.dsn_for(roles.producer)
    done = await harvester("enqueue", first, second, "--priority", "3", "--tag", "src=crm", dsn=dsn)
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == {"enqueued": 2, "duplicates": 0}
    again = await harvester("enqueue", first, str(uuid.uuid4()), dsn=dsn)
    assert again.code == 0, again.stderr
    assert json.loads(again.stdout) == {"enqueued": 1, "duplicates": 1}
    rows = await fetch(roles.dsn, "SELECT job_id::text AS id, state, priority, tags FROM harvester.jobs")
    by_id = {r["id"]: r for r in rows}
    assert len(rows) == 3 and {r["state"] for r in rows} == {"pending"}
    assert (by_id[first]["priority"], json.loads(by_id[first]["tags"])) == (3, {"src": "crm"})


async def test_producer_enqueues_a_psql_query_piped_to_stdin(roles: Logins) -> None:
    """``psql -Atc "SELECT job_id FROM crm.submitted" | harvester enqueue --file -``"""
    ids = [str(uuid.uuid4()) for _ in range(5)]
    await execute(
        roles.dsn,
        "CREATE SCHEMA crm",
        "CREATE TABLE crm.submitted (job_id uuid)",
        "INSERT INTO crm.submitted SELECT unnest(ARRAY['" + "','".join(ids) + "']::uuid[])",
    )
    read, write = os.pipe()
    try:
        query = await asyncio.create_subprocess_exec(
            psql(), "-d", roles.dsn, "-Atc", "SELECT job_id FROM crm.submitted", stdout=write
        )
        os.close(write)
        write = -1
        done = await harvester("enqueue", "--file", "-", dsn=roles.dsn_for(roles.producer), stdin=read)
    finally:
        os.close(read)
        if write >= 0:
            os.close(write)
    assert await query.wait() == 0
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == {"enqueued": 5, "duplicates": 0}
    rows = await fetch(roles.dsn, "SELECT job_id::text AS id FROM harvester.jobs WHERE state = 'pending'")
    assert sorted(r["id"] for r in rows) == sorted(ids)


async def test_producer_enqueues_for_an_account(roles: Logins) -> None:
    job = str(uuid.uuid4())
    dsn = roles.dsn_for(roles.producer)
    done = await harvester("enqueue", job, "--account", "team-b", dsn=dsn)
    assert done.code == 0, done.stderr
    assert json.loads(done.stdout) == {"enqueued": 1, "duplicates": 0}
    rows = await fetch(roles.dsn, "SELECT job_id::text AS id, account FROM harvester.jobs")
    assert [(r["id"], r["account"]) for r in rows] == [(job, "team-b")]
    bad = await harvester("enqueue", str(uuid.uuid4()), "--account", "Team B", dsn=dsn)
    assert bad.code == 2 and "--account" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    assert len(await fetch(roles.dsn, "SELECT 1 FROM harvester.jobs")) == 1


# ---------------------------------------------------------------- reader


async def seed_queue_and_limiter(dsn: str) -> None:
    """Jobs in three states and one limiter row, written as the daemon would (as the admin)."""
    await execute(
        dsn,
        "INSERT INTO harvester.jobs (job_id, state) SELECT gen_random_uuid(), s "
        "FROM unnest(ARRAY['pending', 'pending', 'harvested', 'failed']) AS s",
        "SELECT * FROM harvester.rate_reserve(repeat('ab', 32), 100, 60, 0.6, 20, 0.02)",
    )


async def test_reader_status_shows_the_queue_and_the_limiter(roles: Logins) -> None:
    await seed_queue_and_limiter(roles.dsn)
    done = await harvester("status", "--json", dsn=roles.dsn_for(roles.reader))
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    assert {k: v for k, v in report["jobs"].items() if v} == {"pending": 2, "harvested": 1, "failed": 1}
    assert [(e["credential"], e["granted_total"], e["limit"]) for e in report["limiter"]] == [
        ("ab" * 6, 1, 100)
    ]
    assert "not_shown" not in report
    text = await harvester("status", dsn=roles.dsn_for(roles.reader))
    assert text.code == 0, text.stderr
    assert "pending    2" in text.stdout and "credential=abababababab" in text.stdout


async def test_reader_status_shows_each_account_and_what_waits_for_an_unknown_one(roles: Logins) -> None:
    await execute(
        roles.dsn,
        "INSERT INTO harvester.jobs (job_id, account, state) SELECT gen_random_uuid(), a, s FROM "
        "(VALUES ('acme', 'pending'), ('acme', 'harvested'), ('ghost', 'pending'), ('ghost', 'pending')) "
        "AS t(a, s)",
        "SELECT * FROM harvester.rate_reserve('acme', 100, 60, 0.6, 20, 0.02)",
    )
    env = {"HARVESTER_ACCOUNTS__ACME__TOKEN": "acme:key:s3cret"}
    done = await harvester("status", "--json", dsn=roles.dsn_for(roles.reader), env=env)
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    acme, ghost = report["accounts"]["acme"], report["accounts"]["ghost"]
    assert acme["configured"] and acme["jobs"]["pending"] == 1 and acme["jobs"]["harvested"] == 1
    assert acme["limiter"]["granted_total"] == 1
    assert not ghost["configured"] and ghost["jobs"]["pending"] == 2
    assert report["waiting_for_unknown_account"] == {"ghost": 2}
    assert "s3cret" not in done.stdout
    text = await harvester("status", dsn=roles.dsn_for(roles.reader), env=env)
    assert text.code == 0, text.stderr
    assert "2 pending job(s) for unknown account 'ghost'" in text.stdout
    assert "account acme:" in text.stdout


async def test_reader_status_without_the_limiter_view_leaves_it_out_and_says_so(roles: Logins) -> None:
    """A reader set up by hand, with SELECT on jobs only: the queue, and a line for the rest."""
    await seed_queue_and_limiter(roles.dsn)
    await execute(roles.dsn, "REVOKE SELECT ON harvester.limiter_status FROM harvester_reader")
    done = await harvester("status", "--json", dsn=roles.dsn_for(roles.reader))
    assert done.code == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["jobs"]["pending"] == 2
    assert report["limiter"] is None
    assert "permission denied" in report["not_shown"]["limiter"]
    text = await harvester("status", dsn=roles.dsn_for(roles.reader))
    assert text.code == 0, text.stderr
    limiter_lines = [line for line in text.stdout.splitlines() if line.startswith("limiter:")]
    assert len(limiter_lines) == 1 and "not shown (permission denied" in limiter_lines[0]


# ---------------------------------------------------------------- migrating


@dataclass(frozen=True, slots=True)
class Owner:
    name: str
    dsn: str


@pytest.fixture
async def owner(empty_db_dsn: str) -> AsyncIterator[Owner]:
    """A login with CREATE on this database and, as PostgreSQL 15 gives a non-owner, no CREATE
    on schema public."""
    name, password = f"t_owner_{uuid.uuid4().hex[:10]}", uuid.uuid4().hex
    database = empty_db_dsn.rsplit("/", 1)[1]
    await execute(
        empty_db_dsn,
        f"CREATE ROLE {name} LOGIN PASSWORD '{password}'",
        f'GRANT CREATE ON DATABASE "{database}" TO {name}',
    )
    try:
        yield Owner(name, login_dsn(empty_db_dsn, name, password))
    finally:
        await execute(
            empty_db_dsn,
            f'REVOKE ALL ON DATABASE "{database}" FROM {name}',
            f"DROP OWNED BY {name}",
            f"DROP ROLE {name}",
        )


async def test_an_owner_without_create_on_public_migrates_a_fresh_database(
    empty_db_dsn: str, owner: Owner
) -> None:
    rights = await fetch(empty_db_dsn, "SELECT has_schema_privilege($1, 'public', 'CREATE') AS c", owner.name)
    assert rights[0]["c"] is False
    done = await harvester("migrate", dsn=owner.dsn)
    assert done.code == 0, done.stderr
    again = await harvester("migrate", dsn=owner.dsn)
    assert again.code == 0, again.stderr
    ledger = await fetch(empty_db_dsn, "SELECT version FROM harvester.schema_migrations ORDER BY version")
    owners = await fetch(
        empty_db_dsn,
        "SELECT DISTINCT relowner::regrole::text AS o FROM pg_class "
        "WHERE relnamespace = 'harvester'::regnamespace",
    )
    in_public = await fetch(
        empty_db_dsn, "SELECT relname FROM pg_class WHERE relnamespace = 'public'::regnamespace"
    )
    assert [r["version"] for r in ledger] == [m.version for m in migrate.available()]
    assert [r["o"] for r in owners] == [owner.name]
    assert in_public == []


async def test_an_admin_migrates_and_the_daemon_role_harvests(empty_db_dsn: str) -> None:
    """roles.sql, ``harvester migrate`` as the administrator, roles.sql again; then the daemon
    login, which may create nothing anywhere but in its own schema, runs ``run --drain``."""
    await asyncio.to_thread(apply_roles_with_psql, empty_db_dsn)
    migrated = await harvester("migrate", dsn=empty_db_dsn)
    assert migrated.code == 0, migrated.stderr
    await asyncio.to_thread(apply_roles_with_psql, empty_db_dsn)
    logins = await make_logins(empty_db_dsn)
    try:
        rights = await fetch(
            empty_db_dsn,
            "SELECT has_database_privilege($1, current_database(), 'CREATE') AS db, "
            "has_schema_privilege($1, 'public', 'CREATE') AS public",
            logins.daemon,
        )
        assert dict(rights[0]) == {"db": False, "public": False}
        async with SimServer(speed=SPEED, seed=3, tokens=[TOKEN]) as sim:
            ids = await sim_completed_jobs(sim, 12)
            enqueued = await harvester("enqueue", *ids, dsn=logins.dsn_for(logins.producer))
            assert enqueued.code == 0, enqueued.stderr
            ran = await harvester(
                "run",
                "--drain",
                "--max-seconds",
                "60",
                dsn=logins.dsn_for(logins.daemon),
                env=daemon_env(sim),
                within_s=90,
            )
        assert ran.code == 0, ran.stderr
        states = await fetch(empty_db_dsn, "SELECT state, count(*) AS n FROM harvester.jobs GROUP BY state")
        stored = await fetch(empty_db_dsn, "SELECT count(*) AS n FROM harvester.results")
        pending = await fetch(empty_db_dsn, "SELECT to_regclass('public.harvester_migrations') AS t")
    finally:
        await drop_logins(logins)
    assert {r["state"]: r["n"] for r in states} == {"harvested": 12}
    assert stored[0]["n"] == 12
    assert pending[0]["t"] is None


async def test_run_on_an_unmigrated_database_exits_1_naming_migrate(empty_db_dsn: str) -> None:
    async with SimServer(speed=SPEED, seed=3, tokens=[TOKEN]) as sim:
        done = await harvester("run", "--drain", dsn=empty_db_dsn, env=daemon_env(sim))
    assert done.code == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "harvester migrate" in lines[0]
    schemas = await fetch(empty_db_dsn, "SELECT nspname FROM pg_namespace WHERE nspname = 'harvester'")
    assert schemas == []  # it did not migrate on its own


async def test_the_daemon_role_refuses_a_schema_behind_and_names_what_is_pending(roles: Logins) -> None:
    newest = migrate.available()[-1].version  # an older one missing is out of order: exit 2
    await execute(roles.dsn, f"DELETE FROM harvester.schema_migrations WHERE version = '{newest}'")
    async with SimServer(speed=SPEED, seed=3, tokens=[TOKEN]) as sim:
        done = await harvester("run", "--drain", dsn=roles.dsn_for(roles.daemon), env=daemon_env(sim))
    assert done.code == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert newest in lines[0] and "harvester migrate" in lines[0]


async def test_run_migrate_migrates_an_empty_database_then_runs(empty_db_dsn: str) -> None:
    async with SimServer(speed=SPEED, seed=3, tokens=[TOKEN]) as sim:
        done = await harvester("run", "--migrate", "--drain", dsn=empty_db_dsn, env=daemon_env(sim))
    assert done.code == 0, done.stderr
    ledger = await fetch(empty_db_dsn, "SELECT version FROM harvester.schema_migrations")
    assert sorted(r["version"] for r in ledger) == [m.version for m in migrate.available()]


async def test_migrate_on_start_from_the_environment_does_the_same(empty_db_dsn: str) -> None:
    async with SimServer(speed=SPEED, seed=3, tokens=[TOKEN]) as sim:
        done = await harvester(
            "run",
            "--drain",
            dsn=empty_db_dsn,
            env={**daemon_env(sim), "HARVESTER_DATABASE__MIGRATE_ON_START": "true"},
        )
    assert done.code == 0, done.stderr
    assert await fetch(empty_db_dsn, "SELECT 1 FROM harvester.schema_migrations LIMIT 1") != []
