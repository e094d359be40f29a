"""Applies ``sql/migrations/NNN_name.sql`` in order, once each, under an advisory lock, and refuses a
history it cannot trust; says what is pending.

Safe to run twice or from several processes at once: the lock serializes runners and the ledger,
``harvester.schema_migrations``, records what is applied, with the sha256 of each file as it was
applied. Each migration runs in its own transaction. Everything lives in schema ``harvester``, the
ledger included, so migrating needs no privilege on schema ``public`` and, once the schema exists,
none on the database either.

Before anything is applied (and before ``harvester run`` starts) the files are checked against the
ledger: numbers without gaps but the known hole, no file below the newest applied one left
unapplied, no applied file changed or gone. A failure is a ``MigrationHistoryError`` naming the
files (exit code 2): no command fixes it, a person must. Versions in the ledger past the newest
file are a newer release's, left alone, so that older daemons keep running through an upgrade.

``harvester run`` does not migrate unless asked; it calls ``require_current``, which reads the
ledger only (the daemon role may lack every CREATE right).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from pathlib import Path

import asyncpg

from harvester.db.queries import NamedQueries, sql_root
from harvester.errors import MigrationHistoryError, SchemaError

LEDGER = "harvester.schema_migrations"

# 012 never existed on main: the files went from 011 to 013, and every database has applied 013 and
# 014 without it. A file numbered 012 now would run after 013 on those databases and before it on
# new ones, so the number stays unused, and a file that takes it is refused.
KNOWN_HOLES = frozenset({12})

# Migration 007 moved the ledger of older releases out of public.harvester_migrations.
LEDGER_MOVED = "007_ledger"

NOT_STARTED = "not starting"

NAME_RE = re.compile(r"^(\d{3})_[a-z0-9_]+$")

# What the ledger records: version -> sha256 of the file as applied (None: applied before the
# ledger kept checksums, and not yet adopted).
Ledger = Mapping[str, str | None]


class SQL(NamedQueries):
    lock_migrations: str
    unlock_migrations: str
    find_ledgers: str
    create_schema: str
    create_migrations_table: str
    add_migration_checksums: str
    select_applied_migrations: str
    select_applied_versions: str
    adopt_migration_checksum: str
    insert_migration: str


@dataclass(frozen=True, slots=True)
class Migration:
    version: str  # the file name without .sql: what the ledger records
    number: int
    path: Path
    checksum: str  # sha256 hex of the file's bytes
    sql: str = field(repr=False)  # the text those bytes hold: what runs is what was checksummed


def migrations_dir() -> Path:
    return sql_root() / "migrations"


def available(directory: Path | None = None) -> list[Migration]:
    """The migration files of ``directory`` (default: the package's ``sql/migrations``), by name."""
    found = []
    for path in sorted((directory or migrations_dir()).glob("[0-9]*.sql")):
        data = path.read_bytes()
        number = re.match(r"\d+", path.stem)
        assert number is not None  # the glob asks for a leading digit
        found.append(
            Migration(
                version=path.stem,
                number=int(number.group()),
                path=path,
                checksum=hashlib.sha256(data).hexdigest(),
                sql=data.decode("utf-8"),
            )
        )
    return found


def version_number(version: str) -> int | None:
    match = re.match(r"\d+", version)
    return int(match.group()) if match else None


def problems(files: Sequence[Migration], ledger: Ledger) -> list[str]:
    """Why ``files`` and ``ledger`` are not one history, a sentence each, ordered by number; [] when
    they are. A checksum of None (an applied row recorded before the ledger kept checksums) matches
    any text: an edit made before checksums existed cannot be detected."""
    found = [*_naming(files), *_applied(files, ledger), *_gaps(files, ledger), *_late(files, ledger)]
    return [text for _, text in sorted(found, key=lambda pair: pair[0])]


Problem = tuple[int, str]  # the number it is about (to sort by), and what is wrong


def _naming(files: Sequence[Migration]) -> list[Problem]:
    """Badly named files, two files with one number, a file in a recorded hole."""
    found: list[Problem] = []
    for m in files:
        if not NAME_RE.match(m.version):
            found.append((m.number, f"{m.path.name} is not named NNN_name.sql (three digits, lower case)"))
    for number, group in groupby(sorted(files, key=lambda m: m.number), key=lambda m: m.number):
        same = [m.path.name for m in group]
        if len(same) > 1:
            found.append((number, f"{' and '.join(same)} have the same number {number:03d}"))
        if number in KNOWN_HOLES:
            found.append(
                (
                    number,
                    f"{same[0]} takes {number:03d}, a recorded hole: databases have applied the "
                    f"migrations after {number:03d} without one, so it would run after them there and "
                    f"before them on a new database; give it the next number after the newest migration",
                )
            )
    return found


def _applied(files: Sequence[Migration], ledger: Ledger) -> list[Problem]:
    """Applied files that changed or are gone (versions past the newest file: a newer release's)."""
    found: list[Problem] = []
    by_version = {m.version: m for m in files}
    newest_file = max((m.number for m in files), default=0)
    for version, checksum in sorted(ledger.items()):
        number = version_number(version)
        m = by_version.get(version)
        if m is None and (number is None or number <= newest_file):
            found.append(
                (
                    number or 0,
                    f"{version} is applied but its file {version}.sql is gone: a migration on main is "
                    f"never removed or renamed",
                )
            )
        elif m is not None and checksum is not None and checksum != m.checksum:
            found.append(
                (
                    m.number,
                    f"{m.path.name} changed after it was applied (sha256 {checksum[:12]} then, "
                    f"{m.checksum[:12]} now): a migration on main is never edited; a change is a new "
                    f"migration (restore the file as it was applied)",
                )
            )
    return found


def _gaps(files: Sequence[Migration], ledger: Ledger) -> list[Problem]:
    """Numbers up to the newest file with no file, one sentence per run of them; a number whose
    applied file is gone is left to ``_applied``."""
    found: list[Problem] = []
    present = {m.number for m in files}
    explained = KNOWN_HOLES | {n for n in map(version_number, ledger) if n is not None}
    newest_file = max(present, default=0)
    missing = [n for n in range(1, newest_file + 1) if n not in present and n not in explained]
    holes = ", ".join(f"{n:03d}" for n in sorted(KNOWN_HOLES))
    for _, run in groupby(enumerate(missing), key=lambda pair: pair[1] - pair[0]):
        gap = [n for _, n in run]
        before = max((m for m in files if m.number < gap[0]), key=lambda m: m.number, default=None)
        after = min((m for m in files if m.number > gap[-1]), key=lambda m: m.number)
        numbers = f"{gap[0]:03d}" if len(gap) == 1 else f"{gap[0]:03d} to {gap[-1]:03d}"
        where = f"between {before.path.name} and {after.path.name}" if before else f"before {after.path.name}"
        found.append(
            (
                gap[0],
                f"no migration numbered {numbers} ({where}): migrations are numbered without gaps "
                f"(the only recorded hole is {holes})",
            )
        )
    return found


def _late(files: Sequence[Migration], ledger: Ledger) -> list[Problem]:
    """Files not applied below the newest applied version: they would run out of order."""
    numbered = [(n, v) for v in ledger if (n := version_number(v)) is not None]
    if not numbered:
        return []
    newest_number, newest = max(numbered)
    return [
        (
            m.number,
            f"{m.path.name} is not applied but the later {newest} is: it would run out of order "
            f"(after {newest} here, before it on a new database); give it the next number after the "
            f"newest migration",
        )
        for m in files
        if m.version not in ledger and m.number < newest_number and m.number not in KNOWN_HOLES
    ]


def check(files: Sequence[Migration], ledger: Ledger, outcome: str = "nothing was applied") -> None:
    """Raise ``MigrationHistoryError`` naming every problem ``problems`` finds, and ``outcome``."""
    found = problems(files, ledger)
    if found:
        where = files[0].path.parent if files else migrations_dir()
        raise MigrationHistoryError(
            f"the migrations in {where} and the ledger {LEDGER} are not one history ({outcome}): "
            f"{'; '.join(found)}"
        )


async def recorded(conn: asyncpg.Connection) -> dict[str, str | None] | None:
    """The ledger (version -> checksum); None without a harvester schema.

    A database that still keeps the ledger of releases before migration 007 (in
    ``public.harvester_migrations``) is refused: this release no longer reads it.
    """
    found = await conn.fetchrow(SQL.find_ledgers)
    assert found is not None
    ledger: dict[str, str | None] | None = None
    if found["has_ledger"]:
        query = SQL.select_applied_migrations if found["has_checksums"] else SQL.select_applied_versions
        ledger = {row["version"]: row["checksum"] for row in await conn.fetch(query)}
    if found["has_public_ledger"] and (ledger is None or LEDGER_MOVED not in ledger):
        raise MigrationHistoryError(
            "this database keeps its migration ledger in public.harvester_migrations, as releases "
            f"before migration {LEDGER_MOVED} did, and this release no longer reads it: run "
            f"`harvester migrate` of an older release first (one with migration {LEDGER_MOVED}, which "
            "moves the ledger into schema harvester), then this one"
        )
    if ledger is None:
        return {} if found["has_schema"] else None
    return ledger


async def pending(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """The versions this code has that the database has not applied yet, in order."""
    done = await recorded(conn) or {}
    return [m.version for m in available(directory) if m.version not in done]


async def require_current(conn: asyncpg.Connection, directory: Path | None = None) -> None:
    """Raise ``MigrationHistoryError`` if the history cannot be trusted, or ``SchemaError`` (one
    line, naming ``harvester migrate``) unless nothing is pending. Reads only; a ledger without
    checksums yet (its first ``migrate`` of this release is to come) is checked for the rest."""
    files = available(directory)
    try:
        done = await recorded(conn)
    except asyncpg.InsufficientPrivilegeError as exc:
        raise SchemaError(
            f"cannot read the migration ledger {LEDGER}: {exc} (grant the role SELECT on it, "
            "e.g. by rerunning sql/roles.sql)"
        ) from exc
    if done is None:
        check(files, {}, NOT_STARTED)
        raise SchemaError("the database has no harvester schema: run `harvester migrate` first")
    check(files, done, NOT_STARTED)
    missing = [m.version for m in files if m.version not in done]
    if missing:
        raise SchemaError(
            f"the database schema is behind: {len(missing)} pending migration(s) "
            f"({', '.join(missing)}): run `harvester migrate` first"
        )


async def apply(conn: asyncpg.Connection, directory: Path | None = None) -> list[str]:
    """Check the history, then apply pending migrations on one connection; return the versions
    applied now.

    A ledger kept before checksums were recorded adopts those of the current files on its first
    run: an edit made to an applied file before then cannot be detected; one made after is refused.
    """
    applied_now: list[str] = []
    await conn.execute(SQL.lock_migrations)
    try:
        files = available(directory)
        check(files, await recorded(conn) or {})
        await _bootstrap(conn)
        done = await recorded(conn) or {}
        adopt = [(m.version, m.checksum) for m in files if m.version in done and done[m.version] is None]
        if adopt:
            async with conn.transaction():
                await conn.executemany(SQL.adopt_migration_checksum, adopt)
        for migration in files:
            if migration.version in done:
                continue
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(SQL.insert_migration, migration.version, migration.checksum)
            applied_now.append(migration.version)
    finally:
        await conn.execute(SQL.unlock_migrations)
    return applied_now


async def _bootstrap(conn: asyncpg.Connection) -> None:
    """Create the schema, the ledger and its checksum column where missing, and only then:
    PostgreSQL checks the CREATE privilege of ``CREATE … IF NOT EXISTS`` even when the object
    exists (and ``ALTER TABLE`` wants the owner), and a role that owns schema harvester need not have
    CREATE on the database."""
    found = await conn.fetchrow(SQL.find_ledgers)
    assert found is not None
    if not found["has_schema"]:
        await conn.execute(SQL.create_schema)
    if not found["has_ledger"]:
        await conn.execute(SQL.create_migrations_table)
    elif not found["has_checksums"]:
        await conn.execute(SQL.add_migration_checksums)
