"""spiderMaps result data → the ``maps_searches`` row, ``businesses`` and their positions.

A business is keyed by ``place_id`` (also read as ``business_place_id`` or ``google_place_id``); one
without any id gets a stable fallback key from its name, address and link. The other ``business_*``
names of the campaign shape are read as fallbacks too. Coordinates come as ``{latitude,
longitude}``, ``{lat, lng}`` or flat on the business and may be missing; ``working_hours`` is a
dict, a string or a list of lines. Duplicates in one search collapse onto their first position.
A raw ``phone`` without the API's ``phone_e164`` gets one when it reads as a valid number
(``phones.e164``, with the default region the caller passes in), unless the API's own validation
said ``phone_valid: false``. Pure, no I/O.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from harvester.normalize import phones
from harvester.normalize import values as v


@dataclass(frozen=True, slots=True)
class MapsSearchRow:
    query: str | None
    results_count: int | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class BusinessRow:
    place_id: str
    name: str | None
    rating: float | None
    reviews_count: int | None
    address: str | None
    phone: str | None
    phone_e164: str | None
    website: str | None
    categories: tuple[str, ...]
    latitude: float | None
    longitude: float | None
    link: str | None
    business_status: str | None
    price_range: str | None
    working_hours: dict[str, Any] | list[Any] | str | None
    image_url: str | None


@dataclass(frozen=True, slots=True)
class Placement:
    position: int
    place_id: str


@dataclass(frozen=True, slots=True)
class MapsParts:
    search: MapsSearchRow
    businesses: tuple[BusinessRow, ...]
    placements: tuple[Placement, ...]


def squash(value: str | None) -> str:
    return " ".join((value or "").split()).casefold()


def fallback_place_id(name: str | None, address: str | None, link: str | None) -> str | None:
    """A key that is the same whenever the same business comes back without a place_id."""
    if not (name or address or link):
        return None
    key = "|".join((squash(name), squash(address), (link or "").strip()))
    return "fallback:" + hashlib.sha1(key.encode("utf-8"), usedforsecurity=False).hexdigest()


def lat_lon(source: Mapping[str, Any]) -> tuple[float | None, float | None]:
    lat = v.number(source.get("latitude", source.get("lat")))
    lon = v.number(source.get("longitude", source.get("lng", source.get("lon"))))
    if lat is not None and not -90.0 <= lat <= 90.0:
        lat = None
    if lon is not None and not -180.0 <= lon <= 180.0:
        lon = None
    return lat, lon


def coordinates(item: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """The first usable pair: nested under one of the documented names, else flat on the item."""
    for source in (*(v.obj(item.get(key)) for key in ("coordinates", "gmaps_coordinates", "location")), item):
        lat, lon = lat_lon(source)
        if lat is not None or lon is not None:
            return lat, lon
    return None, None


def categories(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        value = [value]
    seen: dict[str, None] = {}
    for item in value if isinstance(value, list) else []:
        name = v.stripped(item)
        if name is not None and v.fits_key(name):  # a GIN index entry has the btree's size limit
            seen.setdefault(name, None)
    return tuple(seen)


def working_hours(value: Any) -> dict[str, Any] | list[Any] | str | None:
    """Kept as given for the jsonb column: a per-day dict, a summary string or a list of lines."""
    if isinstance(value, Mapping):
        return dict(value)
    if isinstance(value, list):
        return list(value) or None
    return v.stripped(value)


def first_present(item: Mapping[str, Any], *keys: str) -> Any:
    """The value of the first key that is present and not null (documented name first)."""
    for key in keys:
        if item.get(key) is not None:
            return item[key]
    return None


def business_phone(item: Mapping[str, Any], region: str | None) -> tuple[str | None, str | None]:
    """(raw phone, E.164): the API's E.164 when it gave one, else the raw text's when valid."""
    raw = v.first_text(item, "phone", "business_phone")
    given = v.first_text(item, "phone_e164", "gmaps_phone_e164")
    if given is None and v.boolean(item.get("phone_valid")) is not False:
        given = phones.e164(raw, region)
    return raw, given


def business(item: Mapping[str, Any], region: str | None = None) -> BusinessRow | None:
    name = v.stripped(item.get("name")) or v.stripped(item.get("business_name"))
    address = v.stripped(item.get("address")) or v.stripped(item.get("business_address"))
    link = v.stripped(item.get("link"))
    place_id = v.first_text(item, "place_id", "business_place_id", "google_place_id")
    if place_id is None:
        place_id = fallback_place_id(name, address, link)
    if place_id is None:
        return None
    if not v.fits_key(place_id):  # garbage, but still one business: a stable short key for it
        place_id = "digest:" + hashlib.sha1(place_id.encode("utf-8"), usedforsecurity=False).hexdigest()
    lat, lon = coordinates(item)
    phone, phone_e164 = business_phone(item, region)
    return BusinessRow(
        place_id=place_id,
        name=name,
        rating=v.number(first_present(item, "rating", "business_rating")),
        reviews_count=v.integer(first_present(item, "reviews_count", "business_reviews_count")),
        address=address,
        phone=phone,
        phone_e164=phone_e164,
        website=v.first_text(item, "website", "original_website"),
        categories=categories(first_present(item, "categories", "business_categories", "category")),
        latitude=lat,
        longitude=lon,
        link=link,
        business_status=v.stripped(item.get("business_status")),
        price_range=v.stripped(item.get("price_range")),
        working_hours=working_hours(item.get("working_hours")),
        image_url=v.stripped(item.get("image_url")),
    )


def maps_parts(data: Mapping[str, Any], region: str | None = None) -> MapsParts:
    search = MapsSearchRow(
        query=v.text(data.get("query")),
        results_count=v.integer(data.get("results_count")),
        metadata=v.json_object(data.get("metadata")),
    )
    found: dict[str, BusinessRow] = {}
    placements: list[Placement] = []
    raw = data.get("businesses")
    for index, item in enumerate(raw if isinstance(raw, list) else []):
        if not isinstance(item, Mapping):
            continue
        row = business(item, region)
        if row is None or row.place_id in found:
            continue
        found[row.place_id] = row
        placements.append(Placement(index + 1, row.place_id))
    return MapsParts(search=search, businesses=tuple(found.values()), placements=tuple(placements))
