"""Harvester behind a real PgBouncer (stock ``pgbouncer.ini``), in transaction and session mode.

The main DSN goes through PgBouncer, ``HARVESTER_DIRECT_DSN`` straight to PostgreSQL, as
docs/operations.md tells users to set it up. Every command runs as a subprocess, configured only
through the environment: concurrent migrations, the CLI commands one after another (each a fresh
client on pooled server connections, which is what used to collide on prepared statements), a
harvest against the simulator, and the NOTIFY wake-up through the direct connection.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from uuid import UUID, uuid4

import asyncpg
import pytest

from harvester import db
from harvester.config import DatabaseConfig
from harvester.db import migrate
from harvester.sim import SimServer
from tests.support import bouncer as bouncer_module
from tests.support.bouncer import MODES, PgBouncer, require_pgbouncer, version
from tests.support.e2e import (
    ROOT,
    all_claimed,
    daemon_env,
    fetch_jobs,
    listening,
    mismatched_states,
    sim_jobs,
    start_daemon,
    unknown_ids,
    wait_for,
)

pytestmark = pytest.mark.slow
SPEED = 30.0
SEED = ROOT / "tests" / "fixtures" / "seed"
BODIES = ROOT / "tests" / "fixtures" / "bodies"


@pytest.fixture(scope="module", params=MODES)
def pgbouncer(request: pytest.FixtureRequest, pg_server: str) -> Iterator[PgBouncer]:
    binary = require_pgbouncer()
    with PgBouncer(binary, pg_server, request.param) as bouncer:
        print(f"\n[pgbouncer] {version(binary)}, pool_mode = {bouncer.pool_mode}")
        yield bouncer


@pytest.mark.parametrize(("ci", "outcome"), [("", pytest.skip.Exception), ("true", pytest.fail.Exception)])
def test_missing_pgbouncer_is_a_skip_but_a_failure_in_ci(
    monkeypatch: pytest.MonkeyPatch, ci: str, outcome: type[BaseException]
) -> None:
    monkeypatch.setattr(bouncer_module, "find_pgbouncer", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="pgbouncer is not installed"):
        require_pgbouncer()


@dataclass(frozen=True)
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)

    def events(self, name: str) -> list[dict[str, Any]]:
        found = []
        for line in self.out.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == name:
                found.append(event)
        return found


def cli_env(dsn: str, direct_dsn: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARVESTER_")}
    env.update(
        {"HARVESTER_DSN": dsn, "HARVESTER_DIRECT_DSN": direct_dsn, "HARVESTER_SERVER__ENABLED": "false"}
    )
    return env


async def harvester(env: Mapping[str, str], *args: str, stdin: str = "") -> Run:
    """``harvester ARGS`` as a subprocess."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "harvester",
        *args,
        env=dict(env),
        cwd=str(ROOT),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), timeout=120)
    assert proc.returncode is not None
    return Run(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))


def ok(run: Run) -> Run:
    assert run.code == 0, f"exit {run.code}\n{run.err[-3000:]}\n{run.out[-3000:]}"
    assert "Traceback" not in run.err
    return run


def database_of(dsn: str) -> str:
    return urlsplit(dsn).path.lstrip("/")


def through_bouncer(bouncer: PgBouncer, dsn: str) -> bool:
    """PgBouncer logged a client login for this database (so the commands did go through it)."""
    return f"db={database_of(dsn)} " in bouncer.log_text()


async def test_concurrent_migrations_serialize(pgbouncer: PgBouncer, empty_db_dsn: str) -> None:
    env = cli_env(pgbouncer.dsn_for(empty_db_dsn), empty_db_dsn)
    runs = await asyncio.gather(harvester(env, "migrate"), harvester(env, "migrate"))
    for run in runs:
        ok(run)
    applied = [v for run in runs for event in run.events("migrations_applied") for v in event["versions"]]
    everything = [m.version for m in migrate.available()]
    assert Counter(applied) == Counter(everything)  # each migration once, by one of the two
    again = ok(await harvester(env, "migrate"))
    assert [e["count"] for e in again.events("migrations_applied")] == [0]
    # The main DSN, through PgBouncer, sees the migrated schema.
    listed = ok(await harvester(env, "status", "--json")).json()
    assert sum(listed["jobs"].values()) == 0


