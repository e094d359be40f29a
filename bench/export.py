"""Export benchmark: ``harvester export leads`` over a large table, rows per second and peak RSS.

Each size gets its own database, filled in SQL (results, sites with lead scoring and
personalization hooks, two team members per site, tags on the jobs), then the console script runs
as its own process under ``/usr/bin/time -v``, which reports its peak resident set ("Maximum
resident set size"). Two sizes a tenfold apart show whether memory grows with the row count (it
should not: COPY streams). A run counts only if the export exits 0 and wrote every row.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg

from bench.common import BenchFailed, databases, table, write_json

FILL = """
INSERT INTO harvester.jobs (job_id, state, job_type, tags, finished_at)
SELECT md5('j' || i)::uuid, 'harvested', 'spiderSite',
       jsonb_build_object('campaign', 'c' || (i % 20)), now()
  FROM generate_series(1, $1::integer) AS i;
INSERT INTO harvester.results (job_id, job_type, status, success, raw)
SELECT md5('j' || i)::uuid, 'spiderSite', 'completed', true, '{}'::jsonb
  FROM generate_series(1, $1::integer) AS i;
INSERT INTO harvester.sites (job_id, url, domain, company_name, industry, icp_fit_score,
                             lead_scoring, personalization_hooks, completed_at)
SELECT md5('j' || i)::uuid, 'https://site' || i || '.example', 'site' || i || '.example',
       'Company ' || i || ', "Ltd" \u2013 Zürich', 'B2B SaaS', (i % 100) / 100.0,
       jsonb_build_object('champ_analysis', jsonb_build_object(
           'challenges', jsonb_build_array('manual triage', 'slow replies'),
           'authority', 'VP of Ops', 'money', 'Series B', 'prioritization', 'High')),
       jsonb_build_object('key_challenge', 'support load'), now()
  FROM generate_series(1, $1::integer) AS i;
INSERT INTO harvester.team_members (job_id, position, name, title)
SELECT md5('j' || i)::uuid, p, 'Person ' || i || '-' || p, CASE p WHEN 0 THEN 'CEO' ELSE 'Engineer' END
  FROM generate_series(1, $1::integer) AS i, generate_series(0, 1) AS p;
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--export-rows", type=int, default=100_000, help="rows in the large run (export)")


async def fill(dsn: str, rows: int) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in FILL.strip().split(";\n"):
            if statement.strip():
                await conn.execute(statement, rows)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def measure(dsn: str, rows: int, fmt: str) -> dict[str, Any]:
    out = Path(tempfile.mkdtemp(prefix="harvester-export-")) / f"leads.{fmt}"
    exe = str(Path(sys.executable).with_name("harvester"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update({"HARVESTER_DSN": dsn, "HARVESTER_SERVER__ENABLED": "false"})
    began = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        "/usr/bin/time", "-v", exe, "export", "leads", "--format", fmt, "--out", str(out),
        env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    stdout, stderr = await proc.communicate()
    elapsed = time.perf_counter() - began
    if proc.returncode != 0:
        raise BenchFailed("export", proc.returncode or 1, stderr.decode(errors="replace")[-500:])
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", stderr.decode())
    lines = sum(1 for _ in out.open("rb")) - (1 if fmt == "csv" else 0)
    size = out.stat().st_size
    out.unlink()
    out.parent.rmdir()
    if lines != rows:
        raise BenchFailed("export", 1, f"wrote {lines} rows of {rows}")
    return {
        "rows": rows,
        "format": fmt,
        "seconds": round(elapsed, 2),
        "rows_per_s": round(rows / elapsed),
        "mib_written": round(size / 2**20, 1),
        "peak_rss_mib": round(int(match.group(1)) / 1024, 1) if match else None,
        "summary": stdout.decode().strip(),
    }


async def run(args: argparse.Namespace) -> None:
    large = 5_000 if args.quick else args.export_rows
    results = []
    async with databases(args.dsn) as dbs:
        for rows in (large // 10, large):
            dsn = await dbs.fresh()
            await fill(dsn, rows)
            for fmt in ("csv", "jsonl"):
                results.append(await measure(dsn, rows, fmt))
            await dbs.drop(dsn)
    headers = ["rows", "format", "seconds", "rows_per_s", "mib_written", "peak_rss_mib"]
    print(table(headers, [[r[h] for h in headers] for r in results]))
    print(f"wrote {write_json('export', {'runs': results}, Path(args.out) if args.out else None)}")
