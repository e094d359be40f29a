"""Expiring jobs left pending past ``polling.give_up_after_s``: every account's, in bounded batches.

One sweep (``Expiry.sweep``, run by ``lifetime.keep_running`` beside the workers) expires batch
after batch until one comes back short. ``EXPIRE_LANES`` batches run at once (``SKIP LOCKED`` keeps
them apart), so that a batch's own statement and its commit, where the change feed numbers it under
one lock, overlap. What was expired is logged even when the daemon stops in the middle of a long
backlog: the side tasks are cancelled then, possibly while a batch commits, so a batch in progress
is let finish (it is bounded by the statement timeout) and counted before the log line.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from harvester import logs
from harvester.errors import DatabaseError

log = logs.get("harvester.daemon.expiry")

EXPIRE_BATCH = 1000  # jobs per expiry statement (see sql/queries/jobs.sql expire_stale_jobs)
# Expiry statements at once: two keep a two-core server busy through each other's commit; a
# million stale jobs then expire in half a minute (bench/expiry.py).
EXPIRE_LANES = 2
EXPIRE_FINISH_S = 5.0  # a batch under way when the daemon stops may finish (and be counted) this long


class Expirer(Protocol):
    """The one statement a sweep needs of the job store (``ports.JobStore.expire``)."""

    async def expire(self, give_up_after_s: float, batch: int) -> int: ...


class Expiry:
    def __init__(
        self, store: Expirer, give_up_after_s: float, every_s: float, *, stopping: asyncio.Event
    ) -> None:
        self.store = store
        self.give_up_after_s = give_up_after_s
        self.every_s = every_s
        # Set once the worker stops claiming: a sweep then ends after the batches under way.
        self.stopping = stopping

    async def sweep(self) -> float:
        """Expire every job pending too long; returns the pause before the next sweep. A database
        error ends the sweep as itself (the caller retries it like any other)."""
        expired = [0]
        batches: set[asyncio.Future[int]] = set()
        try:
            async with asyncio.TaskGroup() as lanes:
                for _ in range(EXPIRE_LANES):
                    lanes.create_task(self._expire_batches(expired, batches))
        except* DatabaseError as failed:
            raise failed.exceptions[0] from None
        finally:
            try:
                if batches:  # stopped mid-batch: each commits or fails on its own, and counts itself
                    await asyncio.wait(set(batches), timeout=EXPIRE_FINISH_S)
            finally:
                if expired[0]:
                    log.info("jobs_expired", count=expired[0])
        return self.every_s

    async def _expire_batches(self, expired: list[int], batches: set[asyncio.Future[int]]) -> None:
        """Expire batch after batch until one comes back short. Each batch adds its own count to
        ``expired[0]`` when it ends, whoever still waits for it: a cancelled wait leaves the batch
        running (it is never cancelled: its commit may already be on the way)."""

        def counted(batch: asyncio.Future[int]) -> None:
            batches.discard(batch)
            if not batch.cancelled() and batch.exception() is None:
                expired[0] += batch.result()

        while True:
            batch = asyncio.ensure_future(self.store.expire(self.give_up_after_s, EXPIRE_BATCH))
            batches.add(batch)
            batch.add_done_callback(counted)
            count = await asyncio.shield(batch)
            if count < EXPIRE_BATCH or self.stopping.is_set():
                return
            await asyncio.sleep(0)  # let the loop breathe between batches
