"""The history checks against a real database: `migrate` and the daemon's start-up refuse a new gap,
a migration out of order and an applied file that changed or is gone (MigrationHistoryError, exit 2,
naming the file); the 012 hole is accepted; a ledger kept before checksums adopts them.

Tampering happens in a copy of sql/migrations (``tests/support/migrations.py``), never in the real one.
"""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from harvester.db import migrate
from harvester.errors import MigrationHistoryError, SchemaError
from tests.support.commands import harvester as run_harvester
from tests.support.migrations import add, copy_migrations, edit, migrate_until
from tests.support.roles import Logins, apply_roles, drop_logins, make_logins

NEVER_EDITED = "a migration on main is never edited; a change is a new migration"
LEDGER = "SELECT version, checksum FROM harvester.schema_migrations ORDER BY version"


def harvester(*args: str, dsn: str) -> subprocess.CompletedProcess[str]:
    """``python -m harvester ARGS`` as scripts run it, with a token (``run`` asks for one before it
    looks at the database)."""
    return run_harvester(*args, dsn=dsn, env={"HARVESTER_API_TOKEN": "a:b:c"})


async def ledger_of(dsn: str) -> list[tuple[str, str | None]]:
    conn = await asyncpg.connect(dsn)
    try:
        return [(r["version"], r["checksum"]) for r in await conn.fetch(LEDGER)]
    finally:
        await conn.close()


@pytest.fixture
async def migrated(empty_db_dsn: str, tmp_path: Path) -> AsyncIterator[tuple[asyncpg.Connection, Path]]:
    """A database with every migration applied from a copy of the files, and that copy."""
    files = copy_migrations(tmp_path)
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate.apply(conn, files)
        yield conn, files
    finally:
        await conn.close()


# ---------------------------------------------------------------- the 012 hole


async def test_the_012_hole_is_accepted_and_stays_a_hole(empty_db_dsn: str) -> None:
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        applied = await migrate.apply(conn)
        await migrate.require_current(conn)
        versions = [r["version"] for r in await conn.fetch(LEDGER)]
    finally:
        await conn.close()
    assert applied == versions
    assert "011_changes" in versions and "013_reconcile_gap" in versions
    assert not any(v.startswith("012") for v in versions)


async def test_a_late_012_is_refused_on_a_database_that_has_014(empty_db_dsn: str, tmp_path: Path) -> None:
    """It would run after 013 and 014 here."""
    files = copy_migrations(tmp_path)
    add(files, "012_late.sql", "CREATE TABLE harvester.late (id int);\n")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate_until(conn, "014")
        for attempt in (migrate.apply, migrate.require_current):
            with pytest.raises(MigrationHistoryError, match=r"012_late\.sql takes 012, a recorded hole"):
                await attempt(conn, files)
        assert await conn.fetchval("SELECT to_regclass('harvester.late')") is None
    finally:
        await conn.close()


async def test_a_late_012_is_refused_on_a_new_database(empty_db_dsn: str, tmp_path: Path) -> None:
    """It would run before 013 here: the databases would not share one history."""
    files = copy_migrations(tmp_path)
    add(files, "012_late.sql", "CREATE TABLE harvester.late (id int);\n")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        with pytest.raises(MigrationHistoryError, match=r"012_late\.sql takes 012, a recorded hole"):
            await migrate.apply(conn, files)
        assert await conn.fetchval("SELECT to_regnamespace('harvester')") is None
    finally:
        await conn.close()


# ---------------------------------------------------------------- gaps and order


