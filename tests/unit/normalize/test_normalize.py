"""normalize: result bodies → typed rows, for the seed examples and every documented variant."""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from harvester.errors import BodyError
from harvester.normalize import Normalized, PhoneRow, SocialRow, normalize, parse_body
from harvester.normalize.maps import fallback_place_id
from harvester.normalize.site import domain_of
from tests.support.paths import SEED

JOB = "550e8400-e29b-41d4-a716-446655440000"


def seed(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((SEED / name).read_bytes())
    return loaded


def site(**data: Any) -> Normalized:
    return normalize({"job_id": JOB, "type": "spiderSite", "status": "completed", "data": data})


def maps(*businesses: Any, **data: Any) -> Normalized:
    return normalize(
        {
            "job_id": JOB,
            "type": "spiderMaps",
            "status": "completed",
            "data": {"businesses": list(businesses), **data},
        }
    )


# ---------------------------------------------------------------- the seed examples


def test_minimal_seed_yields_two_emails_one_phone_one_address_four_socials() -> None:
    n = normalize(seed("site-minimal-200.json"))
    assert n.emails == ("contact@example.com", "sales@example.com")
    assert n.phones == (PhoneRow("+1-555-123-4567"),)
    assert n.addresses == ("123 Main St, San Francisco, CA 94105",)
    assert [s.platform for s in n.socials] == ["linkedin", "twitter", "facebook", "github"]
    assert n.site is not None and n.site.domain == "example.com" and n.team == ()


def test_champ_seed_fills_lead_fields() -> None:
    n = normalize(seed("site-champ-200.json"))
    assert n.site is not None
    assert (n.site.company_name, n.site.industry, n.site.icp_fit_score) == (
        "TechStart Solutions",
        "B2B SaaS",
        0.85,
    )
    assert [t.name for t in n.team] == ["Sarah Johnson", "Mike Chen"]
    assert n.team[0].position == 1 and n.team[0].email == "sarah@techstart.com"


def test_maps_seed_yields_one_business_with_coordinates() -> None:
    n = normalize(seed("maps-200.json"))
    assert n.search is not None and n.search.query == "italian restaurants in Boston"
    (b,) = n.businesses
    assert (b.place_id, b.latitude, b.longitude, b.rating, b.reviews_count) == (
        "0x89e3709876543210:0xabcdef1234567890",
        42.3647,
        -71.0542,
        4.6,
        823,
    )
    assert b.categories == ("Italian restaurant", "Fine dining")
    assert isinstance(b.working_hours, dict)
    assert [(p.position, p.place_id) for p in n.placements] == [(1, b.place_id)]


def test_failed_seed_has_only_the_results_row() -> None:
    n = normalize(seed("failed-410.json"))
    assert n.result.error_message.startswith("Failed to connect")  # type: ignore[union-attr]
    assert (n.result.success, n.site, n.search) == (False, None, None)


def test_results_row_is_typed() -> None:
    r = normalize(seed("site-minimal-200.json")).result
    assert r.job_id == UUID(JOB)
    assert (r.job_type, r.status, r.success, r.processing_time_seconds, r.worker_id) == (
        "spiderSite",
        "completed",
        True,
        12.4,
        "spider-site-main-1",
    )
    assert r.completed_at == datetime(2025, 10, 27, 14, 30, 15, tzinfo=UTC)
    assert r.raw["data"]["url"] == "https://example.com"


# ---------------------------------------------------------------- documented variants


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2025-10-27T10:00:00Z", datetime(2025, 10, 27, 10, tzinfo=UTC)),
        ("2025-10-27T12:00:00+02:00", datetime(2025, 10, 27, 10, tzinfo=UTC)),
        ("2026-01-18T12:31:37.073080", datetime(2026, 1, 18, 12, 31, 37, 73080, tzinfo=UTC)),
        ("2025-10-27", datetime(2025, 10, 27, tzinfo=UTC)),
        ("yesterday", None),
        ("", None),
        (1730000000, None),
        (None, None),
    ],
)
def test_completed_at_forms(value: Any, expected: datetime | None) -> None:
    n = normalize({"job_id": JOB, "completed_at": value})
    assert n.result.completed_at == expected


