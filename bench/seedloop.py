"""The seed document's polling loop, made concurrent: the baseline the harvester is measured against.

Per job, as in the seed's ``get_job_results``: GET ``/results``; 200 returns the body (stored here
with the harvester's own store, so both sides pay the same database cost); 202 sleeps 3 s and tries
again, up to 60 attempts; 410 and 404 raise, and every other status (429 and 5xx included) raises
through ``raise_for_status``: the job is dropped. Each job runs as its own task from the moment it
arrives, all behind the same shared limiter the harvester uses (100/min, burst 20), so the only
difference measured is the polling strategy.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from uuid import UUID

import aiohttp
import asyncpg

from harvester.api.classify import read_body
from harvester.db import store
from harvester.db.limiter import SharedLimiter

POLL_EVERY_S = 3.0  # the seed's time.sleep(3) after a 202
MAX_RETRIES = 60  # the seed's max_retries default


class SeedLoop:
    """Polls every arrived job every 3 s (API time) until it finishes, one task per job."""

    def __init__(
        self, base_url: str, token: str, pool: asyncpg.Pool, limiter: SharedLimiter, speed: float
    ) -> None:
        self.base_url = base_url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.pool = pool
        self.limiter = limiter
        self.speed = speed
        self.outcomes: Counter[str] = Counter()
        self.tasks: set[asyncio.Task[None]] = set()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=100), timeout=aiohttp.ClientTimeout(total=30)
        )

    def arrive(self, job_ids: list[UUID]) -> None:
        for job_id in job_ids:
            task = asyncio.create_task(self._job(job_id))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    def idle(self) -> bool:
        return not self.tasks

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*self.tasks, return_exceptions=True)
        self.outcomes["unfinished_at_cap"] += len(self.tasks)
        if self._session is not None:
            await self._session.close()

    async def _job(self, job_id: UUID) -> None:
        self.outcomes[await self._poll(job_id)] += 1

    async def _poll(self, job_id: UUID) -> str:
        assert self._session is not None
        url = f"{self.base_url}/api/v1/jobs/{job_id}/results"
        for _ in range(MAX_RETRIES):
            await self.limiter.acquire()
            try:
                async with self._session.get(url, headers=self.headers) as resp:
                    status, body = resp.status, await resp.read()
            except (aiohttp.ClientError, TimeoutError):
                return "dropped_transport_error"
            if status == 200:
                outcome = await store.store_result(self.pool, body, read_body(body), expected_job_id=job_id)
                return outcome.kind
            if status == 202:
                await asyncio.sleep(POLL_EVERY_S / self.speed)
                continue
            if status == 410:
                return "dropped_410_failed"
            if status == 404:
                return "dropped_404"
            return f"dropped_{status}"
        return "dropped_timeout"
