"""The discovery rows and the listing rules in PostgreSQL: what a list page or an event does to our jobs.

One ``harvester.discovery`` row per credential carries the list pass's watermark and lease and the
event stream's lease. ``PgListings`` is ``ports.Listings``, the rules by which news of a job (shown
finished, running, or passed in SpiderIQ's queue) moves the due time of our pending job;
``PgDiscoveryStore`` adds the list pass's lease (``ports.DiscoveryStore``), ``PgStreamStore`` the
stream's (``ports.StreamStore``), and ``PgAdopter`` queues the jobs nobody enqueued (adopt mode,
``ports.Adopter``). Each call is one transaction (``seam.Seam``).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from uuid import UUID

from harvester.db.queries import NamedQueries
from harvester.db.seam import TERMINAL, Seam
from harvester.ports import DiscoveryLease, DiscoveryState, Listed


class SQL(NamedQueries):
    adopt_jobs: str
    insert_discovery_row: str
    select_discovery_state: str
    claim_discovery_pass: str
    finish_discovery_pass: str
    note_nothing_to_reconcile: str
    make_listed_finished_jobs_due: str
    defer_listed_running_jobs: str
    renew_discovery_lease: str
    pull_in_passed_queued_jobs: str
    count_queued_defers_ending: str
    spread_queued_defers: str
    claim_event_stream: str
    request_reconcile_pass: str
    release_event_stream: str


class PgListings(Seam):
    """``ports.Listings`` for one account's jobs, and the credential's discovery row."""

    async def ensure_discovery(self, key: str) -> None:
        """The row both leases live on; the list pass and the stream each make sure of it."""
        await self._execute("discovery row", SQL.insert_discovery_row, key)

    async def mark_finished(self, jobs: Sequence[Listed]) -> list[UUID]:
        """Make our pending jobs among ``jobs`` due at once; returns the ones that were ours."""
        if not jobs:
            return []
        rows = await self._fetch(
            "listed finished",
            SQL.make_listed_finished_jobs_due,
            [j.job_id for j in jobs],
            [j.status for j in jobs],
            [j.job_type for j in jobs],
            self.account,
        )
        return [row["job_id"] for row in rows]

    async def defer_running(self, jobs: Sequence[Listed], *, keep_started: bool = False) -> list[UUID]:
        """Put off direct polls of our pending jobs among ``jobs``; returns the ones that were ours.
        ``keep_started``: a job already known started keeps its due time."""
        if not jobs:
            return []
        rows = await self._fetch(
            "listed running",
            SQL.defer_listed_running_jobs,
            [j.job_id for j in jobs],
            [j.status for j in jobs],
            [j.job_type for j in jobs],
            [j.defer_s for j in jobs],
            self.account,
            keep_started,
            TERMINAL,
        )
        return [row["job_id"] for row in rows]

    async def pull_in_queued(self, jobs: Sequence[Listed]) -> list[UUID]:
        """Bring forward the next poll of our pending jobs among ``jobs`` still known queued, to
        ``defer_s`` from now (never later than it was); returns the ones whose poll moved."""
        if not jobs:
            return []
        rows = await self._fetch(
            "queue passed",
            SQL.pull_in_passed_queued_jobs,
            [j.job_id for j in jobs],
            [j.defer_s for j in jobs],
            self.account,
        )
        return [row["job_id"] for row in rows]


class PgDiscoveryStore(PgListings):
    """``ports.DiscoveryStore``: the list pass's watermark and lease, and what a page tells."""

    async def discovery_state(self, key: str) -> DiscoveryState:
        [row] = await self._fetch("discovery state", SQL.select_discovery_state, key, TERMINAL, self.account)
        return DiscoveryState(
            unfinished=row["unfinished"],
            stream_up=row["stream_up"],
            waiting=row["waiting"],
            reconcile_pending=row["reconcile_pending"],
            youngest_s=row["youngest_s"],
        )

    async def queued_expiring(self, key: str, within_s: float) -> int:
        """Our pending jobs known queued whose queued defer ends within ``within_s`` (up to 100)."""
        [row] = await self._fetch("queued expiring", SQL.count_queued_defers_ending, within_s, self.account)
        return int(row["expiring"])

    async def spread_queued_defers(self, key: str, within_s: float) -> int:
        """Polls of our pending jobs known queued that come later than ``within_s`` from now are
        spread over the next ``within_s``; returns how many moved."""
        rows = await self._fetch("spread queued", SQL.spread_queued_defers, within_s, self.account)
        return len(rows)

    async def note_nothing_to_reconcile(self, key: str) -> None:
        await self._execute("discovery baseline", SQL.note_nothing_to_reconcile, key, self.account)

    async def claim_discovery(
        self, key: str, owner: str, min_age_s: float, reconcile_s: float, lease_s: float
    ) -> DiscoveryLease | None:
        rows = await self._fetch(
            "discovery lease",
            SQL.claim_discovery_pass,
            key,
            owner,
            min_age_s,
            lease_s,
            reconcile_s,
            self.account,
        )
        if not rows:
            return None
        row = rows[0]
        return DiscoveryLease(row["watermark"], row["oldest_pending"], row["gap_since"])

    async def renew_discovery(self, key: str, owner: str, lease_s: float) -> bool:
        return bool(await self._fetch("discovery lease", SQL.renew_discovery_lease, key, owner, lease_s))

    async def finish_discovery(
        self, key: str, owner: str, newest: datetime | None, pages: int, finished: int, *, full: bool = True
    ) -> None:
        await self._execute(
            "discovery pass", SQL.finish_discovery_pass, key, owner, newest, pages, finished, full
        )


class PgStreamStore(PgListings):
    """``ports.StreamStore``: the event stream's lease (one holder per credential) and its reports."""

    async def claim_stream(
        self, key: str, owner: str, lease_s: float, *, connected: bool, events: int, matched: int
    ) -> bool:
        rows = await self._fetch(
            "stream lease", SQL.claim_event_stream, key, owner, lease_s, connected, events, matched
        )
        return bool(rows)

    async def request_reconcile(self, key: str, since: datetime | None = None) -> None:
        await self._execute("reconcile request", SQL.request_reconcile_pass, key, since)

    async def release_stream(self, key: str, owner: str) -> None:
        await self._execute("stream release", SQL.release_event_stream, key, owner)


class PgAdopter(Seam):
    """``ports.Adopter``: adopt mode queues the account's jobs that no producer enqueued."""

    async def adopt(self, jobs: Sequence[Listed], priority: int = 0) -> list[UUID]:
        """Queue the jobs among ``jobs`` that the queue does not have, for this account, tagged
        ``{"adopted": true}``; returns the ones that were new."""
        if not jobs:
            return []
        rows = await self._fetch(
            "adopt",
            SQL.adopt_jobs,
            [j.job_id for j in jobs],
            self.account,
            [j.job_type for j in jobs],
            [j.status for j in jobs],
            priority,
            TERMINAL,
        )
        return [row["job_id"] for row in rows]
