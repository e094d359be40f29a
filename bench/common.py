"""What every benchmark shares: a throwaway PostgreSQL, fresh migrated databases, tables, JSON.

A benchmark run starts one server and gives each measurement its own database copied from a
migrated template, so runs never see each other's rows or limiter state.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from harvester.db import migrate
from harvester.pgtemp import TempPostgres

RESULTS = Path(__file__).resolve().parent / "results"


def with_database(dsn: str, name: str) -> str:
    return urlunsplit(urlsplit(dsn)._replace(path="/" + name))


class Databases:
    """One PostgreSQL server (throwaway unless a DSN is given) handing out fresh migrated databases."""

    def __init__(self, dsn: str | None = None) -> None:
        self._external = dsn
        self._pg: TempPostgres | None = None
        self.server_dsn = dsn or ""
        self._template = f"bench_tmpl_{os.getpid()}"
        self._made: list[str] = []

    async def start(self) -> None:
        if self._external is None:
            self._pg = TempPostgres()
            await asyncio.to_thread(self._pg.start)
            self.server_dsn = self._pg.dsn
        await self._admin(
            f'DROP DATABASE IF EXISTS "{self._template}"', f'CREATE DATABASE "{self._template}"'
        )
        conn = await asyncpg.connect(with_database(self.server_dsn, self._template))
        try:
            await migrate.apply(conn)
        finally:
            await conn.close()

    async def stop(self) -> None:
        try:
            if self._external is not None:
                await self._admin(
                    *(f'DROP DATABASE IF EXISTS "{n}" WITH (FORCE)' for n in [*self._made, self._template])
                )
        finally:
            if self._pg is not None:
                await asyncio.to_thread(self._pg.stop)

    async def fresh(self) -> str:
        """A new database with every migration applied; returns its DSN."""
        name = f"bench_{uuid.uuid4().hex[:12]}"
        await self._admin(f'CREATE DATABASE "{name}" TEMPLATE "{self._template}"')
        self._made.append(name)
        return with_database(self.server_dsn, name)

    async def drop(self, dsn: str) -> None:
        name = urlsplit(dsn).path.lstrip("/")
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self._made:
            self._made.remove(name)

    async def _admin(self, *statements: str) -> None:
        conn = await asyncpg.connect(self.server_dsn)
        try:
            for statement in statements:
                await conn.execute(statement)
        finally:
            await conn.close()


@asynccontextmanager
async def databases(dsn: str | None = None) -> AsyncIterator[Databases]:
    dbs = Databases(dsn)
    await dbs.start()
    try:
        yield dbs
    finally:
        await dbs.stop()


def machine() -> dict[str, Any]:
    """Where and under what load the figures were taken: other work on the box skews them."""
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m": round(load[0], 2),
        "load_avg_5m": round(load[1], 2),
        "taken_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, right-aligned numbers; the same rows go into the JSON."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    lines = [
        "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)),
        "  ".join("-" * w for w in widths),
    ]
    for row in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def write_json(name: str, payload: dict[str, Any], out_dir: Path | None = None) -> Path:
    directory = out_dir or RESULTS
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{name}.json"
    path.write_text(
        json.dumps(
            {"benchmark": name, "machine": machine(), **payload}, indent=2, sort_keys=False, default=str
        )
        + "\n"
    )
    return path


class BenchFailed(Exception):
    """A benchmark whose subject failed: it prints no figure and ``python -m bench`` exits non-zero.

    ``exit_code`` is the subject's own exit code when it had one, so ``make bench`` fails with it.
    """

    def __init__(self, name: str, exit_code: int, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.exit_code = exit_code
        self.reason = reason


def print_checks(checks: Sequence[Mapping[str, Any]], where: Sequence[str]) -> None:
    """One line a target: ``where`` names the keys that say which run it is about."""
    for check in checks:
        value = check["value"]
        shown = f"{value:.3f}" if isinstance(value, float) else str(value)
        place = " / ".join(str(check[key]) for key in where)
        verdict = "met" if check["met"] else "MISSED"
        print(f"  {place}: {check['figure']} {shown} (target {check['target']}) {verdict}")


def save(
    name: str, payload: dict[str, Any], out: str | None, failures: Sequence[str], exit_code: int
) -> None:
    """Write the JSON and say where; a run whose subject failed then fails the benchmark."""
    print(f"wrote {write_json(name, payload, Path(out) if out else None)}")
    if failures:
        raise BenchFailed(name, exit_code, "; ".join(failures))


def subject_failure(exit_code: int | None, ran_s: float, period_s: float) -> tuple[int, str] | None:
    """Why a subject process's run does not count, as (exit code to fail with, reason), or None.

    It counts only if it exited 0 and ran the whole measured period: a figure taken from a process
    that died (or stopped) early measures whatever it did before it stopped, not the claim.
    """
    if exit_code is None:
        return 1, "subject did not exit"
    if exit_code < 0:
        return 128 - exit_code, f"subject killed by signal {-exit_code} after {ran_s:.1f} s"
    if exit_code != 0:
        return exit_code, f"subject exited {exit_code} after {ran_s:.1f} s of {period_s:g} s"
    if ran_s < period_s:
        return 1, f"subject stopped after {ran_s:.1f} s, before the {period_s:g} s period ended"
    return None


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]
