"""Every hostile body is stored or rejected with its bytes kept; nothing raises (real PostgreSQL).

A harvested body must also be idempotent: storing it again leaves exactly the same rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
import pytest
from hypothesis import HealthCheck, given, settings

from harvester.api.classify import read_body
from harvester.db import store
from tests.support.hostile import HAND_CASES, REJECTED, body_strategy

CHILD_TABLES = (
    "sites",
    "site_emails",
    "site_phones",
    "site_addresses",
    "site_socials",
    "team_members",
    "maps_searches",
    "maps_businesses",
)


async def rows_of(pool: asyncpg.Pool, job_id: uuid.UUID) -> dict[str, list[str]]:
    found = {}
    for table in ("results", *CHILD_TABLES):
        rows = await pool.fetch(  # fetched_at moves when a different body comes for the job
            f"SELECT (to_jsonb(t) - 'fetched_at')::text AS r FROM harvester.{table} t WHERE job_id = $1",
            job_id,
        )
        found[table] = sorted(r["r"].replace(str(job_id), "") for r in rows)
    return found


async def check_one(pool: asyncpg.Pool, build: Callable[[uuid.UUID], bytes]) -> str:
    """Store a body for a fresh job and check the invariants; return the outcome kind."""
    job_id = uuid.uuid4()
    raw = build(job_id)
    await pool.execute("INSERT INTO harvester.jobs (job_id) VALUES ($1)", job_id)
    outcome = await store.store_result(pool, raw, read_body(raw), expected_job_id=job_id, http_status=200)
    state = await pool.fetchval("SELECT state FROM harvester.jobs WHERE job_id = $1", job_id)
    assert outcome.kind in ("harvested", "rejected")
    assert state == outcome.kind
    if outcome.kind == "rejected":
        kept = await pool.fetch("SELECT reason, body FROM harvester.rejects WHERE job_id = $1", job_id)
        assert [bytes(r["body"]) for r in kept] == [raw]
        assert kept[0]["reason"]
        assert await pool.fetchval("SELECT count(*) FROM harvester.results WHERE job_id = $1", job_id) == 0
        return outcome.kind
    before = await rows_of(pool, job_id)
    assert len(before["results"]) == 1
    again = await store.store_result(pool, raw, read_body(raw), expected_job_id=job_id, http_status=200)
    assert again.kind == "harvested"
    assert await rows_of(pool, job_id) == before
    return outcome.kind


@pytest.mark.parametrize("name", sorted(HAND_CASES))
async def test_hand_case_is_stored_or_rejected(pool: asyncpg.Pool, name: str) -> None:
    assert await check_one(pool, HAND_CASES[name]) == ("rejected" if name in REJECTED else "harvested")


async def test_the_corpus_has_at_least_fifty_cases() -> None:
    assert len(HAND_CASES) >= 50


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(build=body_strategy())
async def test_generated_body_is_stored_or_rejected(
    pool: asyncpg.Pool,
    build: Callable[[uuid.UUID], bytes],
) -> None:
    await check_one(pool, build)
