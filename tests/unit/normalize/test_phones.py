"""E.164 forms of raw phone text: what reads as one valid number, and everything that must not."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harvester import config
from harvester.errors import ConfigError
from harvester.normalize import document, normalize, phones

CASES: list[tuple[str, str | None, str | None]] = [
    # (raw text, default region, expected E.164)
    ("+1 617 253 1234", None, "+16172531234"),
    ("+1-617-253-1234", None, "+16172531234"),
    ("+1 (617) 253-1234", None, "+16172531234"),
    ("  +44 20 7946 0958  ", None, "+442079460958"),
    ("+49 30 901820", None, "+4930901820"),
    ("+352 26 12 34 56", None, "+35226123456"),
    ("+39 06 1234 5678", None, "+390612345678"),  # Italy keeps the leading zero
    ("tel:+16172531234", None, "+16172531234"),
    ("Tel: +1 617 253 1234", None, "+16172531234"),
    # an extension is not part of E.164: the line's own number
    ("+1 617 253 1234 ext. 55", None, "+16172531234"),
    ("+1 617 253 1234 x55", None, "+16172531234"),
    ("(617) 253-1234 x 7", "US", "+16172531234"),
    # national formats: only with a default region, and only that region's numbers
    ("(617) 253-1234", None, None),
    ("(617) 253-1234", "US", "+16172531234"),
    ("617.253.1234", "US", "+16172531234"),
    ("020 7946 0958", "GB", "+442079460958"),
    ("020 7946 0958", None, None),
    ("020 7946 0958", "US", None),
    ("(20) 555-1234", "US", None),  # no such US area code
    # international dialling prefixes as the region dials them
    ("0044 20 7946 0958", "GB", "+442079460958"),
    ("011 44 20 7946 0958", "US", "+442079460958"),
    ("0044 20 7946 0958", "US", None),
    # a + number ignores the region
    ("+44 20 7946 0958", "US", "+442079460958"),
    # plausible length, unassigned range: not valid, so nothing
    ("+1-555-123-4567", None, None),
    ("+1 200 555 1234", None, None),
    ("+44-20-555-1234", None, None),
    ("+33 1 555 1234", None, None),
    ("911", "US", None),
    ("+1 617", None, None),
    # letters are never turned into digits
    ("1-800-FLOWERS", "US", None),
    ("+1 (617) 253-1234 (main)", None, None),
    # two numbers in one text, garbage, empties
    ("617-253-1234 or 617-253-9999", "US", None),
    ("+1 617 253 1234 / +1 617 253 9999", None, None),
    ("n/a", "US", None),
    ("call us", None, None),
    ("+", None, None),
    ("", "US", None),
    ("   ", "US", None),
    ("+1 617 253 1234" + " 9" * 200, None, None),
    ("+" + "1" * 5000, None, None),
    ("+1 617\x00253 1234", None, None),  # the body cleaner removes NULs before this is reached
    ("+\u0661 617 253 1234", None, "+16172531234"),  # digits of other scripts are digits
]


@pytest.mark.parametrize(("raw", "region", "expected"), CASES)
def test_e164_of_raw_text(raw: str, region: str | None, expected: str | None) -> None:
    assert phones.e164(raw, region) == expected


def test_none_stays_none() -> None:
    assert phones.e164(None, "US") is None


def test_every_result_is_e164_shaped() -> None:
    for raw, region, _ in CASES:
        found = phones.e164(raw, region)
        assert found is None or (found[0] == "+" and found[1:].isdigit() and len(found) <= 16)


@pytest.mark.parametrize(
    ("given", "expected"),
    [("US", "US"), ("us", "US"), (" gb ", "GB"), ("XX", None), ("USA", None), ("", None)],
)
def test_region_codes(given: str, expected: str | None) -> None:
    assert phones.region_code(given) == expected


def test_default_region_config_key_and_env() -> None:
    assert config.load(environ={}).normalize.default_region == ""
    env = {"HARVESTER_NORMALIZE__DEFAULT_REGION": "de"}
    assert config.load(environ=env).normalize.default_region == "DE"


@pytest.mark.parametrize("bad", ["XX", "USA", "1", " "])
def test_unknown_default_region_is_an_error_naming_the_key(bad: str) -> None:
    with pytest.raises(ConfigError, match=r"^normalize\.default_region: .* not a known region code"):
        config.load(environ={"HARVESTER_NORMALIZE__DEFAULT_REGION": bad})


def site_body(phone_list: list[Any]) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "type": "spiderSite",
        "status": "completed",
        "data": {"url": "https://example.com", "phones": phone_list},
    }


def test_site_phone_strings_get_e164_and_keep_their_text() -> None:
    body = site_body(["(617) 253-1234", "+44 20 7946 0958", "ask for Bob", "+1-555-123-4567"])
    rows = {p.phone: p.e164 for p in normalize(body, "US").phones}
    assert rows == {
        "(617) 253-1234": "+16172531234",
        "+44 20 7946 0958": "+442079460958",
        "ask for Bob": None,
        "+1-555-123-4567": None,
    }
    assert {p.phone: p.e164 for p in normalize(body).phones}["(617) 253-1234"] is None


def test_site_phone_objects_keep_the_api_e164_and_its_verdict() -> None:
    body = site_body(
        [
            {"raw": "(617) 253-1234", "e164": "+16172530000"},  # the API's value wins
            {"raw": "(617) 253-9999", "e164": None, "valid": False},  # the API said invalid
            {"raw": "(617) 253-7777"},  # no verdict: read like a string
        ]
    )
    rows = {p.phone: p.e164 for p in normalize(body, "US").phones}
    assert rows == {
        "(617) 253-1234": "+16172530000",
        "(617) 253-9999": None,
        "(617) 253-7777": "+16172537777",
    }


def test_nul_in_a_stored_body_is_cleaned_before_reading() -> None:
    body = document(site_body(["+1 617\x00 253 1234"]))
    (row,) = normalize(body).phones
    assert (row.phone, row.e164) == ("+1 617 253 1234", "+16172531234")


def maps_body(business: dict[str, Any]) -> dict[str, Any]:
    return {
        "job_id": str(uuid.uuid4()),
        "type": "spiderMaps",
        "status": "completed",
        "data": {"query": "q", "businesses": [{"place_id": "p1", "name": "n", **business}]},
    }


@pytest.mark.parametrize(
    ("business", "region", "expected"),
    [
        ({"phone": "+1-617-253-1234"}, None, "+16172531234"),
        ({"phone": "(617) 253-1234"}, None, None),
        ({"phone": "(617) 253-1234"}, "US", "+16172531234"),
        ({"phone": "(617) 253-1234", "phone_e164": "+16170000000"}, "US", "+16170000000"),
        ({"phone": "(617) 253-1234", "phone_e164": None, "phone_valid": False}, "US", None),
        ({"business_phone": "+44 20 7946 0958"}, None, "+442079460958"),
        ({"phone": "closed"}, "US", None),
        ({}, "US", None),
    ],
)
def test_maps_business_phone(business: dict[str, Any], region: str | None, expected: str | None) -> None:
    (row,) = normalize(maps_body(business), region).businesses
    assert row.phone_e164 == expected
    assert row.phone == (business.get("phone") or business.get("business_phone"))


@settings(deadline=None)  # the library loads a region's metadata on first use
@given(st.text(max_size=80), st.sampled_from([None, "US", "GB", "DE"]))
def test_any_text_gives_none_or_an_e164_number(raw: str, region: str | None) -> None:
    found = phones.e164(raw, region)
    assert found is None or re.fullmatch(r"\+[1-9]\d{6,14}", found)


@settings(deadline=None)
@given(st.from_regex(r"\+?[0-9 ()./-]{0,30}", fullmatch=True), st.sampled_from([None, "US"]))
def test_phone_like_text_never_raises_and_reads_the_same_twice(raw: str, region: str | None) -> None:
    first = phones.e164(raw, region)
    assert first == phones.e164(raw, region)
    if first is not None:  # an E.164 form reads as itself
        assert phones.e164(first) == first
