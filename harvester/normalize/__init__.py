"""Result bodies → typed rows: the pure core of storing a SpiderIQ result.

``decode`` turns the bytes of a ``/results`` answer into a JSON object (UTF-8 with an optional BOM,
no NaN or infinities), ``document`` makes that object one PostgreSQL can hold (NULs removed, lone
surrogates replaced, a valid ``job_id``), and ``normalize`` maps that object onto frozen row values
for ``results`` and, by job type, for the spiderSite tables (``site``) or the spiderMaps
tables (``maps``); ``region`` (``normalize.default_region``) is how phones written without
``+`` are read for their E.164 form (``phones``). Only an unusable body (not JSON, not an object,
no valid ``job_id``) raises ``BodyError``; any other field of the wrong type becomes ``None``. No
I/O happens here.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from harvester.errors import BodyError
from harvester.normalize import values as v
from harvester.normalize.maps import BusinessRow, MapsSearchRow, Placement, maps_parts
from harvester.normalize.site import PhoneRow, SiteRow, SocialRow, TeamMemberRow, site_parts

__all__ = [
    "BusinessRow",
    "MapsSearchRow",
    "Normalized",
    "PhoneRow",
    "Placement",
    "ResultRow",
    "SiteRow",
    "SocialRow",
    "TeamMemberRow",
    "clean",
    "decode",
    "document",
    "failure_hint",
    "normalize",
    "parse_body",
]

# Real bodies nest about six levels; far deeper is an attack or a bug, and jsonb has limits too.
MAX_DEPTH = 200
SURROGATE = re.compile("[\ud800-\udfff]")
SITE_TYPE = "spidersite"
MAPS_TYPE = "spidermaps"
TYPE_NOISE = re.compile(r"[\s_-]+")
# Keys only a spiderSite result carries; a body without a type is read as one when it has any.
SITE_MARKERS = ("crawl_status", "pages_crawled", "markdown_compendium", "compendium", "contact_info")


@dataclass(frozen=True, slots=True)
class ResultRow:
    job_id: uuid.UUID
    job_type: str | None
    status: str | None
    success: bool | None
    processing_time_seconds: float | None
    worker_id: str | None
    completed_at: datetime | None
    message: str | None
    error_message: str | None
    raw: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Normalized:
    result: ResultRow
    site: SiteRow | None = None
    emails: tuple[str, ...] = ()
    phones: tuple[PhoneRow, ...] = ()
    addresses: tuple[str, ...] = ()
    socials: tuple[SocialRow, ...] = ()
    team: tuple[TeamMemberRow, ...] = ()
    search: MapsSearchRow | None = None
    businesses: tuple[BusinessRow, ...] = ()
    placements: tuple[Placement, ...] = ()

    @property
    def job_id(self) -> uuid.UUID:
        return self.result.job_id


def clean_text(value: str) -> str:
    """Drop NULs and replace lone surrogates: PostgreSQL text and jsonb refuse both."""
    if "\x00" in value:
        value = value.replace("\x00", "")
    if not value.isascii():
        value = SURROGATE.sub("\ufffd", value)
    return value


def clean(value: Any, depth: int = 0) -> Any:
    """A copy of a parsed JSON value with every string (keys too) cleaned."""
    if isinstance(value, str):
        return clean_text(value)
    if depth > MAX_DEPTH:
        raise BodyError(f"body is nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        return {clean_text(str(key)): clean(item, depth + 1) for key, item in value.items()}
    if isinstance(value, list):
        return [clean(item, depth + 1) for item in value]
    return value


def finite_float(literal: str) -> float | None:
    number = float(literal)
    return number if math.isfinite(number) else None


def no_constant(_literal: str) -> None:
    """NaN and ±Infinity are not JSON and jsonb refuses them: read them as null."""
    return None


def parse_job_id(value: Any) -> uuid.UUID:
    if value is None:
        raise BodyError("body has no job_id")
    if not isinstance(value, str):
        raise BodyError(f"job_id is a {type(value).__name__}, not a string")
    try:
        return uuid.UUID(value.strip())
    except ValueError:
        raise BodyError(f"job_id {value[:80]!r} is not a UUID") from None


def decode(raw: bytes) -> dict[str, Any]:
    """A body's JSON object, read as the store needs it: UTF-8 (an optional BOM), no NaN or
    infinities. Raises ``BodyError`` with the reason a reject records; nothing else.

    The classifier calls this once per answer and hands the object on, so a body is parsed once
    on its way to the store.
    """
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BodyError(f"body is not UTF-8 (byte {exc.start})") from exc
    try:
        parsed = json.loads(text, parse_float=finite_float, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise BodyError(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from exc
    except RecursionError as exc:
        raise BodyError("body is nested too deeply to parse") from exc
    except ValueError as exc:  # e.g. an integer literal longer than Python converts
        raise BodyError(f"body is not usable JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise BodyError(f"body is a JSON {type(parsed).__name__}, not an object")
    return parsed


def document(parsed: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded body cleaned for PostgreSQL (a copy), checked to have a valid job_id."""
    try:
        body: dict[str, Any] = clean(parsed)
    except RecursionError as exc:
        raise BodyError("body is nested too deeply to store") from exc
    parse_job_id(body.get("job_id"))
    return body


