"""Two searches that finished in the same second leave the same business row in either order.

Found by the chaos run: completion times have whole seconds, and on a tie the business row
followed whichever search was stored last, so a re-harvest in another order (restarts, several
processes) changed ``businesses`` (details, ``last_job_id``) against a clean run.
"""

from __future__ import annotations

import json
import uuid

import asyncpg

from harvester.api.classify import read_body
from harvester.db import store

COMPLETED = "2025-10-27T14:45:10Z"


def search(job_id: uuid.UUID, rating: float) -> bytes:
    return json.dumps(
        {
            "job_id": str(job_id),
            "type": "spiderMaps",
            "status": "completed",
            "completed_at": COMPLETED,
            "data": {
                "query": "cafes",
                "businesses": [{"place_id": "tie-place", "name": f"Cafe {rating}", "rating": rating}],
            },
        }
    ).encode()


async def winner(pool: asyncpg.Pool, first: bytes, second: bytes) -> tuple[object, ...]:
    await pool.execute(
        "TRUNCATE harvester.businesses, harvester.maps_searches, "
        "harvester.maps_businesses, harvester.results CASCADE"
    )
    for body in (first, second):
        outcome = await store.store_result(pool, body, read_body(body))
        assert outcome.kind == "harvested"
    row = await pool.fetchrow(
        "SELECT name, rating, last_job_id FROM harvester.businesses WHERE place_id = 'tie-place'"
    )
    assert row is not None
    return tuple(row)


async def test_tie_is_broken_by_job_id_not_by_store_order(pool: asyncpg.Pool) -> None:
    low, high = sorted((uuid.uuid4(), uuid.uuid4()))
    a, b = search(low, 3.0), search(high, 5.0)
    assert await winner(pool, a, b) == await winner(pool, b, a) == ("Cafe 5.0", 5.0, high)


async def test_a_later_search_still_wins_over_a_larger_job_id(pool: asyncpg.Pool) -> None:
    low, high = sorted((uuid.uuid4(), uuid.uuid4()))
    later = search(low, 4.0).replace(COMPLETED.encode(), b"2025-10-27T14:45:11Z")
    assert (await winner(pool, later, search(high, 5.0)))[2] == low