def test_phones_as_strings_and_objects_dedupe_by_text() -> None:
    n = site(
        phones=[
            " +1-555-0100 ",
            {
                "raw": "+1 555 0101",
                "e164": "+15550101",
                "national": "(555) 0101",
                "international": "+1 555-0101",
                "country_code": "US",
                "type": "MOBILE",
                "valid": True,
            },
            {"e164": "+15550102", "country_code": 1, "valid": "yes"},
            "+1-555-0100",
            {"raw": None},
            42,
            "",
        ]
    )
    assert n.phones == (
        PhoneRow("+1-555-0100"),
        PhoneRow("+1 555 0101", "+15550101", "(555) 0101", "US", "MOBILE", True),
        PhoneRow("+15550102", "+15550102", None, "1", None, None),
    )


@pytest.mark.parametrize(
    "pain_points",
    [
        ["slow support", "high churn"],
        {"inferred_challenges": ["slow support"], "recent_mentions": []},
    ],
)
def test_pain_points_list_or_object_kept_as_json(pain_points: Any) -> None:
    n = site(pain_points=pain_points)
    assert n.site is not None and n.site.pain_points == pain_points


def test_pain_points_of_another_type_is_none() -> None:
    n = site(pain_points="slow")
    assert n.site is not None and n.site.pain_points is None


@pytest.mark.parametrize("hours", [{"Monday": "9-5"}, "Open 24 hours", ["Monday: 9-5", "Tuesday: Closed"]])
def test_working_hours_dict_or_string(hours: Any) -> None:
    (b,) = maps({"place_id": "p1", "working_hours": hours}).businesses
    assert b.working_hours == hours


@pytest.mark.parametrize(
    ("coords", "expected"),
    [
        ({"coordinates": {"latitude": 1.5, "longitude": 2.5}}, (1.5, 2.5)),
        ({"coordinates": {"lat": 1.5, "lng": 2.5}}, (1.5, 2.5)),
        ({"gmaps_coordinates": {"lat": 1.5, "lng": 2.5}}, (1.5, 2.5)),
        ({}, (None, None)),
        ({"coordinates": None}, (None, None)),
        ({"coordinates": {"latitude": "north", "longitude": 200}}, (None, None)),
        ({"coordinates": {"latitude": " 1.5", "longitude": "-71.0542"}}, (1.5, -71.0542)),
        ({"location": {"lat": 1.5, "lon": 2.5}}, (1.5, 2.5)),
        ({"latitude": 1.5, "longitude": 2.5}, (1.5, 2.5)),
        ({"lat": 1.5, "lng": 2.5, "coordinates": {}}, (1.5, 2.5)),
        ({"coordinates": {"latitude": 3.0, "longitude": 4.0}, "latitude": 1.5}, (3.0, 4.0)),
    ],
)
def test_coordinates_forms_and_missing(
    coords: dict[str, Any], expected: tuple[float | None, float | None]
) -> None:
    (b,) = maps({"place_id": "p1", **coords}).businesses
    assert (b.latitude, b.longitude) == expected


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("processing_time_seconds", "12.4", 12.4),
        ("processing_time_seconds", "12", 12.0),
        ("processing_time_seconds", "nan", None),
        ("processing_time_seconds", "1_2", None),
        ("success", "true", True),
        ("success", " False ", False),
        ("success", "yes", None),
    ],
)
def test_numbers_and_booleans_written_as_strings(field: str, value: Any, expected: Any) -> None:
    n = normalize({"job_id": JOB, field: value})
    assert getattr(n.result, field) == expected


def test_maps_numbers_written_as_strings() -> None:
    n = maps({"place_id": "p1", "rating": "4.6", "reviews_count": "823"}, results_count="20")
    assert n.search is not None and n.search.results_count == 20
    (b,) = n.businesses
    assert (b.rating, b.reviews_count) == (4.6, 823)


def test_site_numbers_written_as_strings() -> None:
    n = site(pages_crawled="12", lead_scoring={"icp_fit_score": "0.85"})
    assert n.site is not None and (n.site.pages_crawled, n.site.icp_fit_score) == (12, 0.85)


def test_phone_valid_written_as_a_string() -> None:
    (phone,) = site(phones=[{"raw": "+1 555 0101", "valid": "false"}]).phones
    assert phone.valid is False


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("type", "spiderSite"),
        ("job_type", "spiderSite"),
        ("type", "SPIDERSITE"),
        ("type", "spider_site"),
        ("type", " spider-site "),
    ],
)
def test_job_type_name_and_spelling_variants(key: str, value: str) -> None:
    n = normalize({"job_id": JOB, key: value, "data": {"url": "https://x.com", "emails": ["a@x.com"]}})
    assert n.site is not None and n.emails == ("a@x.com",)


