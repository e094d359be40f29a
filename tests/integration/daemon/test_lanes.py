"""One lane per account on a real PostgreSQL: what each lane holds, what the lanes share, how a
lane's worker drains, and how a token reaches a lane (``daemon.lanes``, ``daemon.tokens``)."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from uuid import UUID

import asyncpg
import pytest
from structlog.testing import capture_logs

from harvester import config
from harvester.config import Config
from harvester.daemon import tokens
from harvester.daemon.lanes import Lane, build_lanes
from harvester.daemon.metrics import Metrics
from harvester.db.listings import PgAdopter
from harvester.discovery.listing import Discovery
from harvester.discovery.stream import EventStream

A_TOKEN, A_NEW, B_TOKEN = "acme:key:old", "acme:key:new", "bravo:key:secret"


def load(tmp_path: Path, db_dsn: str, extra: str = "", overrides: dict[str, object] | None = None) -> Config:
    secret = tmp_path / "acme.token"
    if not secret.exists():
        secret.write_text(A_TOKEN + "\n")
    path = tmp_path / "harvester.toml"
    path.write_text(
        f'[[accounts]]\nname = "acme"\ntoken_file = "{secret}"\nrequests_per_minute = 60.0\n{extra}\n'
        f'[[accounts]]\nname = "bravo"\ntoken = "{B_TOKEN}"\n'
    )
    return config.load(
        path,
        environ={},
        overrides={"api.base_url": "http://127.0.0.1:9", "database.dsn": db_dsn, **(overrides or {})},
    )


def lanes_of(cfg: Config, pool: asyncpg.Pool) -> list[Lane]:
    return build_lanes(cfg, pool, Metrics(accounts=cfg.account_names))


async def close(lanes: list[Lane]) -> None:
    for lane in lanes:
        await lane.client.close()


async def add_job(
    pool: asyncpg.Pool, account: str, *, due_in_s: float = 0.0, http_status: int | None = None
) -> UUID:
    job_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO harvester.jobs (job_id, account, next_poll_at, last_http_status) "
        "VALUES ($1, $2, now() + make_interval(secs => $3), $4)",
        job_id,
        account,
        due_in_s,
        http_status,
    )
    return job_id


async def test_each_account_has_its_own_lane_and_the_lanes_share_the_slots(
    tmp_path: Path, db_dsn: str, pool: asyncpg.Pool
) -> None:
    cfg = load(tmp_path, db_dsn)
    lanes = lanes_of(cfg, pool)
    try:
        acme, bravo = lanes
        assert [lane.name for lane in lanes] == ["acme", "bravo"]
        assert (acme.current_token(), bravo.current_token()) == (A_TOKEN, B_TOKEN)
        assert acme.gate is not bravo.gate and acme.limiter is not bravo.limiter
        assert acme.worker.gate is acme.gate and acme.worker.store is acme.store
        assert (acme.worker.account, bravo.worker.account) == ("acme", "bravo")
        slots = acme.worker.slots
        assert slots is not None and slots is bravo.worker.slots
        assert slots.accounts == ("acme", "bravo")
        # a request granted to one lane is counted on its own account's limiter row
        await acme.limiter.acquire()
        rows = {
            r["credential"]: r["granted_total"]
            for r in await pool.fetch("SELECT * FROM harvester.rate_limits")
        }
        assert rows == {"acme": 1}
    finally:
        await close(lanes)


async def test_claims_look_ahead_as_far_as_the_accounts_rate_sends_its_slots(
    tmp_path: Path, db_dsn: str, pool: asyncpg.Pool
) -> None:
    cfg = load(tmp_path, db_dsn)
    lanes = lanes_of(cfg, pool)
    try:
        acme, bravo = lanes
        # acme: 8 requests at 60 a minute take 8 s, under a third of the 30 s lease
        assert acme.worker.claim_horizon_s == pytest.approx(cfg.rate_limit.max_in_flight * 60.0 / 60.0)
        # bravo: 100 a minute sends them in 4.8 s
        assert bravo.worker.claim_horizon_s == pytest.approx(cfg.rate_limit.max_in_flight * 60.0 / 100.0)
        assert acme.worker.claim_horizon_s <= cfg.worker.lease_s / 3
    finally:
        await close(lanes)


@pytest.mark.parametrize(
    ("discovery", "events", "adopt", "listing", "stream"),
    [
        ("list", "sse", False, True, True),
        ("list", "off", False, True, False),
        ("poll", "sse", False, False, True),
        ("poll", "off", False, False, False),
        ("poll", "off", True, True, False),  # adopt mode reads the list whatever discovery says
    ],
)
async def test_the_discovery_sources_follow_the_configuration(
    tmp_path: Path,
    db_dsn: str,
    pool: asyncpg.Pool,
    discovery: str,
    events: str,
    adopt: bool,
    listing: bool,
    stream: bool,
) -> None:
    cfg = load(
        tmp_path,
        db_dsn,
        "adopt = true" if adopt else "",
        {"polling.discovery": discovery, "polling.events": events},
    )
    lanes = lanes_of(cfg, pool)
    try:
        acme = lanes[0]
        assert isinstance(acme.discovery, Discovery) is listing
        assert isinstance(acme.stream, EventStream) is stream
        if adopt:
            assert acme.discovery is not None and isinstance(acme.discovery.adopter, PgAdopter)
            assert acme.stream is None or acme.stream.events.adopter is acme.discovery.adopter
        assert lanes[1].discovery is None or lanes[1].discovery.adopter is None  # bravo adopts nothing
    finally:
        await close(lanes)


async def test_a_draining_lane_waits_for_every_configured_accounts_jobs(
    tmp_path: Path, db_dsn: str, pool: asyncpg.Pool
) -> None:
    """--drain with several accounts: no lane stops while another configured account still has
    work (it may be this lane's turn next), but a job nobody configured holds no lane."""
    cfg = load(tmp_path, db_dsn, overrides={"worker.idle_poll_s": 0.05, "polling.discovery": "poll"})
    lanes = lanes_of(cfg, pool)
    try:
        bravo_job = await add_job(pool, "bravo", due_in_s=3600.0)
        await add_job(pool, "ghost")
        run = asyncio.create_task(lanes[0].worker.run(asyncio.Event(), drain=True))
        await asyncio.sleep(0.5)
        assert not run.done()
        await pool.execute("UPDATE harvester.jobs SET state = 'expired' WHERE job_id = $1", bravo_job)
        with capture_logs() as logged:
            await asyncio.wait_for(run, 10)
        assert [e["event"] for e in logged if e["event"] == "queue_drained"] == ["queue_drained"]
    finally:
        await close(lanes)


async def test_a_changed_token_file_rotates_that_lane_only_and_frees_its_held_jobs(
    tmp_path: Path, db_dsn: str, pool: asyncpg.Pool
) -> None:
    cfg = load(tmp_path, db_dsn)
    lanes = lanes_of(cfg, pool)
    try:
        acme, bravo = lanes
        held = {
            name: await add_job(pool, name, due_in_s=3600.0, http_status=401) for name in ("acme", "bravo")
        }
        assert await tokens.reread_tokens(lanes) == []  # nothing changed yet
        (tmp_path / "acme.token").write_text(A_NEW + "\n")
        with capture_logs() as logged:
            assert await tokens.reread_tokens(lanes) == ["acme"]
        assert [e["account"] for e in logged if e["event"] == "token_rotated"] == ["acme"]
        assert acme.current_token() == A_NEW and acme.account.token.reveal() == A_NEW
        assert acme.client._headers["Authorization"] == f"Bearer {A_NEW}"
        assert (acme.gate.rotations, bravo.gate.rotations) == (1, 0)
        assert bravo.current_token() == B_TOKEN
        due = {
            r["account"]: r["due"]
            for r in await pool.fetch(
                "SELECT account, next_poll_at <= now() AS due FROM harvester.jobs WHERE job_id = ANY($1)",
                list(held.values()),
            )
        }
        assert due == {"acme": True, "bravo": False}  # the new token is tried at once
    finally:
        await close(lanes)


async def test_an_empty_token_file_keeps_the_token_in_use(
    tmp_path: Path, db_dsn: str, pool: asyncpg.Pool
) -> None:
    cfg = load(tmp_path, db_dsn)
    lanes = lanes_of(cfg, pool)
    try:
        (tmp_path / "acme.token").write_text("")
        with capture_logs() as logged:
            assert await tokens.reread_tokens(lanes) == []
        assert [e["account"] for e in logged if e["event"] == "token_reread_failed"] == ["acme"]
        assert lanes[0].current_token() == A_TOKEN and lanes[0].gate.rotations == 0
    finally:
        await close(lanes)


async def test_sighup_and_a_changed_file_each_reread_the_tokens(
    tmp_path: Path, db_dsn: str, pool: asyncpg.Pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tokens, "TOKEN_CHECK_S", 0.05)
    cfg = load(tmp_path, db_dsn)
    lanes = lanes_of(cfg, pool)
    stop, reload = asyncio.Event(), tokens.Reload()
    try:
        with capture_logs() as logged:
            watching = asyncio.create_task(tokens.watch_tokens(cfg, lanes, stop, reload))
            reload.request()
            for _ in range(100):
                await asyncio.sleep(0.02)
                if any(e["event"] == "tokens_reread" for e in logged):
                    break
            (tmp_path / "acme.token").write_text(A_NEW + "\n")
            for _ in range(100):
                await asyncio.sleep(0.02)
                if lanes[0].current_token() == A_NEW:
                    break
            stop.set()
            await asyncio.wait_for(watching, 5)
        reread = [(e["trigger"], e["rotated"]) for e in logged if e["event"] == "tokens_reread"]
        assert reread == [("sighup", []), ("file", ["acme"])]
        assert lanes[0].current_token() == A_NEW
    finally:
        await close(lanes)
