"""What ``status`` (text, ``--json``, ``--watch``) and ``show`` print, read from a real database
in-process: the same report in both formats, a part the role may not read named instead of a
crash, one job in detail, and the frames of the watch loop on a pipe."""

from __future__ import annotations

import asyncio
import json
from uuid import UUID, uuid4

import asyncpg
import pytest

from harvester import config
from harvester.commands import output
from harvester.config import Config
from harvester.errors import HarvesterError
from tests.support.roles import Logins

ACME = {"HARVESTER_ACCOUNTS__ACME__TOKEN": "acme:key:s3cret"}


def settings(dsn: str, environ: dict[str, str] | None = None) -> Config:
    return config.load(environ=environ or {}, overrides={"database.dsn": dsn})


async def seed(dsn: str) -> UUID:
    """Jobs of two accounts, one of them not configured, tagged by campaign; a limiter row for
    acme. Returns a harvested job of acme."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, account, state, tags) SELECT gen_random_uuid(), a, s,"
            " jsonb_build_object('campaign', c) FROM (VALUES ('acme', 'pending', 'fall'),"
            " ('acme', 'failed', 'fall'), ('ghost', 'pending', 'spring'), ('ghost', 'pending', 'fall'))"
            " AS v(a, s, c)"
        )
        done = uuid4()
        await conn.execute(
            "INSERT INTO harvester.jobs (job_id, account, state, polls, last_http_status, finished_at,"
            " tags) VALUES ($1, 'acme', 'harvested', 3, 200, now(), '{\"campaign\": \"fall\"}')",
            done,
        )
        await conn.execute("SELECT * FROM harvester.rate_reserve('acme', 100, 60, 0.6, 20, 0.02)")
    finally:
        await conn.close()
    return done


async def test_status_text_shows_states_accounts_the_limiter_and_what_waits(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(db_dsn)
    await output.print_status(settings(db_dsn, ACME), by_tag_key="campaign", as_json=False)
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[:8] == [
        "jobs:",
        "  pending    3",
        "  harvested  1",
        "  failed     1",
        "  cancelled  0",
        "  not_found  0",
        "  rejected   0",
        "  expired    0",
    ]
    assert "account acme: pending=1 harvested=1 failed=1 in_window=1/100" in lines
    assert "account ghost: (not configured here: its jobs wait) pending=2" in lines
    assert "waiting:        2 pending job(s) for unknown account 'ghost'" in lines
    assert any(line.startswith("limiter:        account=acme") for line in lines)
    assert "not shown" not in out and "s3cret" not in out
    table = lines[lines.index(next(line for line in lines if line.startswith("campaign ="))) :]
    assert [row.split()[:3] for row in table[1:]] == [["fall", "4", "2"], ["spring", "1", "0"]]


async def test_status_json_is_the_same_report(db_dsn: str, capsys: pytest.CaptureFixture[str]) -> None:
    await seed(db_dsn)
    await output.print_status(settings(db_dsn, ACME), by_tag_key="campaign", as_json=True)
    report = json.loads(capsys.readouterr().out)
    assert {k: v for k, v in report["jobs"].items() if v} == {"pending": 3, "harvested": 1, "failed": 1}
    assert report["polls_spent"] == 3
    assert report["waiting_for_unknown_account"] == {"ghost": 2}
    assert report["accounts"]["acme"]["configured"] and not report["accounts"]["ghost"]["configured"]
    assert report["accounts"]["acme"]["limiter"]["granted_total"] == 1
    assert [e["account"] for e in report["limiter"]] == ["acme"]
    assert report["by_tag"]["key"] == "campaign" and len(report["by_tag"]["table"]) == 3
    assert "not_shown" not in report


async def test_status_for_a_role_that_may_not_read_the_limiter_names_what_it_leaves_out(
    logins: Logins, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(logins.dsn)
    conn = await asyncpg.connect(logins.dsn)
    try:
        await conn.execute("REVOKE SELECT ON harvester.limiter_status FROM harvester_reader")
    finally:
        await conn.close()
    cfg = settings(logins.dsn_for(logins.reader), ACME)
    await output.print_status(cfg, by_tag_key=None, as_json=True)
    report = json.loads(capsys.readouterr().out)
    assert report["jobs"]["pending"] == 3 and report["limiter"] is None
    assert report["accounts"]["acme"]["limiter"] is None
    assert set(report["not_shown"]) == {"limiter"}
    assert "permission denied" in report["not_shown"]["limiter"]
    await output.print_status(cfg, by_tag_key=None, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert [line for line in lines if line.startswith("limiter:")] == [
        f"limiter:        not shown ({report['not_shown']['limiter']})"
    ]


async def test_show_prints_one_job_as_text_and_as_json(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    job_id = await seed(db_dsn)
    cfg = settings(db_dsn)
    await output.print_job(cfg, job_id, as_json=True)
    detail = json.loads(capsys.readouterr().out)
    assert detail["job_id"] == str(job_id) and detail["state"] == "harvested"
    assert detail["polls"] == 3 and detail["last_http_status"] == 200
    assert detail["tags"] == {"campaign": "fall"}
    assert detail["stored"]["result"] is False and detail["stored"]["emails"] == 0
    await output.print_job(cfg, job_id, as_json=False)
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"job:            {job_id}"
    assert "state:          harvested" in lines and "polls spent:    3" in lines
    assert any(line.startswith("finished:       ") for line in lines)


async def test_show_of_a_job_not_in_the_queue_says_so(db_dsn: str) -> None:
    missing = uuid4()
    with pytest.raises(HarvesterError, match=f"no job {missing} in harvester.jobs"):
        await output.print_job(settings(db_dsn), missing, as_json=False)


async def test_watch_on_a_pipe_draws_count_frames_one_after_another_without_escape_codes(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    await seed(db_dsn)
    stop = asyncio.Event()
    await output.watch_status(settings(db_dsn), stop, interval=0.2, count=2, by_tag_key="campaign")
    out = capsys.readouterr().out
    assert "\x1b" not in out
    frames = out.split("\n\nharvester status  ")
    assert len(frames) == 2 and frames[0].startswith("harvester status  ")
    for frame in frames:
        assert "jobs:   pending 3  harvested 1  failed 1" in frame
        assert "backlog: 3 pending, ETA" in frame
        assert "campaign =" in frame


async def test_watch_stops_when_asked_before_its_count(
    db_dsn: str, capsys: pytest.CaptureFixture[str]
) -> None:
    stop = asyncio.Event()
    asyncio.get_running_loop().call_later(0.5, stop.set)
    await asyncio.wait_for(
        output.watch_status(settings(db_dsn), stop, interval=60.0, count=None, by_tag_key=None), 10
    )
    assert capsys.readouterr().out.count("harvester status  ") == 1