async def test_migrate_connects_only_to_the_direct_dsn(empty_db_dsn: str) -> None:
    env = cli_env("postgresql://postgres@127.0.0.1:1/nowhere", empty_db_dsn)
    applied = ok(await harvester(env, "migrate")).events("migrations_applied")
    assert [e["count"] for e in applied] == [len(migrate.available())]


async def test_cli_commands_through_the_pooler(pgbouncer: PgBouncer, db_dsn: str) -> None:
    env = cli_env(pgbouncer.dsn_for(db_dsn), db_dsn)
    ids = [uuid4() for _ in range(30)]
    first = ok(await harvester(env, "enqueue", "--file", "-", stdin="\n".join(map(str, ids[:20]))))
    assert first.json() == {"enqueued": 20, "duplicates": 0}
    second = ok(await harvester(env, "enqueue", *map(str, ids[10:]), "--tag", "src=field"))
    assert second.json() == {"enqueued": 10, "duplicates": 10}
    for _ in range(3):  # fresh clients on server connections earlier clients have used
        status = ok(await harvester(env, "status", "--json")).json()
        assert status["jobs"]["pending"] == 30
    ok(await harvester(env, "status"))

    bodies = [
        str(SEED / name)
        for name in ("site-ai-200.json", "site-champ-200.json", "site-minimal-200.json", "maps-200.json")
    ]
    imported = ok(await harvester(env, "import", *bodies, str(BODIES / "site-nested-contact-info.json")))
    stored = imported.json()["stored"]
    assert imported.json() == {"stored": 5, "rejected": 0, "skipped": 0}
    status = ok(await harvester(env, "status", "--json")).json()
    assert status["jobs"]["harvested"] == stored and status["jobs"]["pending"] == 30

    ok(await harvester(env, "reprocess", "--all"))
    requeued = ok(await harvester(env, "requeue", "--state", "harvested")).json()
    assert requeued == {"requeued": stored}
    status = ok(await harvester(env, "status", "--json")).json()
    assert status["jobs"]["pending"] == 30 + stored and status["jobs"]["harvested"] == 0
    other = ok(await harvester(env, "enqueue", str(uuid4()), "--account", "team-b")).json()
    assert other == {"enqueued": 1, "duplicates": 0}
    status = ok(await harvester(env, "status", "--json")).json()
    assert status["waiting_for_unknown_account"] == {"team-b": 1}
    assert through_bouncer(pgbouncer, db_dsn)


async def test_statement_timeout_holds_per_transaction(pgbouncer: PgBouncer, db_dsn: str) -> None:
    """The server cancels a slow statement in a timed transaction, through the pooler, and the
    timeout does not outlive the transaction on the server connection PgBouncer hands on."""
    pool = await db.open_pool(DatabaseConfig(dsn=pgbouncer.dsn_for(db_dsn), pool_max=2))
    try:
        with pytest.raises(asyncpg.QueryCanceledError, match="statement timeout"):
            async with db.transaction(pool, 0.2) as conn:
                await conn.execute("SELECT pg_sleep(3)")
        for _ in range(4):
            assert await pool.fetchval("SHOW statement_timeout") == "0"
    finally:
        await pool.close()


async def _submit_mix(sim: SimServer) -> list[UUID]:
    ids: list[UUID] = []
    ids += await sim_jobs(sim, 70, "spiderSite")
    ids += await sim_jobs(sim, 20, "spiderMaps")
    ids += await sim_jobs(sim, 8, "spiderSite", outcome="failed")
    ids += await sim_jobs(sim, 6, "spiderSite", outcome="cancelled")
    ids += unknown_ids(4)
    return ids