async def test_a_new_gap_is_refused_on_a_fresh_database_and_nothing_is_created(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    files = copy_migrations(tmp_path)
    newest = migrate.available(files)[-1].number
    add(files, f"{newest + 2:03d}_skips_one.sql")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        with pytest.raises(MigrationHistoryError) as refused:
            await migrate.apply(conn, files)
        with pytest.raises(MigrationHistoryError):
            await migrate.require_current(conn, files)
        schema = await conn.fetchval("SELECT to_regnamespace('harvester')")
    finally:
        await conn.close()
    assert f"no migration numbered {newest + 1:03d}" in str(refused.value)
    assert f"{newest + 2:03d}_skips_one.sql" in str(refused.value)
    assert schema is None


async def test_a_new_gap_is_refused_on_a_migrated_database(
    migrated: tuple[asyncpg.Connection, Path],
) -> None:
    conn, files = migrated
    newest = migrate.available(files)[-1].number
    add(files, f"{newest + 2:03d}_skips_one.sql", "CREATE TABLE harvester.skipped (id int);\n")
    with pytest.raises(MigrationHistoryError, match=f"no migration numbered {newest + 1:03d}"):
        await migrate.apply(conn, files)
    assert await conn.fetchval("SELECT to_regclass('harvester.skipped')") is None


async def test_a_migration_below_the_newest_applied_one_is_refused(empty_db_dsn: str, tmp_path: Path) -> None:
    """A database migrated, before these checks, by a build that had 017 but not yet 016 (two
    branches numbered their migrations apart, and the later number landed first)."""
    files = copy_migrations(tmp_path)
    newest = migrate.available(files)[-1].number
    first, second = f"{newest + 1:03d}_from_a", f"{newest + 2:03d}_from_b"
    add(files, f"{second}.sql", "CREATE TABLE harvester.b (id int);\n")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate_until(conn, f"{newest + 2:03d}", files)  # 001..newest and second
        add(files, f"{first}.sql", "CREATE TABLE harvester.a (id int);\n")
        with pytest.raises(MigrationHistoryError) as refused:
            await migrate.apply(conn, files)
        with pytest.raises(MigrationHistoryError):
            await migrate.require_current(conn, files)
        assert await conn.fetchval("SELECT to_regclass('harvester.a')") is None
    finally:
        await conn.close()
    assert f"{first}.sql is not applied but the later {second} is: it would run out of order" in str(
        refused.value
    )


async def test_pending_migrations_after_the_newest_applied_one_are_applied(
    migrated: tuple[asyncpg.Connection, Path],
) -> None:
    conn, files = migrated
    newest = migrate.available(files)[-1].number
    add(files, f"{newest + 1:03d}_next.sql", "CREATE TABLE harvester.next (id int);\n")
    with pytest.raises(SchemaError, match="pending"):
        await migrate.require_current(conn, files)
    assert await migrate.apply(conn, files) == [f"{newest + 1:03d}_next"]
    await migrate.require_current(conn, files)


# ---------------------------------------------------------------- applied files


async def test_an_edited_applied_migration_is_refused(migrated: tuple[asyncpg.Connection, Path]) -> None:
    conn, files = migrated
    edit(files / "011_changes.sql")
    for attempt in (migrate.apply, migrate.require_current):
        with pytest.raises(MigrationHistoryError, match=NEVER_EDITED) as refused:
            await attempt(conn, files)
        assert "011_changes.sql changed after it was applied" in str(refused.value)


async def test_an_applied_migration_whose_file_is_gone_is_refused(
    migrated: tuple[asyncpg.Connection, Path],
) -> None:
    conn, files = migrated
    (files / "007_ledger.sql").rename(files / "007_ledger_moved.sql")
    with pytest.raises(MigrationHistoryError) as refused:
        await migrate.apply(conn, files)
    assert "007_ledger is applied but its file 007_ledger.sql is gone" in str(refused.value)
    assert "007_ledger_moved.sql is not applied" in str(refused.value)


async def test_versions_of_a_newer_release_let_this_one_start(
    migrated: tuple[asyncpg.Connection, Path],
) -> None:
    """During an upgrade, an older daemon restarting after the new release migrated still starts."""
    conn, files = migrated
    newest = migrate.available(files)[-1].number
    await conn.execute(
        "INSERT INTO harvester.schema_migrations (version, checksum) VALUES ($1, 'x')",
        f"{newest + 1:03d}_from_the_next_release",
    )
    await migrate.require_current(conn, files)
    assert await migrate.apply(conn, files) == []


# ---------------------------------------------------------------- checksums adopted


async def test_a_ledger_without_checksums_adopts_them_and_then_detects_an_edit(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    files = copy_migrations(tmp_path)
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate_until(conn, "014", files)  # the release before checksums
        # The daemon of this release reads a ledger that has no checksum column yet: behind, exit 1.
        with pytest.raises(SchemaError, match="run `harvester migrate` first") as behind:
            await migrate.require_current(conn, files)
        assert not isinstance(behind.value, MigrationHistoryError)

        assert await migrate.apply(conn, files) == [m.version for m in migrate.available(files)][13:]
        ledger = [(r["version"], r["checksum"]) for r in await conn.fetch(LEDGER)]
        assert ledger == [(m.version, m.checksum) for m in migrate.available(files)]

        edit(files / "010_accounts.sql")
        with pytest.raises(MigrationHistoryError, match=r"010_accounts\.sql changed after it was applied"):
            await migrate.apply(conn, files)
        with pytest.raises(MigrationHistoryError, match=r"010_accounts\.sql changed after it was applied"):
            await migrate.require_current(conn, files)
    finally:
        await conn.close()


async def test_an_edit_made_before_checksums_existed_cannot_be_detected(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    """What the ledger adopts is what the files say at its first migrate of this release."""
    as_applied = copy_migrations(tmp_path / "then")
    edit(as_applied / "001_schema.sql", "\n-- the text before an edit\n")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate_until(conn, "014", as_applied)
        await migrate.apply(conn)  # the real files, 001 different from what ran
        await migrate.require_current(conn)
        recorded = await conn.fetchval(
            "SELECT checksum FROM harvester.schema_migrations WHERE version = '001_schema'"
        )
    finally:
        await conn.close()
    assert recorded == migrate.available()[0].checksum


# ---------------------------------------------------------------- the real command


async def test_the_cli_refuses_an_edited_applied_migration_with_exit_2(
    empty_db_dsn: str, tmp_path: Path
) -> None:
    """The database applied 010_accounts.sql with a text other than the file's now: `migrate` and
    `run` both exit 2 with one line naming the file, and nothing is applied or started."""
    files = copy_migrations(tmp_path)
    edit(files / "010_accounts.sql")
    conn = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate.apply(conn, files)
    finally:
        await conn.close()
    before = await ledger_of(empty_db_dsn)
    for args in (["migrate"], ["run", "--drain", "--max-seconds", "5"]):
        proc = harvester(*args, dsn=empty_db_dsn)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith("harvester: the migrations in ")
        assert "010_accounts.sql changed after it was applied" in lines[0]
        assert NEVER_EDITED in lines[0]
    assert await ledger_of(empty_db_dsn) == before


async def test_the_cli_migrates_and_runs_a_clean_history(empty_db_dsn: str) -> None:
    done = harvester("migrate", dsn=empty_db_dsn)
    assert done.returncode == 0, done.stderr
    again = harvester("migrate", dsn=empty_db_dsn)
    assert again.returncode == 0, again.stderr
    assert [v for v, _ in await ledger_of(empty_db_dsn)] == [m.version for m in migrate.available()]


# ---------------------------------------------------------------- the roles of sql/roles.sql


async def test_the_daemon_role_reads_the_checksums_and_refuses_a_changed_file(
    logins: Logins, tmp_path: Path
) -> None:
    files = copy_migrations(tmp_path)
    daemon = await logins.connect(logins.daemon)
    try:
        await migrate.require_current(daemon, files)
        assert await migrate.apply(daemon, files) == []
        edit(files / "014_cluster.sql")
        with pytest.raises(MigrationHistoryError, match=r"014_cluster\.sql changed"):
            await migrate.require_current(daemon, files)
    finally:
        await daemon.close()


async def test_the_daemon_role_reads_a_ledger_from_before_checksums(empty_db_dsn: str) -> None:
    """roles.sql applied to a database of the release before checksums: the daemon login, which
    may not alter the ledger, is told to migrate (exit 1), not refused for a missing column."""
    admin = await asyncpg.connect(empty_db_dsn)
    try:
        await migrate_until(admin, "014")
    finally:
        await admin.close()
    await apply_roles(empty_db_dsn)
    made = await make_logins(empty_db_dsn)
    try:
        daemon = await made.connect(made.daemon)
        try:
            with pytest.raises(SchemaError, match=r"1 pending migration\(s\) \(015_") as behind:
                await migrate.require_current(daemon)
        finally:
            await daemon.close()
    finally:
        await drop_logins(made)
    assert not isinstance(behind.value, MigrationHistoryError)
