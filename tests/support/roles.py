"""The database roles of sql/roles.sql, set up for a test the way the operations guide tells an
administrator to: the file applied, then login roles granted the group roles.

Shared by tests/integration/test_roles*.py (SQL through asyncpg) and tests/field (the CLI as each
role). Roles are cluster-wide and other tests run beside these, so every login gets a unique name.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import asyncpg

from harvester.pgtemp import find_bindir

ROOT = Path(__file__).resolve().parents[2]
ROLES_PATH = ROOT / "sql" / "roles.sql"
ROLES_SQL = ROLES_PATH.read_text()


@dataclass(frozen=True, slots=True)
class Logins:
    dsn: str
    password: str
    daemon: str
    producer: str
    reader: str

    async def connect(self, user: str) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn, user=user, password=self.password)

    def dsn_for(self, user: str) -> str:
        """The database's DSN with this login and its password, for a ``harvester`` process."""
        return login_dsn(self.dsn, user, self.password)


def login_dsn(dsn: str, user: str, password: str) -> str:
    parts = urlsplit(dsn)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user)}:{quote(password)}@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


async def apply_roles(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(ROLES_SQL)
    finally:
        await conn.close()


def psql() -> str:
    """The psql client: on PATH, else beside the server binaries the suite already needs."""
    return shutil.which("psql") or str(find_bindir() / "psql")


def apply_roles_with_psql(dsn: str) -> None:
    """``psql -v ON_ERROR_STOP=1 -d … -f sql/roles.sql``, exactly the documented command."""
    proc = subprocess.run(  # noqa: S603 - fixed argv
        [psql(), "-v", "ON_ERROR_STOP=1", "-q", "-d", dsn, "-f", str(ROLES_PATH)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


async def make_logins(dsn: str) -> Logins:
    """Three logins, one per group role, as in the documented example (the daemon's login
    switches to harvester_daemon at login, so that what it creates belongs to the group)."""
    suffix = uuid.uuid4().hex[:10]
    logins = Logins(
        dsn, secrets.token_hex(8), f"t_daemon_{suffix}", f"t_producer_{suffix}", f"t_reader_{suffix}"
    )
    conn = await asyncpg.connect(dsn)
    try:
        for login, group in (
            (logins.daemon, "harvester_daemon"),
            (logins.producer, "harvester_producer"),
            (logins.reader, "harvester_reader"),
        ):
            await conn.execute(f"CREATE ROLE {login} LOGIN PASSWORD '{logins.password}'")
            await conn.execute(f"GRANT {group} TO {login}")
        await conn.execute(f"ALTER ROLE {logins.daemon} SET role = 'harvester_daemon'")
    finally:
        await conn.close()
    return logins


async def drop_logins(logins: Logins) -> None:
    conn = await asyncpg.connect(logins.dsn)
    try:
        for login in (logins.daemon, logins.producer, logins.reader):
            await conn.execute(f"DROP ROLE IF EXISTS {login}")
    finally:
        await conn.close()


async def refused(conn: asyncpg.Connection, sql: str, *args: object) -> bool:
    try:
        async with conn.transaction():
            await conn.execute(sql, *args)
    except asyncpg.InsufficientPrivilegeError:
        return True
    return False