async def test_harvest_through_the_pooler(pgbouncer: PgBouncer, db_dsn: str, tmp_path: Path) -> None:
    pooled = pgbouncer.dsn_for(db_dsn)
    async with SimServer(speed=SPEED, seed=61, tokens=["e2e:key:secret"]) as sim:
        ids = await _submit_mix(sim)
        enqueued = ok(
            await harvester(cli_env(pooled, db_dsn), "enqueue", "--file", "-", stdin="\n".join(map(str, ids)))
        ).json()
        assert enqueued == {"enqueued": len(ids), "duplicates": 0}
        # IDs the API never issued are polled once a reconcile interval has not listed them, then
        # become not_found after the grace: both short, since this run is about the pooler
        # (tests/e2e runs the defaults)
        short = {"HARVESTER_POLLING__NOT_FOUND_GRACE_S": "60", "HARVESTER_POLLING__LIST_RECONCILE_S": "60"}
        env = daemon_env(
            pooled, sim, SPEED, f"bouncer-{pgbouncer.pool_mode}", {"HARVESTER_DIRECT_DSN": db_dsn, **short}
        )
        daemon = await start_daemon(env, tmp_path, "--drain")
        began = time.monotonic()
        try:
            code = await daemon.exit_code(150)
        except TimeoutError:
            raise AssertionError(f"the daemon did not drain in time\n{daemon.log_tail()}") from None
        finally:
            await daemon.stop()
        took = time.monotonic() - began
        assert code == 0, daemon.log_tail()
        jobs = await fetch_jobs(db_dsn)
        assert set(jobs) == set(ids)
        assert mismatched_states(sim, jobs) == []
    log = daemon.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert "PreparedStatement" not in log and "startup parameter" not in log
    assert through_bouncer(pgbouncer, db_dsn)
    states = Counter(row["state"] for row in jobs.values())
    print(
        f"\n[pgbouncer {pgbouncer.pool_mode}] enqueued {len(ids)}, harvested {states['harvested']}, "
        f"failed {states['failed']}, cancelled {states['cancelled']}, "
        f"not_found {states['not_found']}, drained in {took:.1f} s (speed {SPEED:.0f})"
    )


async def test_insert_through_the_pooler_wakes_the_daemon(
    pgbouncer: PgBouncer, db_dsn: str, tmp_path: Path
) -> None:
    idle_poll_s = 30.0  # real seconds: far longer than the wake-up may take
    pooled = pgbouncer.dsn_for(db_dsn)
    async with SimServer(speed=SPEED, seed=62, tokens=["e2e:key:secret"]) as sim:
        env = daemon_env(
            pooled,
            sim,
            SPEED,
            f"wake-{pgbouncer.pool_mode}",
            {
                "HARVESTER_DIRECT_DSN": db_dsn,
                "HARVESTER_WORKER__IDLE_POLL_S": str(idle_poll_s * SPEED),
            },
        )
        daemon = await start_daemon(env, tmp_path, "--max-seconds", str(idle_poll_s * 2))
        try:
            await wait_for(lambda: listening(db_dsn), 60, "the daemon to LISTEN")
            await asyncio.sleep(0.5)  # let the first, empty claim pass settle into the idle wait
            ids = await sim_jobs(sim, 1, "spiderSite")
            # A producer's plain INSERT through PgBouncer; its NOTIFY reaches the direct LISTEN.
            producer = await asyncpg.connect(pooled, statement_cache_size=0)
            try:
                inserted_at = time.monotonic()
                await producer.execute(
                    "INSERT INTO harvester.jobs (job_id) VALUES ($1) ON CONFLICT DO NOTHING", ids[0]
                )
            finally:
                await producer.close()
            await wait_for(
                lambda: all_claimed(db_dsn), idle_poll_s / 3, "the new job to be claimed", interval=0.02
            )
            woke_s = time.monotonic() - inserted_at
        finally:
            if daemon.proc.returncode is None:
                daemon.proc.terminate()
            code = await daemon.exit_code(60)
            await daemon.stop()
    assert code == 0, daemon.log_tail()
    print(
        f"\n[pgbouncer {pgbouncer.pool_mode}] wake-up: claimed {woke_s:.3f} s after the insert "
        f"(idle poll {idle_poll_s:.0f} s)"
    )