@pytest.mark.parametrize(
    ("data", "job_type"),
    [
        ({"query": "q", "businesses": [{"place_id": "p1"}]}, "spiderMaps"),
        ({"url": "https://x.com", "crawl_status": "success", "emails": ["a@x.com"]}, "spiderSite"),
        ({"contact_info": {"emails": ["a@x.com"]}}, "spiderSite"),
    ],
)
def test_missing_type_is_inferred_from_the_data(data: dict[str, Any], job_type: str) -> None:
    n = normalize({"job_id": JOB, "status": "completed", "data": data})
    assert n.result.job_type == job_type
    assert (n.site is not None) == (job_type == "spiderSite")
    assert (n.search is not None) == (job_type == "spiderMaps")


def test_a_named_type_is_never_overridden_by_the_data() -> None:
    n = normalize({"job_id": JOB, "type": "spiderVerify", "data": {"businesses": [], "crawl_status": "x"}})
    assert (n.result.job_type, n.site, n.search) == ("spiderVerify", None, None)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"error_message": "boom"}, "boom"),
        ({"error_message": None, "error": "Connection timeout"}, "Connection timeout"),
        ({"error": {"message": "nested", "code": 7}}, "nested"),
        ({"detail": "Job failed"}, "Job failed"),
        ({"error_message": "first", "error": "second", "detail": "third"}, "first"),
        ({"error": 5}, None),
    ],
)
def test_error_message_under_its_documented_and_example_names(
    fields: dict[str, Any], expected: str | None
) -> None:
    n = normalize({"job_id": JOB, "status": "failed", **fields})
    assert n.result.error_message == expected


@pytest.mark.parametrize("key", ["emails", "phones", "addresses"])
def test_a_lone_string_where_a_list_is_documented_is_one_item(key: str) -> None:
    value = {"emails": "Info@X.com", "phones": "+1 555 0100", "addresses": "1 Main St"}[key]
    n = site(**{key: value})
    assert (n.emails, [p.phone for p in n.phones], n.addresses) == (
        ("info@x.com",) if key == "emails" else (),
        ["+1 555 0100"] if key == "phones" else [],
        ("1 Main St",) if key == "addresses" else (),
    )


def test_campaign_business_names_are_read_as_fallbacks() -> None:
    (b,) = maps(
        {
            "business_name": "Cafe",
            "google_place_id": "g1",
            "business_address": "1 St",
            "business_phone": "+1 555",
            "gmaps_phone_e164": "+1555",
            "business_rating": 4.2,
            "business_reviews_count": 10,
            "business_categories": ["Cafe"],
            "original_website": "https://cafe.example",
            "gmaps_coordinates": {"lat": 1.0, "lng": 2.0},
        }
    ).businesses
    assert (
        b.place_id,
        b.name,
        b.address,
        b.phone,
        b.phone_e164,
        b.rating,
        b.reviews_count,
        b.categories,
        b.website,
        b.latitude,
        b.longitude,
    ) == ("g1", "Cafe", "1 St", "+1 555", "+1555", 4.2, 10, ("Cafe",), "https://cafe.example", 1.0, 2.0)


def test_status_running_is_kept_as_given() -> None:
    n = normalize({"job_id": JOB, "type": "spiderSite", "status": "running", "data": None})
    assert (n.result.status, n.site) == ("running", None)


def test_nested_contact_info_maps_to_the_same_rows_as_flat() -> None:
    flat = normalize(seed("site-minimal-200.json"))
    body = seed("site-minimal-200.json")
    data = body["data"]
    socials = {p: data.pop(p) for p in [s.platform for s in flat.socials]}
    body["data"] = {
        "url": data["url"],
        "contact_info": {
            "emails": data.pop("emails"),
            "phones": data.pop("phones"),
            "addresses": data.pop("addresses"),
            "social_media": socials,
        },
        "company_info": {
            "name": "Example Co",
            "industry": "Widgets",
            "team_members": [{"name": "Ann", "title": "CEO"}],
        },
        **{k: v for k, v in data.items() if k not in ("url", "team_members", "company_vitals")},
    }
    nested = normalize(body)
    assert (nested.emails, nested.phones, nested.addresses, nested.socials) == (
        flat.emails,
        flat.phones,
        flat.addresses,
        flat.socials,
    )
    assert nested.site is not None and nested.site.company_name == "Example Co"
    assert [t.name for t in nested.team] == ["Ann"]


