"""spiderSite result data → the ``sites`` row and its contact child rows.

Reads both the flat layout (v2.7.1 and later: ``data.emails``, ``data.linkedin`` …) and the older
nested one (``data.contact_info.{emails, phones, addresses, social_media}``, ``data.company_info``).
Phones may be strings or objects, ``pain_points`` a list or an object; every field may be missing or
of the wrong type, which yields ``None`` or a skipped item. A phone without an ``e164`` from the API
gets one from its raw text when that reads as a valid number (``phones.e164``, with the default
region the caller passes in), unless the API itself said the number is not valid. Pure, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from harvester.normalize import phones
from harvester.normalize import values as v

SOCIAL_PLATFORMS: tuple[str, ...] = (
    "linkedin",
    "twitter",
    "facebook",
    "instagram",
    "youtube",
    "tiktok",
    "github",
    "pinterest",
    "snapchat",
    "reddit",
    "medium",
    "discord",
    "whatsapp",
    "telegram",
)


@dataclass(frozen=True, slots=True)
class SiteRow:
    url: str | None
    domain: str | None
    pages_crawled: int | None
    crawl_status: str | None
    markdown_compendium: str | None
    compendium: dict[str, Any] | None
    company_vitals: dict[str, Any] | None
    company_name: str | None
    industry: str | None
    pain_points: dict[str, Any] | list[Any] | None
    lead_scoring: dict[str, Any] | None
    icp_fit_score: float | None
    personalization_hooks: dict[str, Any] | None
    metadata: dict[str, Any] | None
    logo: dict[str, Any] | None
    custom_analysis: Any
    completed_at: datetime | None


@dataclass(frozen=True, slots=True)
class PhoneRow:
    phone: str
    e164: str | None = None
    national: str | None = None
    country_code: str | None = None
    phone_type: str | None = None
    valid: bool | None = None


@dataclass(frozen=True, slots=True)
class SocialRow:
    platform: str
    url: str


@dataclass(frozen=True, slots=True)
class TeamMemberRow:
    position: int
    name: str | None
    title: str | None
    email: str | None
    linkedin: str | None


@dataclass(frozen=True, slots=True)
class SiteParts:
    site: SiteRow
    emails: tuple[str, ...]
    phones: tuple[PhoneRow, ...]
    addresses: tuple[str, ...]
    socials: tuple[SocialRow, ...]
    team: tuple[TeamMemberRow, ...]


MAX_HOST_CHARS = 253  # RFC 1035: the longest a DNS name can be


def domain_of(url: str | None) -> str | None:
    """The lower-case host without a leading 'www.'; scheme-less URLs are read as hosts."""
    if not url:
        return None
    candidate = url.strip()
    if "://" not in candidate:
        candidate = "//" + candidate
    try:
        host = urlsplit(candidate).hostname
    except ValueError:
        return None
    if not host:
        return None
    host = host.lower().rstrip(".")
    if host.startswith("www."):
        host = host[4:]
    if len(host) > MAX_HOST_CHARS:  # not a DNS name; and sites.domain is indexed
        return None
    return host or None


def items(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def listed(value: Any) -> list[Any] | None:
    """A list as is; a lone string as a list of one (the docs' "emails found" does not say
    array everywhere); anything else None."""
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value.strip():
        return [value]
    return None


def pick_list(data: Mapping[str, Any], nested: Mapping[str, Any], key: str) -> list[Any]:
    """The flat list if present, else the one nested under contact_info."""
    found = listed(data.get(key))
    if found is None:
        found = listed(nested.get(key))
    return found or []


def emails_of(raw: list[Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in raw:
        address = v.email(item)
        if address is not None:
            seen.setdefault(address, None)
    return tuple(seen)


def country_code(value: Any) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return v.stripped(value)


def phones_of(raw: list[Any], region: str | None = None) -> tuple[PhoneRow, ...]:
    """Phone rows, one per distinct raw text; ``region`` reads numbers written without ``+``."""
    found: dict[str, PhoneRow] = {}
    for item in raw:
        row: PhoneRow | None = None
        if isinstance(item, str):
            plain = item.strip()
            row = PhoneRow(phone=plain, e164=phones.e164(plain, region)) if plain else None
        elif isinstance(item, Mapping):
            text = v.first_text(item, "raw", "phone", "number", "e164", "international", "national")
            valid = v.boolean(item.get("valid"))
            given = v.stripped(item.get("e164"))
            if given is None and valid is not False:
                given = phones.e164(text, region)
            row = (
                None
                if text is None
                else PhoneRow(
                    phone=text,
                    e164=given,
                    national=v.stripped(item.get("national")),
                    country_code=country_code(item.get("country_code")),
                    phone_type=v.stripped(item.get("type")),
                    valid=valid,
                )
            )
        if row is not None and row.phone not in found and v.fits_key(row.phone):
            found[row.phone] = row
    return tuple(found.values())


def addresses_of(raw: list[Any]) -> tuple[str, ...]:
    seen: dict[str, None] = {}
    for item in raw:
        if isinstance(item, Mapping):
            item = item.get("full_address") or item.get("address")
        address = v.stripped(item)
        if address is not None and v.fits_key(address):
            seen.setdefault(address, None)
    return tuple(seen)


def socials_of(data: Mapping[str, Any], nested: Mapping[str, Any]) -> tuple[SocialRow, ...]:
    sources = (data, v.obj(nested.get("social_media")), v.obj(data.get("social_media")))
    rows = []
    for platform in SOCIAL_PLATFORMS:
        for source in sources:
            url = v.stripped(source.get(platform))
            if url is not None:
                rows.append(SocialRow(platform, url))
                break
    return tuple(rows)


def team_of(raw: list[Any]) -> tuple[TeamMemberRow, ...]:
    rows: list[TeamMemberRow] = []
    for item in raw:
        if not isinstance(item, Mapping):
            continue
        row = TeamMemberRow(
            position=len(rows) + 1,
            name=v.stripped(item.get("name")),
            title=v.stripped(item.get("title")),
            email=v.email(item.get("email")),
            linkedin=v.stripped(item.get("linkedin")),
        )
        if any((row.name, row.title, row.email, row.linkedin)):
            rows.append(row)
    return tuple(rows)


def site_parts(
    data: Mapping[str, Any], completed_at: datetime | None, region: str | None = None
) -> SiteParts:
    nested = v.obj(data.get("contact_info"))
    company_info = v.obj(data.get("company_info"))
    vitals = v.json_object(data.get("company_vitals"))
    if vitals is None:
        vitals = v.json_object(data.get("company_info"))
    hooks = v.json_object(data.get("personalization_hooks"))
    scoring = v.json_object(data.get("lead_scoring"))
    url = v.stripped(data.get("url"))
    company_name = v.stripped(v.obj(vitals).get("name")) or v.stripped(v.obj(hooks).get("company_name"))
    team_raw = data.get("team_members")
    if not isinstance(team_raw, list):
        team_raw = company_info.get("team_members")
        if not isinstance(team_raw, list):
            team_raw = nested.get("team_members")
    site = SiteRow(
        url=url,
        domain=domain_of(url),
        pages_crawled=v.integer(data.get("pages_crawled")),
        crawl_status=v.text(data.get("crawl_status")),
        markdown_compendium=v.text(data.get("markdown_compendium")),
        compendium=v.json_object(data.get("compendium")),
        company_vitals=vitals,
        company_name=company_name,
        industry=v.stripped(v.obj(vitals).get("industry")),
        pain_points=v.json_container(data.get("pain_points")),
        lead_scoring=scoring,
        icp_fit_score=v.number(v.obj(scoring).get("icp_fit_score")),
        personalization_hooks=hooks,
        metadata=v.json_object(data.get("metadata")),
        logo=v.json_object(data.get("logo")),
        custom_analysis=v.json_any(data.get("custom_analysis")),
        completed_at=completed_at,
    )
    return SiteParts(
        site=site,
        emails=emails_of(pick_list(data, nested, "emails")),
        phones=phones_of(pick_list(data, nested, "phones"), region),
        addresses=addresses_of(pick_list(data, nested, "addresses")),
        socials=socials_of(data, nested),
        team=team_of(items(team_raw)),
    )
