"""Set-based writes of normalized rows: one statement per table for any number of result bodies.

``write_rows`` upserts the ``results`` rows of a batch, replaces each job's child rows (delete the
``sites`` / ``maps_searches`` row, whose children cascade, then insert afresh) and upserts the
businesses by ``place_id``. Every statement is an ``INSERT … SELECT FROM unnest(...)`` over parallel
arrays, so a batch of a thousand bodies costs the same dozen round trips as one. The caller owns the
transaction; this module only knows rows and SQL names.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import asyncpg

from harvester.db.queries import NamedQueries
from harvester.normalize import BusinessRow, Normalized

# The tables a stored body writes, in the order they are written.
ROW_TABLES = (
    "results",
    "sites",
    "site_emails",
    "site_phones",
    "site_addresses",
    "site_socials",
    "team_members",
    "maps_searches",
    "businesses",
    "maps_businesses",
)


class SQL(NamedQueries):
    upsert_results: str
    delete_sites: str
    delete_maps_searches: str
    insert_sites: str
    insert_site_emails: str
    insert_site_phones: str
    insert_site_addresses: str
    insert_site_socials: str
    insert_team_members: str
    insert_maps_searches: str
    upsert_businesses: str
    insert_maps_businesses: str


def as_json(value: Any) -> str | None:
    """jsonb travels as text; SQL NULL for None."""
    if value is None:
        return None
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Row tuples → one list per column, the shape unnest() takes."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


async def insert(conn: asyncpg.Connection, sql: str, rows: Sequence[tuple[Any, ...]], width: int) -> None:
    if rows:
        await conn.execute(sql, *columns(rows, width))


def latest_businesses(items: Sequence[Normalized]) -> list[tuple[BusinessRow, Normalized]]:
    """One row per place for the batch, from the most recently completed search holding it."""

    def completed(item: Normalized) -> float:
        at = item.result.completed_at
        return at.timestamp() if at is not None else float("-inf")

    chosen: dict[str, tuple[BusinessRow, Normalized]] = {}
    for item in sorted(items, key=completed):
        for row in item.businesses:
            chosen[row.place_id] = (row, item)
    return list(chosen.values())


def rows_digest(item: Normalized) -> str:
    """A fingerprint of the rows a body normalizes to, its raw body aside (PostgreSQL compares that).

    Stored in ``results.rows_digest``: a re-store (import, reprocess) whose rows differ from what
    the job had is a change in the feed, one that writes the same rows again is not. Keys are
    sorted: a body read back from jsonb (reprocess) has its objects' keys in jsonb's order.
    """
    bare = dataclasses.replace(item, result=dataclasses.replace(item.result, raw={}))
    text = json.dumps(dataclasses.asdict(bare), sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


async def write_rows(conn: asyncpg.Connection, batch: Sequence[Normalized], *, fetched: bool) -> None:
    """Upsert results and replace the child rows of every job in the batch."""
    items = list({item.job_id: item for item in batch}.values())
    if not items:
        return
    job_ids: list[UUID] = [item.job_id for item in items]
    results = [
        (
            r.job_id,
            r.job_type,
            r.status,
            r.success,
            r.processing_time_seconds,
            r.worker_id,
            r.completed_at,
            r.message,
            r.error_message,
            as_json(r.raw),
        )
        for r in (item.result for item in items)
    ]
    digests = [rows_digest(item) for item in items]
    await conn.execute(SQL.upsert_results, *columns(results, 10), fetched, digests)
    await conn.execute(SQL.delete_sites, job_ids)
    await conn.execute(SQL.delete_maps_searches, job_ids)

    sites = [item for item in items if item.site is not None]
    await insert(
        conn,
        SQL.insert_sites,
        [
            (
                i.job_id,
                s.url,
                s.domain,
                s.pages_crawled,
                s.crawl_status,
                s.markdown_compendium,
                as_json(s.compendium),
                as_json(s.company_vitals),
                s.company_name,
                s.industry,
                as_json(s.pain_points),
                as_json(s.lead_scoring),
                s.icp_fit_score,
                as_json(s.personalization_hooks),
                as_json(s.metadata),
                as_json(s.logo),
                as_json(s.custom_analysis),
                s.completed_at,
            )
            for i in sites
            if (s := i.site) is not None
        ],
        18,
    )
    await insert(conn, SQL.insert_site_emails, [(i.job_id, e) for i in sites for e in i.emails], 2)
    await insert(
        conn,
        SQL.insert_site_phones,
        [
            (i.job_id, p.phone, p.e164, p.national, p.country_code, p.phone_type, p.valid)
            for i in sites
            for p in i.phones
        ],
        7,
    )
    await insert(conn, SQL.insert_site_addresses, [(i.job_id, a) for i in sites for a in i.addresses], 2)
    await insert(
        conn, SQL.insert_site_socials, [(i.job_id, s.platform, s.url) for i in sites for s in i.socials], 3
    )
    await insert(
        conn,
        SQL.insert_team_members,
        [(i.job_id, t.position, t.name, t.title, t.email, t.linkedin) for i in sites for t in i.team],
        6,
    )

    searches = [item for item in items if item.search is not None]
    await insert(
        conn,
        SQL.insert_maps_searches,
        [
            (i.job_id, m.query, m.results_count, as_json(m.metadata))
            for i in searches
            if (m := i.search) is not None
        ],
        4,
    )
    await insert(
        conn,
        SQL.upsert_businesses,
        [
            (
                b.place_id,
                b.name,
                b.rating,
                b.reviews_count,
                b.address,
                b.phone,
                b.phone_e164,
                b.website,
                as_json(list(b.categories)),
                b.latitude,
                b.longitude,
                b.link,
                b.business_status,
                b.price_range,
                as_json(b.working_hours),
                b.image_url,
                i.job_id,
                i.result.completed_at,
            )
            for b, i in latest_businesses(searches)
        ],
        18,
    )
    await insert(
        conn,
        SQL.insert_maps_businesses,
        [(i.job_id, p.position, p.place_id) for i in searches for p in i.placements],
        3,
    )
