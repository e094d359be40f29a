"""`harvester demo` end to end on a small mix: it must keep working for newcomers."""

from __future__ import annotations

import asyncio
import json
import re

import asyncpg
import pytest

from harvester.commands import cli


async def national_phones_read_in_us(dsn: str) -> int:
    """Site phones written without + (the simulator's "(617) 555-0100" form) that got a form."""
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT count(*) FROM harvester.site_phones WHERE phone LIKE '(%' AND e164 LIKE '+1%'"
            )
        )
    finally:
        await conn.close()


def test_demo_harvests_a_small_mix_and_reports_what_it_cost(
    db_dsn: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert cli.main(["demo", "--jobs", "40", "--speed", "60", "--dsn", db_dsn]) == 0
    out, err = capsys.readouterr()
    assert "rows per table:" in out and "sample leads:" in out and "sample businesses:" in out
    states = dict(re.findall(r"(\w+) (\d+)", out.split("jobs by state:")[1].splitlines()[0]))
    assert sum(map(int, states.values())) == 40 and "pending" not in states
    assert re.search(r"429s served\s+0\n", out)
    window = int(re.search(r"worst 60 s window\s+(\d+)", out).group(1))  # type: ignore[union-attr]
    assert 0 < window <= 100
    summary = json.loads(err.strip().splitlines()[-1])
    assert summary["harvested"] == int(states["harvested"]) and summary["requests"] >= 40
    # Raw phone text read in the default region US: some get an E.164 form, never more than there are.
    assert 0 < summary["raw_phones_e164"] <= summary["raw_phones"]
    assert re.search(r"with an E\.164 form\s+\d+ \(default region US\)", out)
    assert asyncio.run(national_phones_read_in_us(db_dsn)) > 0  # the daemon got the region