@pytest.mark.parametrize("job_type", [None, "spiderVerify", "spiderCompanyData", 7])
def test_unknown_job_types_yield_only_the_results_row(job_type: Any) -> None:
    n = normalize({"job_id": JOB, "type": job_type, "data": {"url": "https://x.com", "emails": ["a@x.com"]}})
    assert n == Normalized(result=n.result)
    assert n.result.raw["data"]["emails"] == ["a@x.com"]


def test_nul_characters_are_removed_everywhere() -> None:
    raw = json.dumps(
        {
            "job_id": JOB,
            "type": "spiderSite",
            "data": {
                "url\u0000": "x",
                "markdown_compendium": "a\u0000b",
                "emails": ["in\u0000fo@x.com"],
                "url": "https://x\u0000.com",
            },
        }
    )
    body = parse_body(raw.encode())
    n = normalize(body)
    assert "url" in body["data"] and n.site is not None
    assert (n.site.markdown_compendium, n.site.url, n.emails) == ("ab", "https://x.com", ("info@x.com",))


def test_lone_surrogates_are_replaced() -> None:
    body = parse_body(b'{"job_id": "' + JOB.encode() + b'", "message": "a\\ud800b\\ud83d\\ude00"}')
    assert body["message"] == "a\ufffdb\U0001f600"


def test_bom_is_tolerated() -> None:
    assert parse_body(b"\xef\xbb\xbf" + json.dumps({"job_id": JOB}).encode())["job_id"] == JOB


def test_nan_and_infinity_become_null() -> None:
    body = parse_body(b'{"job_id": "' + JOB.encode() + b'", "a": NaN, "b": -Infinity, "c": 1e999}')
    assert (body["a"], body["b"], body["c"]) == (None, None, None)


def test_emails_are_trimmed_lowercased_deduped_in_order() -> None:
    n = site(
        emails=[
            " Sales@Example.COM ",
            "info@example.com",
            "sales@example.com",
            "mailto:Boss@Example.com?subject=hi",
            "not-an-email",
            "",
            None,
            5,
            {"email": "obj@example.com"},
        ]
    )
    assert n.emails == ("sales@example.com", "info@example.com", "boss@example.com", "obj@example.com")


def test_team_member_email_is_normalized_and_junk_members_skipped() -> None:
    n = site(
        team_members=[
            {"name": "Ann", "email": " ANN@X.COM "},
            "Bob",
            {"name": None},
            None,
            {"title": "CTO", "email": "n/a"},
        ]
    )
    assert [(t.position, t.name, t.title, t.email) for t in n.team] == [
        (1, "Ann", None, "ann@x.com"),
        (2, None, "CTO", None),
    ]


def test_business_without_place_id_gets_a_stable_fallback() -> None:
    item = {"name": "Cafe  Uno", "address": "1 Main St", "link": "https://maps/x"}
    first = maps(item).businesses[0].place_id
    again = maps({**item, "name": "cafe uno"}).businesses[0].place_id
    assert first == again == fallback_place_id("Cafe Uno", "1 Main St", "https://maps/x")
    assert first.startswith("fallback:")
    assert maps({"rating": 4.0}).businesses == ()


def test_duplicate_place_ids_collapse_onto_the_first_position() -> None:
    n = maps({"place_id": "a", "name": "A1"}, "junk", {"place_id": "b"}, {"place_id": "a", "name": "A2"})
    assert [(b.place_id, b.name) for b in n.businesses] == [("a", "A1"), ("b", None)]
    assert [(p.position, p.place_id) for p in n.placements] == [(1, "a"), (3, "b")]


def test_socials_keep_only_non_empty_strings_of_the_fourteen_platforms() -> None:
    n = site(
        linkedin="https://li/x",
        twitter="",
        facebook=None,
        github=["x"],
        myspace="m",
        telegram=" https://t.me/x ",
    )
    assert n.socials == (SocialRow("linkedin", "https://li/x"), SocialRow("telegram", "https://t.me/x"))


