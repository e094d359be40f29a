"""One lane per account: everything ``harvester run`` keeps for one SpiderIQ client.

A ``Lane`` is an account's shared limiter (its row is keyed by the account's name), its gate (the
brakes: a 401 or a 429 on one account pauses that account only), its API client and token, its
worker (claiming only that account's jobs), its list discovery and its event stream. The lanes of
one process share the database pool, the metrics registry (each lane reports with its ``account``
label) and the in-flight slots (``slots.Slots``). ``rotate`` hands the client and the stream a new
token (``daemon.tokens`` reads it); requests already sent finish with the old one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from harvester import db, logs
from harvester.api.client import SpiderIQ
from harvester.config import AccountConfig, Config, Secret
from harvester.daemon.metrics import Metrics
from harvester.daemon.worker import Worker
from harvester.db import jobs
from harvester.db.jobs import PgJobStore
from harvester.db.limiter import SharedLimiter
from harvester.db.listings import PgAdopter, PgDiscoveryStore, PgStreamStore
from harvester.discovery.listing import Discovery
from harvester.discovery.stream import EventStream
from harvester.scheduling.gate import Gate
from harvester.scheduling.slots import Slots

log = logs.get("harvester.daemon.lanes")


@dataclass(slots=True)
class Lane:
    account: AccountConfig
    token: Secret
    limiter: SharedLimiter
    gate: Gate
    client: SpiderIQ
    store: PgJobStore
    worker: Worker
    discovery: Discovery | None
    stream: EventStream | None

    @property
    def name(self) -> str:
        return self.account.name

    def current_token(self) -> str:
        return self.token.reveal()

    def rotate(self, token: Secret) -> bool:
        """Use ``token`` from the next request on; True when it differs from the one in use."""
        if token == self.token:
            return False
        logs.register_secret(token.reveal())
        self.token = token
        self.client.set_token(token.reveal())
        self.gate.token_rotated()
        log.info("token_rotated", account=self.name)
        return True


def build_lanes(cfg: Config, pool: db.Pool, metrics: Metrics) -> list[Lane]:
    slots = Slots(cfg.rate_limit.max_in_flight, cfg.account_names)

    async def drained() -> bool:
        return not await jobs.any_pending_for(pool, cfg.account_names)

    return [build_lane(cfg, pool, metrics, account, slots, drained) for account in cfg.accounts]


def build_lane(
    cfg: Config,
    pool: db.Pool,
    metrics: Metrics,
    account: AccountConfig,
    slots: Slots,
    drained: Callable[[], Awaitable[bool]] | None = None,
) -> Lane:
    token = account.token
    logs.register_secret(token.reveal())
    limiter = SharedLimiter.for_account(
        pool, account, cfg.rate_limit.default_pause_s, cfg.rate_limit.window_s
    )
    gate = Gate(cfg, limiter, observer=metrics.for_account(account.name))
    client = SpiderIQ.from_config(
        cfg.api, token.reveal(), time_scale=cfg.speed, on_remaining=gate.note_remaining
    )
    timeout_s = cfg.database.statement_timeout_s
    store = PgJobStore(
        pool,
        statement_timeout_s=timeout_s,
        account=account.name,
        region=cfg.normalize.default_region or None,
    )
    adopter = PgAdopter(pool, statement_timeout_s=timeout_s, account=account.name) if account.adopt else None
    # Per real minute, as rate() over the request counter measures it (scaled by --speed).
    metrics.set_rate_limit(account.requests_per_minute, account.reserve_per_minute, account.name)
    rate = account.requests_per_minute - account.reserve_per_minute
    horizon = min(cfg.worker.lease_s / 3, cfg.rate_limit.max_in_flight * 60.0 / rate)
    worker = Worker(
        cfg,
        store,
        client,
        gate,
        account=account.name,
        slots=slots,
        drained=drained,
        claim_horizon_s=horizon,
    )
    lane = Lane(account, token, limiter, gate, client, store, worker, None, None)
    if cfg.polling.discovery == "list" or account.adopt:
        lane.discovery = Discovery(
            cfg,
            PgDiscoveryStore(pool, statement_timeout_s=timeout_s, account=account.name),
            client,
            gate,
            account.name,
            adopter=adopter,
            adopt_since=account.adopt_since_at,
        )
    if cfg.polling.events == "sse":
        lane.stream = EventStream(
            cfg,
            PgStreamStore(pool, statement_timeout_s=timeout_s, account=account.name),
            gate,
            lane.current_token,
            account=account.name,
            adopter=adopter,
        )
    return lane