def parse_body(raw: bytes) -> dict[str, Any]:
    """Decode a result body into a cleaned JSON object that has a valid job_id."""
    return document(decode(raw))


def kind_of(job_type: str | None) -> str:
    """A job type compared loosely: "spiderSite", "SpiderSite" and "spider_site" are one kind."""
    return TYPE_NOISE.sub("", job_type or "").casefold()


def inferred_type(data: Any) -> str | None:
    """The type of a body that names none, from keys only that type's data has.

    The docs say ``type`` is always present, but their own 202 example leaves it out; a result
    stored without its site or maps rows would be data silently lost.
    """
    if not isinstance(data, Mapping):
        return None
    if isinstance(data.get("businesses"), list):
        return "spiderMaps"
    if any(key in data for key in SITE_MARKERS):
        return "spiderSite"
    return None


def error_text(body: Mapping[str, Any]) -> str | None:
    """``error_message``, else ``error`` (what the seed doc's example code reads on a 410, as a
    string or ``{message}``), else a FastAPI ``detail`` string."""
    found = v.text(body.get("error_message"))
    if found:
        return found
    error = body.get("error")
    if isinstance(error, Mapping):
        error = error.get("message")
    return v.stripped(error) or v.stripped(body.get("detail"))


def failure_hint(parsed: object) -> tuple[str | None, str | None]:
    """``(status, message)`` read leniently from a failure body too poor to store.

    A 410 body is not documented; one without a job id (a FastAPI ``{"detail": ...}``, say) is
    still the API saying why the job ended and whether it was cancelled. ``parsed`` is the
    decoded body, or anything else (nothing to read) when it did not decode to an object.
    """
    if not isinstance(parsed, Mapping):
        return None, None
    message = error_text(parsed) or v.stripped(parsed.get("message"))
    status = v.stripped(parsed.get("status"))
    return (None if status is None else clean_text(status), None if message is None else clean_text(message))


def normalize(body: Mapping[str, Any], region: str | None = None) -> Normalized:
    """Typed rows for every table a body feeds; only a missing or invalid job_id raises.

    ``region`` is the default region for phone numbers written without ``+`` (None: only
    ``+`` numbers get an E.164 form)."""
    if not isinstance(body, Mapping):
        raise BodyError(f"body is a {type(body).__name__}, not an object")
    job_id = parse_job_id(body.get("job_id"))
    data = body.get("data")
    job_type = v.first_text(body, "type", "job_type") or inferred_type(data)
    completed_at = v.timestamp(body.get("completed_at"))
    result = ResultRow(
        job_id=job_id,
        job_type=job_type,
        status=v.stripped(body.get("status")),
        success=v.boolean(body.get("success")),
        processing_time_seconds=v.number(body.get("processing_time_seconds")),
        worker_id=v.text(body.get("worker_id")),
        completed_at=completed_at,
        message=v.text(body.get("message")),
        error_message=error_text(body),
        raw=dict(body),
    )
    kind = kind_of(job_type)
    if kind == SITE_TYPE and isinstance(data, Mapping):
        site = site_parts(data, completed_at, region)
        return Normalized(
            result=result,
            site=site.site,
            emails=site.emails,
            phones=site.phones,
            addresses=site.addresses,
            socials=site.socials,
            team=site.team,
        )
    if kind == MAPS_TYPE and isinstance(data, Mapping):
        maps = maps_parts(data, region)
        return Normalized(
            result=result,
            search=maps.search,
            businesses=maps.businesses,
            placements=maps.placements,
        )
    return Normalized(result=result)
