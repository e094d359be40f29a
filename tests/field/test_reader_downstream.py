"""The downstream commands as the reader login of sql/roles.sql, directly and through PgBouncer
(transaction pooling): ``show``, ``export`` (COPY), ``status --watch`` and ``--by-tag``, and the
change feed itself (SELECT on harvester.changes, LISTEN harvester_changes)."""

from __future__ import annotations

import asyncio
import csv
import io
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import pytest

from harvester.api.classify import read_body
from harvester.db import feed, store
from tests.field.test_roles_cli import harvester
from tests.support.bouncer import PgBouncer, require_pgbouncer
from tests.support.roles import Logins, apply_roles_with_psql, drop_logins, make_logins

SEED = Path(__file__).resolve().parents[1] / "fixtures" / "seed"
CHAMP_ID = "770e8400-e29b-41d4-a716-446655440002"


@pytest.fixture
async def roles(db_dsn: str) -> AsyncIterator[Logins]:
    await asyncio.to_thread(apply_roles_with_psql, db_dsn)
    made = await make_logins(db_dsn)
    try:
        yield made
    finally:
        await drop_logins(made)


@pytest.fixture
def reader_bouncer(pg_server: str, roles: Logins) -> Iterator[PgBouncer]:
    with PgBouncer(require_pgbouncer(), pg_server, "transaction", {roles.reader: roles.password}) as b:
        yield b


async def seed(dsn: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            'INSERT INTO harvester.jobs (job_id, tags) VALUES ($1, \'{"campaign": "fall"}\')', CHAMP_ID
        )
        for name in ("site-champ-200.json", "site-ai-200.json", "maps-200.json"):
            raw = (SEED / name).read_bytes()
            await store.store_result(conn, raw, read_body(raw), http_status=None, polls_spent=0)
    finally:
        await conn.close()


@pytest.mark.parametrize("via", ["direct", "pgbouncer"])
async def test_the_reader_runs_show_export_and_watch(
    roles: Logins, reader_bouncer: PgBouncer, via: str, tmp_path: Path
) -> None:
    await seed(roles.dsn)
    dsn = roles.dsn_for(roles.reader)
    if via == "pgbouncer":
        dsn = reader_bouncer.dsn_for(dsn)

    shown = await harvester("show", CHAMP_ID, "--json", dsn=dsn)
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["stored"]["emails"] > 0
    text = await harvester("show", CHAMP_ID, dsn=dsn)
    assert text.code == 0 and "state:          harvested" in text.stdout, text.stderr

    exported = await harvester("export", "leads", dsn=dsn)
    assert exported.code == 0, exported.stderr
    assert len(list(csv.DictReader(io.StringIO(exported.stdout, newline="")))) == 2
    out = tmp_path / "b.jsonl"
    tagged = await harvester(
        "export", "site_contacts", "--format", "jsonl", "--tag", "campaign=fall", "--out", str(out), dsn=dsn
    )
    assert tagged.code == 0, tagged.stderr
    assert [json.loads(line)["job_id"] for line in out.read_text().splitlines()] == [CHAMP_ID]
    for view in ("businesses", "changes", "jobs", "team_members", "latest_sites"):
        done = await harvester("export", view, "--since", "1", dsn=dsn)
        assert done.code == 0, (view, done.stderr)

    watched = await harvester(
        "status", "--watch", "--count", "2", "--interval", "0.2", "--by-tag", "campaign", dsn=dsn
    )
    assert watched.code == 0, watched.stderr
    assert watched.stdout.count("harvester status") == 2 and "not shown" not in watched.stdout
    assert "fall" in watched.stdout
    if via == "pgbouncer":
        database = roles.dsn.rsplit("/", 1)[1]
        assert f"db={database} user={roles.reader}" in reader_bouncer.log_text()


async def test_the_reader_reads_the_feed_and_hears_the_nudge(roles: Logins) -> None:
    reader = await roles.connect(roles.reader)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await reader.add_listener(feed.CHANNEL, lambda *args: heard.put_nowait(args[3]))
    try:
        await seed(roles.dsn)
        nudge = feed.parse_nudge(await asyncio.wait_for(heard.get(), 5))
        changes = await feed.changes_after(reader, 0)
        assert [c.change_id for c in changes] == [1, 2, 3] and nudge.change == 1
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("UPDATE harvester.change_counter SET last_change = 0")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await reader.execute("DELETE FROM harvester.changes")
    finally:
        await reader.close()
