"""Storing result bodies against a real PostgreSQL: rows, states, fencing, rejects, reprocess."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import pytest

from harvester.api.classify import read_body
from harvester.db import bulk, store
from harvester.db.rows import ROW_TABLES
from harvester.errors import DatabaseError
from harvester.ports import StoreOutcome
from tests.support.paths import SEED
from tests.support.rows import one

MINIMAL = SEED / "site-minimal-200.json"
MAPS = SEED / "maps-200.json"
CHAMP = SEED / "site-champ-200.json"
AI = SEED / "site-ai-200.json"
FAILED = SEED / "failed-410.json"
MINIMAL_ID = UUID("550e8400-e29b-41d4-a716-446655440000")
MAPS_ID = UUID("880e8400-e29b-41d4-a716-446655440003")
OTHER_MAPS_ID = UUID("990e8400-e29b-41d4-a716-446655440004")

# Columns that record when something happened, not what: they may differ between two stores.
CLOCK_COLUMNS = {
    "enqueued_at",
    "next_poll_at",
    "last_polled_at",
    "finished_at",
    "updated_at",
    "fetched_at",
    "first_seen_at",
    "last_seen_at",
    "received_at",
    "reject_id",
}
TABLES = ["jobs", *ROW_TABLES, "rejects"]


def read(path: Path) -> bytes:
    return path.read_bytes()


def body(path: Path, **changes: Any) -> bytes:
    doc = json.loads(read(path))
    doc.update(changes)
    return json.dumps(doc).encode()


def with_data(path: Path, **changes: Any) -> bytes:
    doc = json.loads(read(path))
    doc["data"].update(changes)
    return json.dumps(doc).encode()


async def store_result(target: store.Target, raw: bytes, **kwargs: Any) -> StoreOutcome:
    """A 200 body as the worker hands it on: the bytes and their JSON, parsed once."""
    return await store.store_result(target, raw, read_body(raw), **kwargs)


async def store_failure(target: store.Target, raw: bytes, **kwargs: Any) -> StoreOutcome:
    """A 410 body as the worker hands it on: the bytes and their JSON, parsed once."""
    return await store.store_failure(target, raw, read_body(raw), **kwargs)


async def dump(conn: asyncpg.Connection) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {}
    for table in TABLES:
        rows = await conn.fetch(f"SELECT * FROM harvester.{table}")
        tables[table] = sorted(
            (tuple((k, repr(v)) for k, v in row.items() if k not in CLOCK_COLUMNS) for row in rows),
        )
    return tables


async def count(conn: asyncpg.Connection, table: str) -> int:
    return int(await conn.fetchval(f"SELECT count(*) FROM harvester.{table}"))


async def claim(conn: asyncpg.Connection, job_id: UUID) -> store.Fence:
    await conn.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", job_id)
    token = await conn.fetchval(
        "UPDATE harvester.jobs SET lease_token = lease_token + 1, lease_owner = 'me' "
        "WHERE job_id = $1 RETURNING lease_token",
        job_id,
    )
    return store.Fence(job_id, int(token))


@pytest.mark.parametrize("path", [MINIMAL, AI, CHAMP, MAPS], ids=lambda p: p.stem)
async def test_storing_a_seed_body_twice_leaves_identical_tables(
    conn: asyncpg.Connection,
    path: Path,
) -> None:
    # As import stores it: no API request was spent, so the jobs row's poll count stays put too.
    first = await store_result(conn, read(path), polls_spent=0)
    before = await dump(conn)
    second = await store_result(conn, read(path), polls_spent=0)
    assert (first.kind, second.kind) == ("harvested", "harvested")
    assert await dump(conn) == before
    assert before["results"]


OUTPUT_TABLES = [t for t in TABLES if t not in ("jobs", "rejects")]


async def whole_rows(conn: asyncpg.Connection) -> dict[str, list[str]]:
    """Every column of every output table, clock columns included."""
    return {
        table: sorted(
            r["row"] for r in await conn.fetch(f"SELECT to_jsonb(t)::text AS row FROM harvester.{table} t")
        )
        for table in OUTPUT_TABLES
    }


@pytest.mark.parametrize("path", [AI, MAPS], ids=lambda p: p.stem)
async def test_the_same_result_stored_again_leaves_every_column_as_it_was(
    conn: asyncpg.Connection,
    path: Path,
) -> None:
    """Re-harvest, import and reprocess of one body: not even fetched_at or last_seen_at move."""
    await store_result(conn, read(path))
    before = await whole_rows(conn)
    await store_result(conn, read(path))
    await bulk.store_results(conn, [(read(path), read_body(read(path)))])
    await bulk.reprocess(conn, None)
    assert await whole_rows(conn) == before
    await store_result(conn, body(path, message="fetched again, a different body"))
    after = json.loads((await whole_rows(conn))["results"][0])
    assert after["fetched_at"] > json.loads(before["results"][0])["fetched_at"]


async def test_minimal_example_yields_its_contacts(conn: asyncpg.Connection) -> None:
    await store_result(conn, read(MINIMAL))
    emails = await conn.fetch("SELECT email FROM harvester.site_emails ORDER BY email")
    phones = await conn.fetch("SELECT phone, e164 FROM harvester.site_phones")
    addresses = await conn.fetch("SELECT address FROM harvester.site_addresses")
    socials = await conn.fetch("SELECT platform, url FROM harvester.site_socials ORDER BY 1")
    assert [r["email"] for r in emails] == ["contact@example.com", "sales@example.com"]
    assert [tuple(r) for r in phones] == [("+1-555-123-4567", None)]
    assert [r["address"] for r in addresses] == ["123 Main St, San Francisco, CA 94105"]
    assert [r["platform"] for r in socials] == ["facebook", "github", "linkedin", "twitter"]
    site = await one(conn, "SELECT url, domain, pages_crawled FROM harvester.sites")
    assert tuple(site) == ("https://example.com", "example.com", 5)


async def test_harvested_job_row_records_state_type_and_status(conn: asyncpg.Connection) -> None:
    await store_result(conn, read(MINIMAL))
    job = await one(conn, "SELECT * FROM harvester.jobs")
    assert (job["state"], job["job_type"], job["upstream_status"]) == ("harvested", "spiderSite", "completed")
    assert job["finished_at"] is not None and job["last_error"] is None


async def test_maps_example_yields_one_business_with_coordinates(conn: asyncpg.Connection) -> None:
    await store_result(conn, read(MAPS))
    rows = await conn.fetch("SELECT * FROM harvester.businesses")
    assert len(rows) == 1
    b = rows[0]
    assert (b["place_id"], b["latitude"], b["longitude"]) == (
        "0x89e3709876543210:0xabcdef1234567890",
        42.3647,
        -71.0542,
    )
    assert b["categories"] == ["Italian restaurant", "Fine dining"]
    assert json.loads(b["working_hours"])["Monday"] == "5:00-10:00 PM"
    assert b["last_job_id"] == MAPS_ID
    link = await one(conn, "SELECT * FROM harvester.maps_businesses")
    assert (link["job_id"], link["position"]) == (MAPS_ID, 1)
    search = await one(conn, "SELECT query, results_count FROM harvester.maps_searches")
    assert tuple(search) == ("italian restaurants in Boston", 20)


async def test_same_business_from_two_searches_is_one_row_linked_twice(
    conn: asyncpg.Connection,
) -> None:
    await store_result(conn, read(MAPS))
    first_seen = await conn.fetchval("SELECT first_seen_at FROM harvester.businesses")
    later = body(MAPS, job_id=str(OTHER_MAPS_ID), completed_at="2025-10-28T09:00:00Z")
    await store_result(conn, later)
    rows = await conn.fetch("SELECT * FROM harvester.businesses")
    assert len(rows) == 1
    assert rows[0]["first_seen_at"] == first_seen
    assert rows[0]["last_seen_at"] >= first_seen
    assert rows[0]["last_job_id"] == OTHER_MAPS_ID
    links = await conn.fetch("SELECT job_id FROM harvester.maps_businesses ORDER BY job_id")
    assert {r["job_id"] for r in links} == {MAPS_ID, OTHER_MAPS_ID}


async def test_restoring_an_older_search_does_not_overwrite_newer_details(
    conn: asyncpg.Connection,
) -> None:
    newer = json.loads(read(MAPS))
    newer.update(job_id=str(OTHER_MAPS_ID), completed_at="2025-10-28T09:00:00Z")
    newer["data"]["businesses"][0]["rating"] = 4.9
    await store_result(conn, json.dumps(newer).encode())
    await store_result(conn, read(MAPS))
    row = await one(conn, "SELECT rating, last_job_id FROM harvester.businesses")
    assert tuple(row) == (4.9, OTHER_MAPS_ID)


async def test_fenced_store_harvests_and_releases_the_lease(conn: asyncpg.Connection) -> None:
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_result(
        conn, read(MINIMAL), expected_job_id=MINIMAL_ID, fence=fence, http_status=200, polls_spent=1
    )
    assert (outcome.kind, outcome.job_id) == ("harvested", MINIMAL_ID)
    assert outcome.job_type == "spiderSite" and outcome.completed_at is not None
    job = await one(conn, "SELECT * FROM harvester.jobs")
    assert (job["state"], job["polls"], job["last_http_status"], job["lease_owner"]) == (
        "harvested",
        1,
        200,
        None,
    )


async def test_wrong_lease_token_is_fenced_and_writes_nothing(conn: asyncpg.Connection) -> None:
    fence = await claim(conn, MINIMAL_ID)
    stale = store.Fence(MINIMAL_ID, fence.lease_token - 1)
    outcome = await store_result(conn, read(MINIMAL), fence=stale)
    assert outcome.kind == "fenced"
    assert await conn.fetchval("SELECT state FROM harvester.jobs") == "pending"
    for table in ("results", "sites", "site_emails", "rejects"):
        assert await count(conn, table) == 0, table


async def test_bad_body_under_a_lost_lease_is_fenced_not_rejected(conn: asyncpg.Connection) -> None:
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_result(conn, b"nope", fence=store.Fence(MINIMAL_ID, 0))
    assert outcome.kind == "fenced"
    assert fence.lease_token != 0
    assert await count(conn, "rejects") == 0


REJECTS = {
    "not_json": b"<html>502 Bad Gateway</html>",
    "truncated": read(MINIMAL)[:200],
    "no_job_id": b'{"success": true, "status": "completed", "data": {}}',
    "job_id_not_uuid": b'{"job_id": "not-a-uuid", "type": "spiderSite"}',
    "job_id_wrong_type": b'{"job_id": 12345, "type": "spiderSite"}',
    "top_level_array": b'[{"job_id": "550e8400-e29b-41d4-a716-446655440000"}]',
    "raw_nul_byte": b'{"job_id": "550e8400-e29b-41d4-a716-446655440000", "message": "a\x00b"}',
    "invalid_utf8": b'{"job_id": "550e8400-e29b-41d4-a716-446655440000", "message": "\xff\xfe"}',
    "too_deep": b'{"job_id": "550e8400-e29b-41d4-a716-446655440000", "data": '
    + b"[" * 5000
    + b"]" * 5000
    + b"}",
}


@pytest.mark.parametrize("raw", REJECTS.values(), ids=REJECTS.keys())
async def test_unusable_body_is_rejected_with_its_exact_bytes(
    conn: asyncpg.Connection,
    raw: bytes,
) -> None:
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_result(conn, raw, expected_job_id=MINIMAL_ID, fence=fence)
    assert outcome.kind == "rejected" and outcome.reason
    reject = await one(conn, "SELECT job_id, reason, body FROM harvester.rejects")
    assert (reject["job_id"], reject["body"]) == (MINIMAL_ID, raw)
    job = await one(conn, "SELECT state, last_error, lease_owner FROM harvester.jobs")
    assert (job["state"], job["last_error"], job["lease_owner"]) == ("rejected", outcome.reason, None)
    assert await count(conn, "results") == 0


async def test_unfenced_reject_without_job_id_keeps_only_the_bytes(
    conn: asyncpg.Connection,
) -> None:
    outcome = await store_result(conn, b"{not json")
    assert (outcome.kind, outcome.job_id) == ("rejected", None)
    assert await conn.fetchval("SELECT body FROM harvester.rejects") == b"{not json"
    assert await count(conn, "jobs") == 0


async def test_body_for_another_job_is_rejected(conn: asyncpg.Connection) -> None:
    fence = await claim(conn, MAPS_ID)
    outcome = await store_result(conn, read(MINIMAL), expected_job_id=MAPS_ID, fence=fence)
    assert outcome.kind == "rejected"
    assert await conn.fetchval("SELECT state FROM harvester.jobs WHERE job_id=$1", MAPS_ID) == "rejected"
    assert await count(conn, "results") == 0


async def test_escaped_nul_characters_are_cleaned_not_rejected(conn: asyncpg.Connection) -> None:
    raw = with_data(MINIMAL, markdown_compendium="# A\u0000B", emails=["x\u0000@example.com"])
    raw = raw.replace(b'"success"', b'"suc\\u0000cess"')
    outcome = await store_result(conn, raw)
    assert outcome.kind == "harvested"
    assert await conn.fetchval("SELECT markdown_compendium FROM harvester.sites") == "# AB"
    assert await conn.fetchval("SELECT email FROM harvester.site_emails") == "x@example.com"
    assert await conn.fetchval("SELECT raw ? 'success' FROM harvester.results") is True


async def test_database_refusal_rolls_back_and_rejects(conn: asyncpg.Connection) -> None:
    await conn.execute("ALTER TABLE harvester.sites ADD CONSTRAINT few CHECK (pages_crawled < 3)")
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_result(conn, read(MINIMAL), fence=fence)
    assert outcome.kind == "rejected"
    assert "CheckViolation" in (outcome.reason or "")
    assert await count(conn, "results") == 0
    assert await conn.fetchval("SELECT state FROM harvester.jobs") == "rejected"
    assert await conn.fetchval("SELECT body FROM harvester.rejects") == read(MINIMAL)


async def test_dead_connection_raises_database_error(db_dsn: str) -> None:
    dead = await asyncpg.connect(db_dsn)
    await dead.close()
    with pytest.raises(DatabaseError):
        await store_result(dead, read(MINIMAL))


async def test_a_pool_works_as_the_target(db_dsn: str) -> None:
    async with asyncpg.create_pool(db_dsn, min_size=1, max_size=2) as pool:
        outcome = await store_result(pool, read(MAPS))
        assert outcome.kind == "harvested"
        assert await pool.fetchval("SELECT count(*) FROM harvester.businesses") == 1


async def test_one_megabyte_compendium_is_stored_whole(conn: asyncpg.Connection) -> None:
    text = "# Big\n" + "lorem ipsum dolor sit amet " * 40_000
    await store_result(conn, with_data(MINIMAL, markdown_compendium=text))
    stored = await conn.fetchval("SELECT length(markdown_compendium) FROM harvester.sites")
    assert stored == len(text) > 1_000_000


async def test_gone_failed_body_marks_the_job_failed(conn: asyncpg.Connection) -> None:
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_failure(conn, read(FAILED), job_id=MINIMAL_ID, fence=fence)
    assert outcome.kind == "failed"
    job = await one(conn, "SELECT state, upstream_status, last_error, last_http_status FROM harvester.jobs")
    assert tuple(job) == (
        "failed",
        "failed",
        "Failed to connect to target URL: Connection timeout after 30s",
        410,
    )
    assert await conn.fetchval("SELECT status FROM harvester.results") == "failed"
    assert await count(conn, "sites") == 0


async def test_gone_cancelled_body_marks_the_job_cancelled(conn: asyncpg.Connection) -> None:
    raw = body(FAILED, status="cancelled", error_message="Cancelled by user")
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_failure(conn, raw, job_id=MINIMAL_ID, fence=fence)
    assert (outcome.kind, outcome.reason) == ("cancelled", "Cancelled by user")
    assert await conn.fetchval("SELECT state FROM harvester.jobs") == "cancelled"


async def test_gone_body_with_error_instead_of_error_message_keeps_it(
    conn: asyncpg.Connection,
) -> None:
    doc = json.loads(read(FAILED))
    del doc["error_message"]
    doc["error"] = "Target refused the connection"
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_failure(conn, json.dumps(doc).encode(), job_id=MINIMAL_ID, fence=fence)
    assert (outcome.kind, outcome.reason) == ("failed", "Target refused the connection")
    assert await conn.fetchval("SELECT last_error FROM harvester.jobs") == outcome.reason
    assert await conn.fetchval("SELECT error_message FROM harvester.results") == outcome.reason


async def test_site_body_without_type_and_with_numbers_as_strings_is_harvested_whole(
    conn: asyncpg.Connection,
) -> None:
    doc = json.loads(read(MINIMAL))
    del doc["type"]
    doc.update(success="true", processing_time_seconds="12.4")
    doc["data"]["pages_crawled"] = "5"
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_result(conn, json.dumps(doc).encode(), fence=fence)
    assert (outcome.kind, outcome.job_type) == ("harvested", "spiderSite")
    result = await one(conn, "SELECT job_type, success, processing_time_seconds FROM harvester.results")
    assert tuple(result) == ("spiderSite", True, 12.4)
    assert await conn.fetchval("SELECT pages_crawled FROM harvester.sites") == 5
    assert await count(conn, "site_emails") == 2


async def test_maps_business_variants_are_stored(conn: asyncpg.Connection) -> None:
    doc = json.loads(read(MAPS))
    (item,) = doc["data"]["businesses"]
    item.update(
        rating="4.6",
        reviews_count="823",
        categories="Italian restaurant",
        working_hours=["Monday: 5-10 PM", "Tuesday: Closed"],
        latitude=42.3647,
        longitude=-71.0542,
    )
    del item["coordinates"]
    outcome = await store_result(conn, json.dumps(doc).encode())
    assert outcome.kind == "harvested"
    row = await one(
        conn,
        "SELECT rating, reviews_count, categories, working_hours, latitude, "
        "longitude FROM harvester.businesses",
    )
    assert (row["rating"], row["reviews_count"], row["categories"]) == (4.6, 823, ["Italian restaurant"])
    assert json.loads(row["working_hours"]) == ["Monday: 5-10 PM", "Tuesday: Closed"]
    assert (row["latitude"], row["longitude"]) == (42.3647, -71.0542)


async def test_gone_with_unusable_body_is_failed_and_keeps_the_bytes(
    conn: asyncpg.Connection,
) -> None:
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_failure(conn, b"", job_id=MINIMAL_ID, fence=fence)
    assert outcome.kind == "failed"
    job = await one(conn, "SELECT state, last_error FROM harvester.jobs")
    assert job["state"] == "failed" and "body not usable" in job["last_error"]
    assert await conn.fetchval("SELECT body FROM harvester.rejects") == b""


@pytest.mark.parametrize(
    ("raw", "state", "message"),
    [
        (
            b'{"detail": "Job was cancelled by the user", "status": "cancelled"}',
            "cancelled",
            "Job was cancelled by the user",
        ),
        (b'{"detail": "Job failed: target unreachable"}', "failed", "Job failed: target unreachable"),
        (b'{"status": "failed", "error": "timeout", "job_id": null}', "failed", "timeout"),
    ],
)
async def test_gone_body_without_job_id_keeps_its_message_and_verdict(
    conn: asyncpg.Connection,
    raw: bytes,
    state: str,
    message: str,
) -> None:
    fence = await claim(conn, MINIMAL_ID)
    outcome = await store_failure(conn, raw, job_id=MINIMAL_ID, fence=fence)
    assert outcome.kind == state
    job = await one(conn, "SELECT state, last_error FROM harvester.jobs")
    assert job["state"] == state
    assert job["last_error"].startswith(message) and "body not usable" in job["last_error"]
    assert await conn.fetchval("SELECT body FROM harvester.rejects") == raw


async def test_gone_under_a_lost_lease_is_fenced(conn: asyncpg.Connection) -> None:
    await claim(conn, MINIMAL_ID)
    outcome = await store_failure(conn, read(FAILED), job_id=MINIMAL_ID, fence=store.Fence(MINIMAL_ID, 99))
    assert outcome.kind == "fenced"
    assert await count(conn, "results") == 0


async def test_reprocess_rebuilds_identical_rows(conn: asyncpg.Connection) -> None:
    for path in (MINIMAL, CHAMP, MAPS):
        await store_result(conn, read(path))
    before = await dump(conn)
    await conn.execute(
        "DELETE FROM harvester.sites; DELETE FROM harvester.maps_searches; DELETE FROM harvester.businesses"
    )
    report = await bulk.reprocess(conn, None)
    assert (report.processed, report.rejected) == (3, 0)
    assert await dump(conn) == before


async def test_reprocess_by_id_reports_unknown_ids(conn: asyncpg.Connection) -> None:
    await store_result(conn, read(MINIMAL))
    await conn.execute("DELETE FROM harvester.site_emails")
    report = await bulk.reprocess(conn, [MINIMAL_ID, MAPS_ID])
    assert (report.processed, report.missing) == (1, [str(MAPS_ID)])
    assert await count(conn, "site_emails") == 2


async def test_site_contacts_view_has_one_row_per_site(conn: asyncpg.Connection) -> None:
    await store_result(conn, read(MINIMAL))
    row = await one(conn, "SELECT * FROM harvester.site_contacts")
    assert row["emails"] == ["contact@example.com", "sales@example.com"]
    assert row["phones"] == ["+1-555-123-4567"]
    assert (row["linkedin"], row["github"], row["instagram"]) == (
        "https://linkedin.com/company/example",
        "https://github.com/example",
        None,
    )


async def test_leads_view_reads_champ_and_decision_maker(conn: asyncpg.Connection) -> None:
    await store_result(conn, read(CHAMP))
    lead = await one(conn, "SELECT * FROM harvester.leads")
    assert (lead["company"], lead["domain"], lead["icp_fit_score"]) == (
        "TechStart Solutions",
        "techstart.com",
        0.85,
    )
    assert lead["decision_maker"] == "Mike Chen (VP of Customer Success)"
    assert lead["champ_money"].startswith("Series B")


async def test_leads_view_falls_back_to_team_for_decision_maker(conn: asyncpg.Connection) -> None:
    await store_result(conn, read(AI))
    lead = await one(conn, "SELECT company, decision_maker FROM harvester.leads")
    assert tuple(lead) == ("TechStart Solutions", "Sarah Johnson (CEO & Founder)")


async def test_latest_sites_view_keeps_the_newest_crawl_per_domain(
    conn: asyncpg.Connection,
) -> None:
    for path in (AI, CHAMP, MINIMAL):
        await store_result(conn, read(path))
    rows = await conn.fetch("SELECT domain, job_id FROM harvester.latest_sites ORDER BY domain")
    assert [(r["domain"], str(r["job_id"])) for r in rows] == [
        ("example.com", str(MINIMAL_ID)),
        ("techstart.com", "770e8400-e29b-41d4-a716-446655440002"),
    ]