@pytest.mark.parametrize(
    ("url", "domain"),
    [
        ("https://www.Example.com/about", "example.com"),
        ("example.org", "example.org"),
        ("http://shop.example.net:8080", "shop.example.net"),
        ("", None),
        ("http://[::1", None),
    ],
)
def test_domain_from_url(url: str, domain: str | None) -> None:
    assert domain_of(url) == domain


def test_one_megabyte_compendium_is_kept_whole() -> None:
    text = "x" * (1 << 20)
    n = site(markdown_compendium=text)
    assert n.site is not None and n.site.markdown_compendium == text


WRONG = [None, True, 1, 1.5, "s", [], [1, "a"], {}, {"k": "v"}, 2**40]


@pytest.mark.parametrize("value", WRONG, ids=repr)
def test_wrong_types_in_every_site_field_never_raise(value: Any) -> None:
    fields = [
        "url",
        "pages_crawled",
        "crawl_status",
        "emails",
        "phones",
        "addresses",
        "markdown_compendium",
        "compendium",
        "company_vitals",
        "pain_points",
        "lead_scoring",
        "team_members",
        "personalization_hooks",
        "metadata",
        "logo",
        "contact_info",
        "company_info",
        "linkedin",
    ]
    n = site(**dict.fromkeys(fields, value))
    assert n.site is not None
    assert n.site.pages_crawled in (None, 1)


@pytest.mark.parametrize("value", WRONG, ids=repr)
def test_wrong_types_in_every_maps_field_never_raise(value: Any) -> None:
    keys = [
        "place_id",
        "name",
        "rating",
        "reviews_count",
        "address",
        "phone",
        "website",
        "categories",
        "coordinates",
        "link",
        "business_status",
        "working_hours",
    ]
    n = maps(dict.fromkeys(keys, value), query=value, results_count=value, metadata=value)
    assert n.search is not None
    for b in n.businesses:
        assert b.reviews_count in (None, 1)


@pytest.mark.parametrize("data", [None, "text", [1, 2], 5])
def test_data_that_is_not_an_object_yields_no_child_rows(data: Any) -> None:
    n = normalize({"job_id": JOB, "type": "spiderSite", "data": data})
    assert n == Normalized(result=n.result)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"\xff\xfe{}", "not UTF-8"),
        (b"<html>", "not JSON"),
        (b"", "not JSON"),
        (b"[1, 2]", "not an object"),
        (b'"job"', "not an object"),
        (b"{}", "no job_id"),
        (b'{"job_id": null}', "no job_id"),
        (b'{"job_id": 5}', "not a string"),
        (b'{"job_id": "abc"}', "not a UUID"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"job_id": "' + JOB.encode() + b'", "d": ' + b"[" * 300 + b"]" * 300 + b"}", "deeper"),
    ],
)
def test_unusable_bodies_raise_body_error(raw: bytes, reason: str) -> None:
    with pytest.raises(BodyError, match=reason):
        normalize(parse_body(raw))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
KEYS = [
    "url",
    "emails",
    "phones",
    "addresses",
    "team_members",
    "contact_info",
    "company_info",
    "pain_points",
    "lead_scoring",
    "company_vitals",
    "businesses",
    "query",
    "linkedin",
    "coordinates",
    "place_id",
    "name",
    "categories",
    "working_hours",
    "pages_crawled",
]
data_values = st.dictionaries(st.sampled_from(KEYS), json_values, max_size=8)


@settings(max_examples=150, deadline=None)
@given(
    job_id=st.one_of(st.just(JOB), json_values),
    job_type=st.sampled_from(["spiderSite", "spiderMaps", "other", None, 3]),
    data=st.one_of(data_values, json_values),
    extra=st.dictionaries(
        st.sampled_from(["status", "success", "completed_at", "processing_time_seconds", "worker_id"]),
        json_values,
    ),
)
def test_normalize_raises_nothing_but_body_error(
    job_id: Any, job_type: Any, data: Any, extra: dict[str, Any]
) -> None:
    body = {"job_id": job_id, "type": job_type, "data": data, **extra}
    try:
        normalize(parse_body(json.dumps(body).encode()))
    except BodyError:
        assert job_id != JOB


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_parse_body_raises_nothing_but_body_error_on_bytes(raw: bytes) -> None:
    with contextlib.suppress(BodyError):
        parse_body(raw)
