"""``show``, ``export`` and ``status --watch`` as subprocesses on a real database."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sys
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import asyncpg
import pytest

from harvester.api.classify import read_body
from harvester.db import store
from tests.support.commands import assert_one_line_error, harvester
from tests.support.paths import SEED

CHAMP_ID = UUID("770e8400-e29b-41d4-a716-446655440002")
AI_ID = UUID("660e8400-e29b-41d4-a716-446655440001")
MAPS_ID = UUID("880e8400-e29b-41d4-a716-446655440003")
AWKWARD = 'Café "Zürich", Ltd\nsecond line; =1+1'


def seed_body(name: str, **data: Any) -> bytes:
    doc = json.loads((SEED / name).read_bytes())
    doc["data"].update(data)
    return json.dumps(doc).encode()


async def stored(conn: asyncpg.Connection) -> None:
    """Three site jobs and one maps job, two of them tagged campaign=fall."""
    await conn.execute(
        "INSERT INTO harvester.jobs (job_id, tags) VALUES ($1, $3), ($2, $3), ($4, $5)",
        CHAMP_ID,
        MAPS_ID,
        json.dumps({"campaign": "fall", "owner": "ana"}),
        AI_ID,
        json.dumps({"campaign": "spring"}),
    )
    for raw in (
        seed_body("site-champ-200.json"),
        (SEED / "site-ai-200.json").read_bytes(),
        (SEED / "site-minimal-200.json").read_bytes(),
        (SEED / "maps-200.json").read_bytes(),
    ):
        outcome = await store.store_result(conn, raw, read_body(raw), http_status=None, polls_spent=0)
        assert outcome.kind == "harvested"
    await conn.execute("UPDATE harvester.sites SET company_name = $2 WHERE job_id = $1", AI_ID, AWKWARD)


async def test_show_prints_state_polls_timings_and_stored_counts(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    await stored(conn)
    await conn.execute(
        "UPDATE harvester.jobs SET polls = 3, last_http_status = 200 WHERE job_id = $1", CHAMP_ID
    )
    done = harvester("show", str(CHAMP_ID), "--json", dsn=db_dsn)
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert (shown["state"], shown["polls"], shown["last_http_status"]) == ("harvested", 3, 200)
    assert shown["tags"] == {"campaign": "fall", "owner": "ana"}
    counts = await conn.fetchrow(
        "SELECT (SELECT count(*) FROM harvester.site_emails WHERE job_id = $1) AS emails,"
        " (SELECT count(*) FROM harvester.team_members WHERE job_id = $1) AS team",
        CHAMP_ID,
    )
    assert counts is not None
    assert shown["stored"]["emails"] == counts["emails"] and shown["stored"]["team_members"] == counts["team"]
    assert shown["timings"]["finished_at"] is not None and shown["last_change"] >= 1
    text = harvester("show", str(MAPS_ID), dsn=db_dsn)
    assert text.returncode == 0, text.stderr
    businesses = await conn.fetchval(
        "SELECT count(*) FROM harvester.maps_businesses WHERE job_id = $1", MAPS_ID
    )
    assert f"businesses {businesses}" in text.stdout and "state:          harvested" in text.stdout


def test_show_refuses_a_bad_uuid_with_exit_2() -> None:
    assert_one_line_error(harvester("show", "not-a-uuid"), 2, "not a UUID")


async def test_show_of_an_unknown_job_exits_1(db_dsn: str) -> None:
    job = uuid4()
    assert_one_line_error(harvester("show", str(job), dsn=db_dsn), 1, str(job), "no job")


async def test_export_csv_opens_cleanly_with_header_quoting_and_utf8(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    await stored(conn)
    done = harvester("export", "leads", dsn=db_dsn)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(io.StringIO(done.stdout, newline="")))
    columns = [
        r["column_name"]
        for r in await conn.fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = 'harvester'"
            " AND table_name = 'leads' ORDER BY ordinal_position"
        )
    ]
    assert list(rows[0]) == columns and columns[-1] == "tags"
    assert len(rows) == await conn.fetchval("SELECT count(*) FROM harvester.leads")
    by_id = {r["job_id"]: r for r in rows}
    assert by_id[str(AI_ID)]["company"] == AWKWARD
    assert json.loads(by_id[str(CHAMP_ID)]["tags"]) == {"campaign": "fall", "owner": "ana"}
    summary = json.loads(done.stderr)
    assert summary["rows"] == len(rows) and summary["last_change"] == 4


async def test_export_jsonl_keeps_arrays_objects_and_backslashes(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    await stored(conn)
    await conn.execute(
        "UPDATE harvester.sites SET company_name = $2 WHERE job_id = $1", AI_ID, 'back\\slash "q"\ttab'
    )
    done = harvester("export", "site_contacts", "--format", "jsonl", dsn=db_dsn)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in done.stdout.splitlines()]
    by_id = {r["job_id"]: r for r in rows}
    assert by_id[str(AI_ID)]["company_name"] == 'back\\slash "q"\ttab'
    assert isinstance(by_id[str(CHAMP_ID)]["emails"], list)
    assert by_id[str(CHAMP_ID)]["tags"] == {"campaign": "fall", "owner": "ana"}


async def test_export_filters_by_tag_and_since(conn: asyncpg.Connection, db_dsn: str, tmp_path: Path) -> None:
    await stored(conn)

    def ids(*args: str) -> list[str]:
        out = tmp_path / "out.jsonl"
        done = harvester("export", *args, "--format", "jsonl", "--out", str(out), dsn=db_dsn)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["rows"] == len(out.read_text().splitlines())
        return sorted(
            json.loads(line).get("job_id") or json.loads(line)["place_id"]
            for line in out.read_text().splitlines()
        )

    assert ids("leads", "--tag", "campaign=fall") == [str(CHAMP_ID)]
    assert ids("leads", "--tag", "campaign=fall", "--tag", "owner=bob") == []
    businesses = await conn.fetch("SELECT place_id FROM harvester.maps_businesses WHERE job_id = $1", MAPS_ID)
    assert ids("businesses", "--tag", "campaign=fall") == sorted(r["place_id"] for r in businesses)
    last = int(await conn.fetchval("SELECT max(change_id) FROM harvester.changes"))
    assert ids("leads", "--since", str(last)) == []
    between = await conn.fetchval("SELECT clock_timestamp()")
    raw = seed_body("site-champ-200.json", emails=["changed@example.com"])
    await store.store_result(conn, raw, read_body(raw), http_status=None, polls_spent=0)
    assert ids("leads", "--since", str(last)) == [str(CHAMP_ID)]
    assert ids("leads", "--since", between.isoformat()) == [str(CHAMP_ID)]
    assert [c for c in ids("changes", "--since", str(last))] == [str(CHAMP_ID)]


async def test_export_to_a_file_replaces_it_only_when_complete(db_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "leads.csv"
    out.write_text("the previous export\n")
    failed = harvester("export", "leads", "--out", str(out), dsn="postgresql://postgres@127.0.0.1:1/x")
    assert failed.returncode == 1
    assert out.read_text() == "the previous export\n" and os.listdir(tmp_path) == [out.name]
    done = harvester("export", "leads", "--out", str(out), "--bom", dsn=db_dsn)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes().startswith("\ufeffjob_id,".encode())


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["export", "nosuch"], ["unknown view", "leads"]),
        (["export", "leads", "--since", "last tuesday"], ["--since"]),
        (["export", "leads", "--tag", "novalue"], ["--tag"]),
        (["export", "leads", "--format", "xlsx"], ["--format"]),
        (["status", "--watch", "--interval", "0"], ["--interval"]),
        (["status", "--count", "2"], ["--watch"]),
    ],
)
def test_bad_export_and_watch_arguments_are_one_line_exit_2(args: list[str], words: list[str]) -> None:
    assert_one_line_error(harvester(*args), 2, *words)


async def test_watch_without_a_terminal_prints_one_frame_per_interval(
    conn: asyncpg.Connection, db_dsn: str
) -> None:
    await stored(conn)
    await conn.execute(
        'INSERT INTO harvester.jobs (job_id, tags, enqueued_at) VALUES ($1, \'{"campaign": "fall"}\','
        " now() - interval '8 days 5 minutes')",
        uuid4(),
    )
    done = harvester(
        "status", "--watch", "--interval", "0.2", "--count", "3", "--by-tag", "campaign", dsn=db_dsn
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("harvester status") == 3 and "\x1b[" not in done.stdout
    frame = done.stdout.split("\n\nharvester status")[0]
    assert "jobs:   pending 1  harvested 4" in frame
    assert "(8 d 0 h old)" in frame and "harvested 24/min (last min)" in frame
    assert "backlog: 1 pending, ETA " in frame
    fall = next(line for line in frame.splitlines() if line.startswith("fall"))
    assert fall.split() == ["fall", "3", "2", "1", "2", "0", "66.7"]
    plain = harvester("status", "--by-tag", "campaign", dsn=db_dsn)
    assert "oldest pending: 8 d 0 h" in plain.stdout and "spring" in plain.stdout


async def test_tag_containment_uses_the_index(conn: asyncpg.Connection) -> None:
    await conn.execute(
        "INSERT INTO harvester.jobs (job_id, tags) SELECT gen_random_uuid(),"
        " jsonb_build_object('campaign', 'c' || (i % 500), 'owner', 'o' || (i % 7))"
        " FROM generate_series(1, 20000) AS i"
    )
    await conn.execute("ANALYZE harvester.jobs")
    plan = "\n".join(
        r[0]
        for r in await conn.fetch(
            'EXPLAIN SELECT job_id FROM harvester.jobs WHERE tags @> \'{"campaign": "c7"}\''
        )
    )
    assert "jobs_tags_idx" in plan


async def piped(db_dsn: str, command: str, reader: str) -> tuple[int | None, str, str]:
    """``harvester COMMAND | READER`` in bash: harvester's exit code, what the reader printed,
    and harvester's stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update({"HARVESTER_DSN": db_dsn, "HARVESTER_SERVER__ENABLED": "false"})
    proc = await asyncio.create_subprocess_shell(
        f"{sys.executable} -m harvester {command} | {reader}; exit ${{PIPESTATUS[0]}}",
        executable="/bin/bash",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    return proc.returncode, out.decode(), err.decode()


async def test_export_into_a_pipe_closed_early_is_not_an_error(conn: asyncpg.Connection, db_dsn: str) -> None:
    await conn.execute(
        "INSERT INTO harvester.jobs (job_id, last_error) SELECT gen_random_uuid(), repeat('x', 200)"
        " FROM generate_series(1, 5000)"
    )
    code, out, err = await piped(db_dsn, "export jobs", "head -1")
    assert code == 0, err
    assert out.startswith("job_id,state,") and err == ""


@pytest.mark.parametrize("command", ["status", "status --json", f"show {CHAMP_ID}"])
async def test_status_and_show_into_a_pipe_nobody_reads_are_not_an_error(
    conn: asyncpg.Connection, db_dsn: str, command: str
) -> None:
    """`harvester status | head -1` with the reader gone before anything is written (``true``
    reads nothing): not a database error, nothing on stderr, exit 0 as for ``export``."""
    await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", CHAMP_ID)
    code, _, err = await piped(db_dsn, command, "true")
    assert code == 0 and err == "", err


async def test_watch_on_a_terminal_redraws_in_place_and_ctrl_c_exits_0(db_dsn: str) -> None:
    import pty
    import signal

    main, replica = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update(
        {"HARVESTER_DSN": db_dsn, "HARVESTER_SERVER__ENABLED": "false", "COLUMNS": "90", "LINES": "30"}
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "harvester", "status", "--watch", "--interval", "0.2",
        env=env, stdin=replica, stdout=replica, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    os.close(replica)
    seen = b""
    loop = asyncio.get_running_loop()
    try:
        while seen.count(b"harvester status") < 3:
            seen += await asyncio.wait_for(loop.run_in_executor(None, os.read, main, 65536), 30)
        proc.send_signal(signal.SIGINT)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
        os.close(main)
    assert code == 0
    assert b"\x1b[?25l\x1b[2J" in seen and seen.count(b"\x1b[H") >= 3  # hidden cursor, redrawn in place
    assert b"jobs:   pending 0" in seen
