"""harvester import: files of one body or JSON Lines, directories, bad lines, unreadable files."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import asyncpg

from harvester.commands.imports import import_paths
from tests.support.paths import BODIES, SEED
from tests.support.rows import one

SEEDS_200 = ["site-minimal-200.json", "site-ai-200.json", "site-champ-200.json", "maps-200.json"]


def compact(name: str) -> bytes:
    return json.dumps(json.loads((SEED / name).read_bytes())).encode()


def write_jsonl(path: Path, lines: list[bytes]) -> Path:
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


async def states(conn: asyncpg.Connection) -> dict[str, str]:
    rows = await conn.fetch("SELECT job_id::text, state FROM harvester.jobs")
    return {r["job_id"]: r["state"] for r in rows}


async def test_one_body_per_file_is_stored(conn: asyncpg.Connection) -> None:
    report = await import_paths(conn, [SEED / "site-minimal-200.json", SEED / "maps-200.json"])
    assert (report.stored, report.rejected, report.problems) == (2, 0, [])
    assert set((await states(conn)).values()) == {"harvested"}
    job = await one(conn, "SELECT polls, last_http_status FROM harvester.jobs LIMIT 1")
    assert tuple(job) == (0, None)


async def test_json_lines_bad_line_is_reported_and_the_rest_stored(
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    path = write_jsonl(
        tmp_path / "batch.jsonl",
        [
            compact("site-minimal-200.json"),
            b"",
            b"{broken",
            compact("maps-200.json"),
            b'{"no_job_id": true}',
        ],
    )
    report = await import_paths(conn, [path])
    assert (report.stored, report.rejected) == (2, 2)
    assert [(f, line) for f, line, _ in report.problems] == [(str(path), 3), (str(path), 5)]
    rejects = await conn.fetch("SELECT body FROM harvester.rejects ORDER BY reject_id")
    assert [r["body"] for r in rejects] == [b"{broken", b'{"no_job_id": true}']


async def test_crlf_json_lines_are_read(conn: asyncpg.Connection, tmp_path: Path) -> None:
    path = tmp_path / "crlf.jsonl"
    path.write_bytes(compact("site-ai-200.json") + b"\r\n" + compact("site-champ-200.json"))
    report = await import_paths(conn, [path])
    assert (report.stored, report.rejected) == (2, 0)


async def test_broken_pretty_printed_file_is_one_reject(
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    broken = (SEED / "site-minimal-200.json").read_bytes().replace(b'"url"', b"url", 1)
    path = tmp_path / "broken.json"
    path.write_bytes(broken)
    report = await import_paths(conn, [path])
    assert (report.stored, report.rejected, len(report.problems)) == (0, 1, 1)
    assert await conn.fetchval("SELECT body FROM harvester.rejects") == broken


async def test_directory_imports_json_and_jsonl_sorted(
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    (tmp_path / "b.json").write_bytes((SEED / "maps-200.json").read_bytes())
    write_jsonl(tmp_path / "a.jsonl", [compact("site-minimal-200.json")])
    (tmp_path / "notes.txt").write_text("not a body")
    (tmp_path / "c.json").write_bytes(b"[]")
    report = await import_paths(conn, [tmp_path])
    assert (report.stored, report.rejected) == (2, 1)
    assert report.problems[0][0] == str(tmp_path / "c.json")


async def test_unreadable_file_is_reported_not_fatal(
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    missing = tmp_path / "missing.json"
    report = await import_paths(conn, [missing, SEED / "site-minimal-200.json"])
    assert report.stored == 1
    assert report.problems == [(str(missing), 0, report.problems[0][2])]
    assert "cannot read" in report.problems[0][2]


async def test_importing_every_seed_twice_gives_identical_tables(conn: asyncpg.Connection) -> None:
    paths = [SEED / name for name in SEEDS_200]
    await import_paths(conn, paths)
    dump = "SELECT {cols} FROM harvester.{table} ORDER BY 1, 2"
    queries = {
        "jobs": ("job_id, state, job_type, upstream_status, polls, last_error", "jobs"),
        "results": ("job_id, raw::text, status, completed_at", "results"),
        "sites": ("job_id, domain, company_name, icp_fit_score, pain_points::text", "sites"),
        "emails": ("job_id, email", "site_emails"),
        "team": ("job_id, position, name, email", "team_members"),
        "businesses": ("place_id, name, latitude, last_job_id", "businesses"),
        "links": ("job_id, position, place_id", "maps_businesses"),
    }

    async def snapshot() -> dict[str, list[tuple[object, ...]]]:
        return {
            k: [tuple(r) for r in await conn.fetch(dump.format(cols=c, table=t))]
            for k, (c, t) in queries.items()
        }

    before = await snapshot()
    report = await import_paths(conn, paths)
    assert report.stored == 4
    assert await snapshot() == before


async def test_extra_fixture_bodies_import_cleanly(conn: asyncpg.Connection) -> None:
    report = await import_paths(conn, [BODIES])
    assert report.rejected == 0 and report.stored >= 3
    nested = await conn.fetchval(
        "SELECT count(*) FROM harvester.site_emails e JOIN harvester.sites s USING (job_id) "
        "WHERE s.domain = 'oldlayout.example'"
    )
    assert nested == 2
    site = await one(
        conn,
        "SELECT company_name, icp_fit_score, completed_at, pain_points::text AS pain "
        "FROM harvester.sites WHERE domain = 'oldlayout.example'",
    )
    assert (site["company_name"], site["icp_fit_score"]) == ("Old Layout Ltd", 72.0)
    assert site["completed_at"] == datetime(2025, 6, 2, 8, 15, tzinfo=UTC)
    assert "inferred_challenges" in site["pain"]
    assert await conn.fetchval("SELECT count(*) FROM harvester.maps_businesses") == 2
    verify = await conn.fetchval(
        "SELECT job_type FROM harvester.results WHERE job_id = 'cc0e8400-e29b-41d4-a716-446655440012'"
    )
    assert verify == "spiderVerify"
    assert (
        await conn.fetchval("SELECT count(*) FROM harvester.businesses WHERE place_id LIKE 'fallback:%'") == 1
    )


async def test_large_json_lines_file_is_stored_in_batches_with_exact_line_numbers(
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """Several transactions' worth of lines: bad lines anywhere keep their own line numbers."""
    template = json.loads((SEED / "site-minimal-200.json").read_bytes())
    lines: list[bytes] = []
    for n in range(450):
        body = dict(template, job_id=f"00000000-0000-4000-8000-{n:012d}")
        lines.append(json.dumps(body).encode())
    bad = {7: b"{broken", 250: b"[]", 449: b'{"job_id": "not-a-uuid"}'}
    for line, raw in bad.items():
        lines[line - 1] = raw
    lines.append(lines[0])  # the same body again: stored once, counted as stored
    path = write_jsonl(tmp_path / "big.jsonl", lines)
    report = await import_paths(conn, [path])
    assert (report.stored, report.rejected) == (448, 3)
    assert [line for _, line, _ in report.problems] == sorted(bad)
    assert await conn.fetchval("SELECT count(*) FROM harvester.sites") == 447
    assert await conn.fetchval("SELECT count(*) FROM harvester.site_emails") == 447 * 2
    assert await conn.fetchval("SELECT count(*) FROM harvester.rejects") == 3


async def test_a_body_the_database_refuses_is_rejected_alone(
    conn: asyncpg.Connection,
    tmp_path: Path,
) -> None:
    """A refused batch falls back to one transaction per body: only the offender is rejected."""
    await conn.execute(
        "ALTER TABLE harvester.sites ADD CONSTRAINT test_refuse"
        " CHECK (domain IS DISTINCT FROM 'refused.example')"
    )
    template = json.loads((SEED / "site-minimal-200.json").read_bytes())
    lines = []
    for n in range(5):
        body = dict(template, job_id=f"00000000-0000-4000-8000-{n:012d}")
        if n == 3:
            body["data"] = dict(body["data"], url="https://refused.example/")
        lines.append(json.dumps(body).encode())
    report = await import_paths(conn, [write_jsonl(tmp_path / "refused.jsonl", lines)])
    assert (report.stored, report.rejected) == (4, 1)
    assert [line for _, line, _ in report.problems] == [4]
    assert "database refused" in report.problems[0][2]
    assert await conn.fetchval("SELECT count(*) FROM harvester.sites") == 4
    state = await conn.fetchval(
        "SELECT state FROM harvester.jobs WHERE job_id = '00000000-0000-4000-8000-000000000003'"
    )
    assert state == "rejected"
