"""The queries users copy from the docs run against a database holding the seed examples: the
cookbook of docs/downstream.md and the first queries of README.md's quick start.

Users copy these queries into their own SQL; a renamed column or view must fail here first.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import asyncpg
import pytest

from harvester.commands.imports import import_paths
from tests.support.paths import ROOT

SEED = ROOT / "tests" / "fixtures" / "seed"


def cookbook_queries() -> list[str]:
    text = (ROOT / "docs" / "downstream.md").read_text()
    section = text.split("\n## Cookbook\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.S)


def quick_start_queries() -> list[str]:
    """The SELECTs of README.md's quick start (its INSERT enqueues a job: not for a seeded database)."""
    text = (ROOT / "README.md").read_text()
    section = text.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    queries = re.findall(r"```sql\n(.*?)```", section, flags=re.S)
    return [query for query in queries if re.search(r"^SELECT", query, flags=re.M)]


def test_the_quick_start_reads_results_with_sql() -> None:
    assert len(quick_start_queries()) >= 2


def test_the_cookbook_has_at_least_six_queries() -> None:
    assert len(cookbook_queries()) >= 6


@pytest.fixture
async def seeded(db_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    pool = await asyncpg.create_pool(db_dsn, min_size=1, max_size=2)
    try:
        report = await import_paths(pool, [*sorted(SEED.glob("*-200.json")), SEED / "failed-410.json"])
        assert report.stored >= 4
    finally:
        await pool.close()
    conn = await asyncpg.connect(db_dsn)
    yield conn
    await conn.close()


@pytest.mark.parametrize("index", range(len(cookbook_queries())))
async def test_cookbook_query_runs(seeded: asyncpg.Connection, index: int) -> None:
    await seeded.fetch(cookbook_queries()[index])


@pytest.mark.parametrize("index", range(len(quick_start_queries())))
async def test_quick_start_query_answers(seeded: asyncpg.Connection, index: int) -> None:
    assert await seeded.fetch(quick_start_queries()[index])


async def test_cookbook_answers_from_the_seed_examples(seeded: asyncpg.Connection) -> None:
    queries = cookbook_queries()
    emails = await seeded.fetch(queries[0])
    assert emails and all(row["emails"] for row in emails)
    near = await seeded.fetch(queries[2])
    assert [row["name"] for row in near] and all(row["km"] <= 5 for row in near)
