"""What the chaos run is judged by: job states against the simulator's truth, output tables against
a clean run of the same seed, and every byte of output against the token.

Table contents are compared as multisets of rows with the columns that legitimately differ
between two runs left out: timestamps (when a row was written, when a job was polled), and inside
stored JSON every string that is a timestamp (bodies carry simulated times that depend on when
the job was created).
"""

from __future__ import annotations

import base64
import json
import re
import urllib.parse
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import asyncpg

from harvester.db.rows import ROW_TABLES

OUTPUT_TABLES = (*ROW_TABLES, "rejects")
# Columns that are bookkeeping, not output: they differ between any two runs.
VOLATILE = {
    "reject_id",
    "fetched_at",
    "first_seen_at",
    "last_seen_at",
    "received_at",
    "updated_at",
    "created_at",
}
JOB_COLUMNS = ("job_id", "state", "job_type", "upstream_status", "last_error")
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")
TRUTH_TO_STATE = {"completed": "harvested", "failed": "failed", "cancelled": "cancelled"}
FAILED_STATES = {"failed", "cancelled", "not_found", "rejected", "expired"}


def _stable(value: Any) -> Any:
    """A JSON value with every timestamp string replaced, so two runs compare equal."""
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    if isinstance(value, str) and TIMESTAMP.match(value):
        return "<ts>"
    return value


def _cell(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind in ("json", "jsonb"):
        return json.dumps(_stable(json.loads(value)), sort_keys=True)
    if isinstance(value, list):
        return tuple(value)
    if isinstance(value, float):
        return round(value, 9)
    return value


async def _columns(conn: asyncpg.Connection, table: str) -> list[tuple[str, str]]:
    rows = await conn.fetch(
        "SELECT column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = 'harvester' AND table_name = $1 ORDER BY ordinal_position",
        table,
    )
    return [
        (r["column_name"], r["data_type"])
        for r in rows
        if r["column_name"] not in VOLATILE and not r["data_type"].startswith("timestamp")
    ]


async def snapshot(dsn: str) -> dict[str, Counter[tuple[Any, ...]]]:
    """Every output table as a multiset of comparable rows, plus the jobs' outcomes."""
    conn = await asyncpg.connect(dsn)
    try:
        tables: dict[str, Counter[tuple[Any, ...]]] = {}
        for table in OUTPUT_TABLES:
            cols = await _columns(conn, table)
            select = ", ".join(
                f'"{name}"::text' if kind in ("json", "jsonb") else f'"{name}"' for name, kind in cols
            )
            rows = await conn.fetch(f"SELECT {select} FROM harvester.{table}")
            tables[table] = Counter(
                tuple(_cell(row[i], kind) for i, (_, kind) in enumerate(cols)) for row in rows
            )
        jobs = await conn.fetch(f"SELECT {', '.join(JOB_COLUMNS)} FROM harvester.jobs")
        tables["jobs"] = Counter(tuple(row) for row in jobs)
        return tables
    finally:
        await conn.close()


def diff(
    clean: dict[str, Counter[tuple[Any, ...]]], chaos: dict[str, Counter[tuple[Any, ...]]]
) -> dict[str, dict[str, Any]]:
    """Per table: rows of the clean run missing after chaos, and rows chaos has in excess."""
    out: dict[str, dict[str, Any]] = {}
    for table in clean.keys() | chaos.keys():
        a, b = clean.get(table, Counter()), chaos.get(table, Counter())
        lost, extra = a - b, b - a
        out[table] = {
            "clean": sum(a.values()),
            "chaos": sum(b.values()),
            "lost": sum(lost.values()),
            "extra": sum(extra.values()),
        }
        if lost or extra:  # a few of each, to show what differs
            out[table]["examples"] = {
                "lost": [repr(r)[:400] for r in list(lost)[:3]],
                "extra": [repr(r)[:400] for r in list(extra)[:3]],
            }
    return out


def judge_states(
    truth: dict[str, str], states: dict[str, str], clean_states: dict[str, str]
) -> dict[str, Any]:
    """Compare each job's final state with what the simulator says happened to it.

    A completed job may end ``rejected`` only when the clean run rejected its body too.
    """
    wrong: list[str] = []
    wrongly_failed = 0
    not_terminal = 0
    for job_id, upstream in truth.items():
        state = states.get(job_id, "missing")
        want = TRUTH_TO_STATE.get(upstream)
        if state in ("pending", "missing"):
            not_terminal += 1
        body_refused = state == "rejected" and clean_states.get(job_id) == "rejected"
        if want is not None and state != want and not body_refused:
            wrong.append(f"{job_id}: simulator {upstream}, harvester {state}")
            if want == "harvested" and state in FAILED_STATES:
                wrongly_failed += 1
    return {
        "jobs": len(truth),
        "wrong_state": len(wrong),
        "wrongly_failed": wrongly_failed,
        "not_terminal": not_terminal,
        "examples": wrong[:10],
    }


def secret_forms(token: str) -> dict[str, str]:
    """Every spelling of the credential that could leak: whole, its secret parts, and encoded."""
    parts = token.split(":")
    forms = {"token": token}
    for i, part in enumerate(parts[1:], 1):
        forms[f"part{i}"] = part
    for name, value in list(forms.items()):
        forms[f"{name}.url"] = urllib.parse.quote(value, safe="")
        forms[f"{name}.b64"] = base64.b64encode(value.encode()).decode().rstrip("=")
    forms["bearer.b64"] = base64.b64encode(f"Bearer {token}".encode()).decode().rstrip("=")
    forms["token.hex"] = token.encode().hex()
    return {name: value for name, value in forms.items() if len(value) >= 6}


def find_secrets(token: str, texts: Iterable[tuple[str, bytes]]) -> list[str]:
    """Where any form of the token appears: ``source: form`` for each hit."""
    forms = secret_forms(token)
    hits: list[str] = []
    for source, data in texts:
        lowered = data.lower()
        for name, value in forms.items():
            needle = value.encode()
            if needle in data or (name.endswith((".url", ".hex")) and needle.lower() in lowered):
                hits.append(f"{source}: {name}")
    return hits


def read_logs(log_dir: Path) -> list[tuple[str, bytes]]:
    """Every daemon's whole output, across all its restarts."""
    return [(path.name, path.read_bytes()) for path in sorted(log_dir.glob("*.log"))]
